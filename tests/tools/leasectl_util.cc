#include "tests/tools/leasectl_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <sys/stat.h>

#include "base/unique_fd.h"

namespace leasefs::testing {

namespace {

[[noreturn]] void Throw(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

std::string LeasectlBin() { return ToolPath("LEASECTL_BIN", "build/tools/leasectl"); }

ProcessResult Leasectl(std::vector<std::string> args) {
  args.insert(args.begin(), LeasectlBin());
  return Run(args);
}

std::string Blocks(const std::string& letters) {
  std::string s;
  for (char c : letters) s.append(kBlock, c == '0' ? '\0' : c);
  return s;
}

void WriteAt(const std::string& path, uint64_t offset, const std::string& data) {
  const UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) Throw("open", path);
  if (pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(offset)) !=
      static_cast<ssize_t>(data.size()))
    Throw("pwrite", path);
}

std::string ReadAll(const std::string& path) {
  const UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) Throw("open", path);
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0) Throw("read", path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

uint64_t SizeOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) Throw("stat", path);
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace leasefs::testing
