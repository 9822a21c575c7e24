#include "tests/engine/test_pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "engine/layout.h"

namespace leasefs::engine::testing {

std::unique_ptr<SimMedia> FormattedPool(size_t bytes, const FormatOptions& opts) {
  auto m = SimMedia::Create(bytes);
  Status s = Format(*m, opts);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  return m;
}

std::unique_ptr<Filesystem> MustMount(std::unique_ptr<SimMedia> media, SimMedia** raw,
                                      MountReport* report) {
  if (raw) *raw = media.get();
  auto fs = Filesystem::Mount(std::move(media), MountOptions{}, report);
  REQUIRE_MESSAGE(fs.ok(), fs.status().ToString());
  return std::move(fs).value();
}

std::unique_ptr<Filesystem> MountImage(const std::vector<char>& image, SimMedia** raw) {
  return MustMount(SimMedia::FromImage(image), raw);
}

void MustWrite(Filesystem& fs, Ino ino, uint64_t off, const std::string& data) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  auto w = fs.Write(kRoot, ino, off, &iov, 1);
  REQUIRE_MESSAGE(w.ok(), w.status().ToString());
  REQUIRE(*w == data.size());
}

std::string ReadAll(Filesystem& fs, Ino ino, uint64_t off, size_t len) {
  std::string out;
  Status s = fs.Read(ino, off, len, [&](const iovec* v, int n) {
    for (int i = 0; i < n; ++i) out.append(static_cast<const char*>(v[i].iov_base), v[i].iov_len);
  });
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  return out;
}

void PutOldXattrBlock(std::vector<char>& img, Ino ino,
                    const std::vector<std::pair<std::string, std::string>>& attrs) {
  layout::Superblock sb;
  std::memcpy(&sb, img.data(), sizeof(sb));
  auto* rc = reinterpret_cast<uint32_t*>(img.data() + sb.refcount_start * layout::kBlockSize);
  uint64_t block = 0;
  for (uint64_t i = sb.data_blocks; i-- > 0;)
    if (rc[i] == 0) {
      block = sb.data_start + i;
      rc[i] = 1;
      break;
    }
  REQUIRE(block != 0);
  char* b = img.data() + block * layout::kBlockSize;
  std::memset(b, 0, layout::kBlockSize);
  layout::XattrBlockHeader h{};
  std::memcpy(h.magic, layout::kXattrBlockMagic, 8);
  h.owner_ino = ino;
  h.entry_count = static_cast<uint32_t>(attrs.size());
  uint32_t off = sizeof(h);
  for (const auto& [n, v] : attrs) {
    const layout::XattrEntryHeader e{static_cast<uint8_t>(n.size()), 0, static_cast<uint16_t>(v.size())};
    std::memcpy(b + off, &e, sizeof(e));
    std::memcpy(b + off + sizeof(e), n.data(), n.size());
    std::memcpy(b + off + sizeof(e) + n.size(), v.data(), v.size());
    off += (sizeof(e) + n.size() + v.size() + 3) & ~3u;
  }
  h.used_bytes = off - static_cast<uint32_t>(sizeof(h));
  REQUIRE(h.used_bytes <= layout::kXattrSpace);
  std::memcpy(b, &h, sizeof(h));
  auto* in = reinterpret_cast<layout::Inode*>(img.data() + sb.inode_start * layout::kBlockSize) + ino;
  in->xattr_block = block;
}

Ino MustCreate(Filesystem& fs, Ino parent, const std::string& name, mode_t mode) {
  auto e = fs.Create(kRoot, parent, name, mode, O_RDWR);
  REQUIRE_MESSAGE(e.ok(), name << ": " << e.status().ToString());
  return e->attr.st_ino;
}

Ino MustMkdir(Filesystem& fs, Ino parent, const std::string& name, mode_t mode) {
  auto e = fs.Mkdir(kRoot, parent, name, mode);
  REQUIRE_MESSAGE(e.ok(), name << ": " << e.status().ToString());
  return e->attr.st_ino;
}

Ino MustLookup(Filesystem& fs, Ino parent, const std::string& name) {
  auto e = fs.Lookup(kRoot, parent, name);
  REQUIRE_MESSAGE(e.ok(), name << ": " << e.status().ToString());
  return e->attr.st_ino;
}

std::string Observe(Filesystem& fs) {
  std::string out;
  std::function<void(Ino, const std::string&)> walk = [&](Ino dir, const std::string& path) {
    std::vector<std::pair<std::string, Ino>> kids;
    Status s = fs.ReadDir(dir, 0, false, [&](const DirEntry& e) {
      if (e.name != "." && e.name != "..") kids.emplace_back(std::string(e.name), e.ino);
      return true;
    });
    REQUIRE(s.ok());
    std::sort(kids.begin(), kids.end());
    for (const auto& [name, ino] : kids) {
      auto e = fs.GetAttr(ino);
      REQUIRE(e.ok());
      const struct stat& st = e->attr;
      char line[256];
      std::snprintf(line, sizeof line, "%s ino=%lu mode=%o uid=%u gid=%u nlink=%lu size=%ld",
                    (path + "/" + name).c_str(), static_cast<unsigned long>(ino), st.st_mode,
                    st.st_uid, st.st_gid, static_cast<unsigned long>(st.st_nlink),
                    static_cast<long>(st.st_size));
      out += line;
      if (e->attr_flags != 0) out += " attr_flags=" + std::to_string(e->attr_flags);
      if (S_ISREG(st.st_mode)) {
        const std::string data = ReadAll(fs, ino);
        out += " xxh=" + std::to_string(XXH64(data.data(), data.size(), 0));
      } else if (S_ISLNK(st.st_mode)) {
        auto t = fs.Readlink(ino);
        REQUIRE(t.ok());
        out += " -> " + *t;
      }
      auto names = fs.ListXattr(kRoot, ino);
      REQUIRE(names.ok());
      for (size_t p = 0; p < names->size();) {
        const std::string n = names->c_str() + p;
        auto v = fs.GetXattr(kRoot, ino, n);
        REQUIRE(v.ok());
        out += " " + n + "=" + *v;
        p += n.size() + 1;
      }
      out += "\n";
      if (S_ISDIR(st.st_mode)) walk(ino, path + "/" + name);
    }
  };
  walk(1, "");
  return out;
}

}  // namespace leasefs::engine::testing
