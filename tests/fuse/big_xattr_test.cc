// Big extended attributes on a mounted leasefs, as XFS has them: values up
// to 64 KiB (XATTR_SIZE_MAX) through setxattr(2) and the attr package's
// setfattr/getfattr, thousands of names on one inode, the list limit of
// 64 KiB, replace and remove giving the space back, a full pool, an
// unprivileged owner, racing clients, remounts and damage in the pool.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#include "engine/layout.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

namespace L = layout;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

std::string Set(const std::string& path, const std::string& name, const std::string& value,
                int flags = 0) {
  return SYS(setxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags));
}

// The value, or "<ERRNO>" on failure; a buffer of `room` bytes.
std::string Get(const std::string& path, const std::string& name, size_t room = 65536) {
  std::string buf(room, '\0');
  errno = 0;
  const ssize_t n = getxattr(path.c_str(), name.c_str(), buf.data(), buf.size());
  if (n < 0) return "<" + ErrnoName(errno) + ">";
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// The names llistxattr gives in a buffer of `room` bytes, or {"<ERRNO>"}.
std::vector<std::string> List(const std::string& path, size_t room = 65536) {
  std::string buf(room, '\0');
  errno = 0;
  const ssize_t n = llistxattr(path.c_str(), buf.data(), buf.size());
  if (n < 0) return {"<" + ErrnoName(errno) + ">"};
  std::vector<std::string> names;
  for (ssize_t i = 0; i < n;) {
    names.emplace_back(buf.data() + i);
    i += static_cast<ssize_t>(names.back().size()) + 1;
  }
  return names;
}

uint64_t FreeBlocks(const std::string& path) {
  struct statvfs st {};
  REQUIRE(statvfs(path.c_str(), &st) == 0);
  return st.f_bfree;
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out = "0x";
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// "0s" and the base64 of `bytes`: how setfattr(1) takes a binary value
// (hex would make a 64 KiB value's argument longer than exec allows).
std::string Base64(const std::string& bytes) {
  static const char* kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out = "0s";
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t w = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) w |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) w |= static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kAlphabet[(w >> 18) & 63]);
    out.push_back(kAlphabet[(w >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(w >> 6) & 63] : '=');
    out.push_back(i + 2 < bytes.size() ? kAlphabet[w & 63] : '=');
  }
  return out;
}

// The first value block of xattr `name` of inode `ino`, read from the pool
// file (0 if it has none).
uint64_t FirstValueBlock(const std::string& pool, uint64_t ino, const std::string& name) {
  Fd fd(open(pool.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.ok());
  auto read_at = [&](void* dst, size_t n, uint64_t off) {
    REQUIRE(pread(fd.get(), dst, n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  };
  L::Superblock sb;
  read_at(&sb, sizeof(sb), 0);
  L::Inode in;
  read_at(&in, sizeof(in), sb.inode_start * L::kBlockSize + ino * sizeof(L::Inode));
  for (uint64_t leaf = in.xattr_block; leaf != 0;) {
    std::string b(L::kBlockSize, '\0');
    read_at(b.data(), b.size(), leaf * L::kBlockSize);
    for (uint32_t s = 1; s < L::kXattrSlotsPerLeaf; ++s) {
      L::XattrLeafEntry e;
      std::memcpy(&e, b.data() + s * L::kXattrSlotSize, sizeof(e));
      if (e.slot_count == 0 || b.compare(s * L::kXattrSlotSize + sizeof(e), e.name_len, name) != 0)
        continue;
      if (e.run_count == 0) return 0;
      L::XattrRun r;
      std::memcpy(&r, b.data() + s * L::kXattrSlotSize + L::XattrRemoteBytes(e.name_len, 0),
                  sizeof(r));
      return r.pool_block;
    }
    L::XattrLeafHeader h;
    std::memcpy(&h, b.data(), sizeof(h));
    leaf = h.next_block;
  }
  return 0;
}

// The attr package's tools; tests that use them are skipped without them
// (./dev installs them).
bool HaveAttrTools() {
  return access("/usr/bin/setfattr", X_OK) == 0 && access("/usr/bin/getfattr", X_OK) == 0;
}
#define NEED_ATTR_TOOLS()                                          \
  do {                                                             \
    if (!HaveAttrTools()) {                                        \
      MESSAGE("skipped: setfattr/getfattr (package attr) missing"); \
      return;                                                      \
    }                                                              \
  } while (0)

TEST_SUITE("fuse.xattr.big") {
  TEST_CASE("BigXattr: 64 KiB values are byte-exact through setxattr(2) and fd calls; more is E2BIG") {
    TestFs fs;
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    const std::string v = Pattern(65536, 1);
    CHECK(Set(f, "user.big", v) == "OK");
    CHECK(getxattr(f.c_str(), "user.big", nullptr, 0) == 65536);
    CHECK(Get(f, "user.big") == v);
    CHECK(Get(f, "user.big", 65535) == "<ERANGE>");
    // 64 KiB + 1: the kernel refuses it before the filesystem sees it.
    CHECK(Set(f, "user.bigger", Pattern(65537, 2)) == "E2BIG");
    CHECK(List(f) == std::vector<std::string>{"user.big"});
    // Through a file descriptor, with the sizes around a block.
    Fd fd(open(f.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd.ok());
    for (size_t n : {4095u, 4096u, 4097u, 65535u}) {
      CAPTURE(n);
      const std::string w = Pattern(n, n);
      CHECK(SYS(fsetxattr(fd.get(), "user.fd", w.data(), w.size(), 0)) == "OK");
      std::string r(65536, '\0');
      const ssize_t got = fgetxattr(fd.get(), "user.fd", r.data(), r.size());
      REQUIRE(got == static_cast<ssize_t>(n));
      r.resize(static_cast<size_t>(got));
      CHECK(Diff(r, w) == "");
    }
    CHECK(Get(f, "user.big") == v);
  }

  TEST_CASE("BigXattr: setfattr and getfattr store and read a 64 KiB value byte for byte") {
    NEED_ATTR_TOOLS();
    TestFs fs;
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    const std::string v = Pattern(65536, 3);
    ProcessResult set = Run({"/usr/bin/setfattr", "-n", "user.tool", "-v", Base64(v), f});
    REQUIRE_MESSAGE(set.exit_code == 0, set.output);
    CHECK(Diff(Get(f, "user.tool"), v) == "");
    ProcessResult get =
        Run({"/usr/bin/getfattr", "--absolute-names", "--only-values", "-n", "user.tool", f});
    REQUIRE_MESSAGE(get.exit_code == 0, get.output);
    CHECK(Diff(get.output, v) == "");
    ProcessResult dump = Run({"/usr/bin/getfattr", "--absolute-names", "-d", "-e", "hex", f});
    REQUIRE_MESSAGE(dump.exit_code == 0, dump.output);
    CHECK(dump.output.find("user.tool=" + Hex(v) + "\n") != std::string::npos);
    // A dump restores as it was: setfattr --restore, as backups use it.
    REQUIRE(WriteFile(fs.path("g"), "") == "");
    const std::string dump_file = "/tmp/leasefs-xattr-dump-" + std::to_string(getpid());
    {
      std::string d = dump.output;
      const std::string from = "# file: " + f + "\n", to = "# file: " + fs.path("g") + "\n";
      REQUIRE(d.find(from) != std::string::npos);
      d.replace(d.find(from), from.size(), to);
      REQUIRE(WriteFile(dump_file, d) == "");
    }
    ProcessResult restore = Run({"/usr/bin/setfattr", "--restore=" + dump_file});
    unlink(dump_file.c_str());
    CHECK_MESSAGE(restore.exit_code == 0, restore.output);
    CHECK(Diff(Get(fs.path("g"), "user.tool"), v) == "");
    ProcessResult too_big =
        Run({"/usr/bin/setfattr", "-n", "user.huge", "-v", Base64(Pattern(65537, 4)), f});
    CHECK(too_big.exit_code != 0);
    CHECK(too_big.output.find("Argument list too long") != std::string::npos);
    ProcessResult rm = Run({"/usr/bin/setfattr", "-x", "user.tool", f});
    CHECK(rm.exit_code == 0);
    CHECK(Get(f, "user.tool") == "<ENODATA>");
  }

  TEST_CASE("BigXattr: replace swaps whole values; XATTR_CREATE and XATTR_REPLACE errnos") {
    TestFs fs;
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    REQUIRE(Set(f, "user.small", "s") == "OK");
    const uint64_t base = FreeBlocks(fs.root());
    CHECK(Set(f, "user.v", Pattern(65536, 1), XATTR_CREATE) == "OK");
    CHECK(Set(f, "user.v", Pattern(100, 2), XATTR_CREATE) == "EEXIST");
    CHECK(Set(f, "user.w", Pattern(65536, 2), XATTR_REPLACE) == "ENODATA");
    CHECK(Get(f, "user.v") == Pattern(65536, 1));
    CHECK(Get(f, "user.w") == "<ENODATA>");
    const std::vector<size_t> sizes = {10, 40000, 65536, 1, 0, 65536};
    for (size_t i = 0; i < sizes.size(); ++i) {
      CAPTURE(sizes[i]);
      CHECK(Set(f, "user.v", Pattern(sizes[i], 10 + i), XATTR_REPLACE) == "OK");
      CHECK(Get(f, "user.v") == Pattern(sizes[i], 10 + i));
      CHECK(Get(f, "user.small") == "s");
      if (fs.reference()) continue;
      // leasefs: a value past an entry's 1984 bytes takes blocks of its own.
      const uint64_t blocks = sizes[i] > 1900 ? (sizes[i] + 4095) / 4096 : 0;
      CHECK(FreeBlocks(fs.root()) == base - blocks);
    }
    CHECK(SYS(removexattr(f.c_str(), "user.v")) == "OK");
    CHECK(SYS(removexattr(f.c_str(), "user.v")) == "ENODATA");
    if (!fs.reference()) CHECK(FreeBlocks(fs.root()) == base);
  }

  TEST_CASE("BigXattr: 10,000 names on one file: set, list to the 64 KiB limit, get, remove all") {
    TestFs fs;
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    const uint64_t base = FreeBlocks(fs.root());
    auto name = [](int i) {
      char n[32];
      std::snprintf(n, sizeof n, "user.%05d", i);  // 10 bytes and a NUL in a list
      return std::string(n);
    };
    auto value = [](int i) { return i % 500 == 0 ? Pattern(9000, i) : std::to_string(i * 7); };
    for (int i = 0; i < 5000; ++i) REQUIRE(Set(f, name(i), value(i), XATTR_CREATE) == "OK");
    // 55,000 bytes of names: the list fits 64 KiB, and holds each name once.
    std::vector<std::string> names = List(f);
    REQUIRE(names.size() == 5000u);
    std::sort(names.begin(), names.end());
    for (int i = 0; i < 5000; ++i) CHECK(names[static_cast<size_t>(i)] == name(i));
    CHECK(listxattr(f.c_str(), nullptr, 0) == 55000);
    CHECK(List(f, 54999) == std::vector<std::string>{"<ERANGE>"});
    for (int i = 5000; i < 10000; ++i) REQUIRE(Set(f, name(i), value(i), XATTR_CREATE) == "OK");
    // 110,000 bytes: more than listxattr(2) can return (XATTR_LIST_MAX), as
    // on XFS; the kernel caps a size probe at 64 KiB for FUSE.
    CHECK(List(f) == std::vector<std::string>{"<E2BIG>"});
    CHECK(List(f, 1 << 20) == std::vector<std::string>{"<E2BIG>"});
    CHECK(List(f, 1000) == std::vector<std::string>{"<ERANGE>"});
    const ssize_t probe = listxattr(f.c_str(), nullptr, 0);
    if (fs.reference()) {
      CHECK(probe >= 65536);
    } else {
      CHECK(probe == 65536);
    }
    for (int i = 0; i < 10000; ++i) {
      const std::string got = Get(f, name(i));
      if (got != value(i)) {
        CHECK_MESSAGE(got == value(i), name(i) << ": " << Diff(got, value(i)));
        break;
      }
    }
    CHECK(Set(f, name(77), "again", XATTR_CREATE) == "EEXIST");
    for (int i = 0; i < 10000; ++i) REQUIRE(SYS(removexattr(f.c_str(), name(i).c_str())) == "OK");
    CHECK(List(f) == std::vector<std::string>{});
    if (!fs.reference()) CHECK(FreeBlocks(fs.root()) == base);
  }

  TEST_CASE("BigXattr: uid 65534 sets big user.* values on its own file; trusted.* and security.* stay closed") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0777) == 0);
    REQUIRE(chmod(fs.path("d").c_str(), 0777) == 0);
    REQUIRE(WriteFile(fs.path("d/root-file"), "", 0644) == "");
    REQUIRE(Set(fs.path("d/root-file"), "security.label", "root's label") == "OK");
    REQUIRE(Set(fs.path("d/root-file"), "trusted.t", "hidden") == "OK");
    const std::string v = Pattern(65536, 9);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      const std::string own = fs.path("d/own");
      KEQ(k, WriteFile(own, "", 0600), "");
      KEQ(k, Set(own, "user.big", v), "OK");
      KTRUE(k, Get(own, "user.big") == v);
      KEQ(k, Set(own, "user.big", "now small", XATTR_REPLACE), "OK");
      KEQ(k, Get(own, "user.big"), "now small");
      KEQ(k, Set(own, "user.big", v, XATTR_CREATE), "EEXIST");
      // trusted.* needs CAP_SYS_ADMIN, security.* too (the kernel's
      // capability check; leasefs refuses them the same way).
      KEQ(k, Set(own, "trusted.mine", "x"), "EPERM");
      KEQ(k, Set(own, "security.mine", "x"), "EPERM");
      KTRUE(k, List(own) == std::vector<std::string>{"user.big"});
      KSYS(k, removexattr(own.c_str(), "user.big"), "OK");
      KTRUE(k, List(own).empty());
      // Another user's file: readable security.*, invisible trusted.*.
      const std::string theirs = fs.path("d/root-file");
      KEQ(k, Get(theirs, "security.label"), "root's label");
      KEQ(k, Get(theirs, "trusted.t"), "<ENODATA>");
      KTRUE(k, List(theirs) == std::vector<std::string>{"security.label"});
      KEQ(k, Set(theirs, "user.x", v), "EACCES");
      // The attr tools, as that user.
      if (!HaveAttrTools()) return;
      ProcessResult set = Run({"/usr/bin/setfattr", "-n", "user.tool", "-v", "by nobody", own});
      KEQ(k, std::to_string(set.exit_code) + " " + set.output, "0 ");
      ProcessResult get =
          Run({"/usr/bin/getfattr", "--absolute-names", "--only-values", "-n", "user.tool", own});
      KEQ(k, get.output, "by nobody");
    });
    if (HaveAttrTools()) CHECK(Get(fs.path("d/own"), "user.tool") == "by nobody");
    CHECK(Lstat(fs.path("d/own")).st_uid == kNobody);
  }

  TEST_CASE("BigXattr: racing clients see whole values only") {
    TestFs fs;
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    const std::string a = Pattern(65536, 21), b = Pattern(30000, 22);
    REQUIRE(Set(f, "user.race", a) == "OK");
    std::atomic<int> torn{0}, errors{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w)
      threads.emplace_back([&, w] {
        for (int i = 0; i < 150; ++i) {
          const std::string& v = (i + w) % 2 ? a : b;
          if (Set(f, "user.race", v) != "OK") ++errors;
          if (i % 10 == 0 && SYS(removexattr(f.c_str(), "user.race")) != "OK") {
            // The other writer removed it first: fine, set it back.
            if (Set(f, "user.race", v) != "OK") ++errors;
          }
        }
      });
    for (int r = 0; r < 2; ++r)
      threads.emplace_back([&] {
        for (int i = 0; i < 300; ++i) {
          const std::string got = Get(f, "user.race");
          if (got != a && got != b && got != "<ENODATA>") ++torn;
        }
      });
    for (std::thread& t : threads) t.join();
    CHECK(torn.load() == 0);
    CHECK(errors.load() == 0);
    const std::string last = Get(f, "user.race");
    CHECK((last == a || last == b || last == "<ENODATA>"));
  }

  TEST_CASE("BigXattr: values survive a remount and fsck finds the pool clean") {
    TestFs fs;
    LEASEFS_ONLY(fs, "remount and fsck are leasefs's");
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "data") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    for (int i = 0; i < 300; ++i)
      REQUIRE(Set(f, "user.n" + std::to_string(i), Pattern(i * 211 % 66000, i)) == "OK");
    REQUIRE(Set(fs.path("d"), "trusted.dir", Pattern(65536, 5)) == "OK");
    REQUIRE(SYS(removexattr(f.c_str(), "user.n7")) == "OK");
    REQUIRE(fs.UnmountFsckRemount() == "");
    CHECK(List(f).size() == 299u);
    for (int i = 0; i < 300; ++i) {
      CAPTURE(i);
      CHECK(Get(f, "user.n" + std::to_string(i)) == (i == 7 ? "<ENODATA>" : Pattern(i * 211 % 66000, i)));
    }
    CHECK(Get(fs.path("d"), "trusted.dir") == Pattern(65536, 5));
    CHECK(ReadFile(f) == "data");
  }

  TEST_CASE("BigXattr: on a full pool setxattr is ENOSPC and the old value stays") {
    FsOptions o;
    o.pool_size = "8M";
    TestFs fs(o);
    LEASEFS_ONLY(fs, "filling the pool exactly is leasefs's");
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    REQUIRE(Set(f, "user.big", Pattern(65536, 1)) == "OK");
    REQUIRE(Set(f, "user.small", "s") == "OK");
    {
      Fd fill(open(fs.path("fill").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
      REQUIRE(fill.ok());
      const std::string chunk(1 << 16, 'z');
      for (off_t off = 0;; off += static_cast<off_t>(chunk.size()))
        if (pwrite(fill.get(), chunk.data(), chunk.size(), off) < static_cast<ssize_t>(chunk.size()))
          break;
    }
    CHECK(Set(f, "user.big", Pattern(65536, 2)) == "ENOSPC");
    CHECK(Set(f, "user.new", Pattern(20000, 2)) == "ENOSPC");
    CHECK(Get(f, "user.big") == Pattern(65536, 1));
    CHECK(List(f) == std::vector<std::string>{"user.big", "user.small"});
    // A value that fits where the old one was needs no block.
    CHECK(Set(f, "user.small", "t") == "OK");
    REQUIRE(fs.UnmountFsckRemount() == "");
    CHECK(Get(f, "user.big") == Pattern(65536, 1));
    // (Truncated, not unlinked: an unlinked file's blocks go when the
    // kernel forgets the inode, which it does in its own time.)
    REQUIRE(truncate(fs.path("fill").c_str(), 0) == 0);
    CHECK(Set(f, "user.big", Pattern(65536, 3)) == "OK");
    CHECK(Get(f, "user.big") == Pattern(65536, 3));
    CHECK(Get(f, "user.small") == "t");
  }

  TEST_CASE("BigXattr: a value damaged in the pool gives EIO; the daemon keeps serving") {
    TestFs fs;
    LEASEFS_ONLY(fs, "writes leasefs's pool file");
    const std::string f = fs.path("f");
    REQUIRE(WriteFile(f, "") == "");
    REQUIRE(Set(f, "user.big", Pattern(20000, 1)) == "OK");
    REQUIRE(Set(f, "user.ok", "fine") == "OK");
    const uint64_t block = FirstValueBlock(fs.mount()->pool(), Lstat(f).st_ino, "user.big");
    REQUIRE(block != 0);
    {
      // As a process with write access to the pool file could: behind the
      // daemon's back, into the mapping it serves from.
      Fd pool(open(fs.mount()->pool().c_str(), O_WRONLY | O_CLOEXEC));
      REQUIRE(pool.ok());
      REQUIRE(pwrite(pool.get(), "XYZ", 3, static_cast<off_t>(block * L::kBlockSize + 123)) == 3);
    }
    CHECK(Get(f, "user.big") == "<EIO>");
    CHECK(getxattr(f.c_str(), "user.big", nullptr, 0) == -1);
    CHECK(Get(f, "user.ok") == "fine");
    CHECK(List(f) == std::vector<std::string>{"user.big", "user.ok"});
    CHECK(WriteFile(fs.path("g"), "still serving") == "");
    // The damaged value can be replaced, or removed; then fsck is content.
    CHECK(Set(f, "user.big", "new") == "OK");
    CHECK(Get(f, "user.big") == "new");
    REQUIRE(fs.UnmountFsckRemount() == "");
    CHECK(Get(f, "user.ok") == "fine");
  }
}

}  // namespace
}  // namespace leasefs::testing
