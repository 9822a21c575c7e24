#include "engine/check/util.h"

#include <cstdio>

#include <sys/stat.h>

namespace leasefs::check::internal {

uint8_t TypeOfMode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return DT_REG;
    case S_IFDIR:
      return DT_DIR;
    case S_IFLNK:
      return DT_LNK;
    case S_IFCHR:
      return DT_CHR;
    case S_IFBLK:
      return DT_BLK;
    case S_IFIFO:
      return DT_FIFO;
    case S_IFSOCK:
      return DT_SOCK;
    default:
      return 0;
  }
}

const char* TypeName(uint8_t d_type) {
  switch (d_type) {
    case DT_REG:
      return "regular file";
    case DT_DIR:
      return "directory";
    case DT_LNK:
      return "symlink";
    case DT_CHR:
      return "character device";
    case DT_BLK:
      return "block device";
    case DT_FIFO:
      return "FIFO";
    case DT_SOCK:
      return "socket";
    default:
      return "unknown type";
  }
}

std::string InodeWhere(uint64_t ino) { return "inode " + std::to_string(ino); }

std::string Octal(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0%llo", static_cast<unsigned long long>(v));
  return buf;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string Quote(std::string_view name) {
  std::string out = "'";
  for (unsigned char c : name) {
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out + "'";
}

std::string Plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace leasefs::check::internal
