// Extended attributes in the engine: values up to 64 KiB, thousands of names
// on one inode, replace and remove giving every block back, a full pool, the
// older single-block format, the feature bit, and damage found by the
// daemon (EIO) and by fsck.
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

#include <doctest/doctest.h>
#include <sys/xattr.h>

#include "engine/acl.h"
#include "engine/check/check.h"
#include "engine/layout.h"
#include "engine/superblock.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
namespace L = layout;

int Err(const Status& s) { return s.err(); }
template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

// `n` bytes that differ with `seed` and along the value.
std::string Value(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
  return s;
}

std::string Get(Filesystem& fs, Ino ino, const std::string& name) {
  auto v = fs.GetXattr(kRoot, ino, name);
  return v.ok() ? *v : "<" + std::to_string(v.status().err()) + ">";
}

std::vector<std::string> Names(Filesystem& fs, Ino ino) {
  auto l = fs.ListXattr(kRoot, ino);
  REQUIRE(l.ok());
  std::vector<std::string> out;
  for (size_t p = 0; p < l->size();) {
    out.emplace_back(l->c_str() + p);
    p += out.back().size() + 1;
  }
  return out;
}

uint64_t FreeBlocks(Filesystem& fs) { return fs.StatFs().f_bfree; }

std::vector<char> Unmounted(std::unique_ptr<Filesystem>& fs, SimMedia* raw) {
  fs->Unmount();
  std::vector<char> img = raw->Snapshot();
  fs.reset();
  return img;
}

// fsck's findings that are not notes ("" if none).
std::string FsckErrors(const std::vector<char>& image, bool repair = false,
                       std::vector<char>* repaired = nullptr) {
  auto m = SimMedia::FromImage(image);
  check::CheckOptions o;
  o.repair = repair;
  auto report = check::CheckPool(*m, o);
  if (!report.ok()) return report.status().ToString();
  std::string errors;
  for (const auto& f : report->findings)
    if (f.kind != check::Finding::kNote) errors += f.ToString() + "\n";
  if (repaired) *repaired = m->Snapshot();
  return errors;
}

// `image` as fsck -y leaves it, which must then check clean.
std::vector<char> Repaired(const std::vector<char>& image) {
  std::vector<char> fixed;
  FsckErrors(image, true, &fixed);
  CHECK(FsckErrors(fixed) == "");
  return fixed;
}

L::Superblock Sb(const char* pool) {
  L::Superblock sb;
  std::memcpy(&sb, pool, sizeof(sb));
  return sb;
}

L::Inode InodeOf(const char* pool, Ino ino) {
  const L::Superblock sb = Sb(pool);
  L::Inode in;
  std::memcpy(&in, pool + sb.inode_start * L::kBlockSize + ino * sizeof(L::Inode), sizeof(in));
  return in;
}

// Where the entry `name` of `ino` lies in a pool of leaves: pool byte offset
// of the entry (0 if absent), and its value runs.
struct Found {
  uint64_t entry = 0;
  std::vector<L::XattrRun> runs;
};
Found FindEntry(const char* pool, Ino ino, const std::string& name) {
  Found f;
  for (uint64_t leaf = InodeOf(pool, ino).xattr_block; leaf != 0;) {
    const char* b = pool + leaf * L::kBlockSize;
    for (uint32_t s = 1; s < L::kXattrSlotsPerLeaf; ++s) {
      L::XattrLeafEntry e;
      std::memcpy(&e, b + s * L::kXattrSlotSize, sizeof(e));
      if (e.slot_count == 0 || std::string(b + s * L::kXattrSlotSize + sizeof(e), e.name_len) != name)
        continue;
      f.entry = leaf * L::kBlockSize + s * L::kXattrSlotSize;
      f.runs.resize(e.run_count);
      if (e.run_count != 0)  // an inline value: no runs (and data() may be null)
        std::memcpy(f.runs.data(), b + s * L::kXattrSlotSize + L::XattrRemoteBytes(e.name_len, 0),
                    e.run_count * sizeof(L::XattrRun));
      return f;
    }
    L::XattrLeafHeader h;
    std::memcpy(&h, b, sizeof(h));
    leaf = h.next_block;
  }
  return f;
}

// A pool whose journal lines are written back the moment they are flushed,
// and every other line only at a Drain: an order a CPU cache may write lines
// back in (media.h: "a cache line can be written back at any moment"; a
// flush is ordered before later stores only by a drain). Crashes at its
// armed Drain, losing what that Drain would have made durable.
class EagerJournalMedia final : public Media {
 public:
  explicit EagerJournalMedia(const std::vector<char>& image)
      : Media(Alloc(image.size()), image.size()), durable_(image) {
    std::memcpy(base(), image.data(), image.size());
    const L::Superblock sb = Sb(image.data());
    journal_begin_ = sb.journal_start * L::kBlockSize;
    journal_end_ = (sb.journal_start + sb.journal_blocks) * L::kBlockSize;
  }
  ~EagerJournalMedia() override { std::free(base()); }

  void Flush(const void* p, size_t n) override {
    if (crashed_ || n == 0) return;
    const size_t at = static_cast<size_t>(static_cast<const char*>(p) - base());
    for (size_t b = at & ~size_t{63}; b < at + n && b < size(); b += 64) {
      if (b >= journal_begin_ && b < journal_end_) {
        std::memcpy(durable_.data() + b, base() + b, 64);
      } else {
        pending_.push_back(b);
      }
    }
  }
  void Drain() override {
    if (crashed_) return;
    if (++drains_ == crash_at_) {
      crashed_ = true;
      pending_.clear();
      return;
    }
    for (size_t b : pending_) std::memcpy(durable_.data() + b, base() + b, 64);
    pending_.clear();
  }
  size_t flush_unit() const noexcept override { return 64; }
  std::string describe() const override { return "pmem that writes the journal back early"; }

  void ArmCrash(uint64_t n) { crash_at_ = drains_ + n; }
  bool crashed() const { return crashed_; }
  const std::vector<char>& durable() const { return durable_; }

 private:
  static char* Alloc(size_t n) {
    return static_cast<char*>(std::aligned_alloc(L::kBlockSize, (n + L::kBlockSize - 1) & ~size_t{L::kBlockSize - 1}));
  }
  std::vector<char> durable_;
  std::vector<size_t> pending_;
  size_t journal_begin_ = 0, journal_end_ = 0;
  uint64_t drains_ = 0, crash_at_ = 0;
  bool crashed_ = false;
};

TEST_SUITE("xattr") {
  TEST_CASE("Xattr: values up to 64 KiB are stored byte for byte; more is E2BIG") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(16 << 20), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const uint64_t free0 = FreeBlocks(*fs);
    // Around the block sizes, and across the inline limit (an entry of 1984
    // bytes: header, name and value) in both directions.
    const std::vector<size_t> sizes = {0, 1, 100, 4095, 4096, 4097, 65535, 65536};
    for (size_t i = 0; i < sizes.size(); ++i) {
      CAPTURE(sizes[i]);
      const std::string name = "user.s" + std::to_string(i);
      REQUIRE(fs->SetXattr(kRoot, f, name, Value(sizes[i], i), 0).ok());
      CHECK(Get(*fs, f, name) == Value(sizes[i], i));
    }
    const size_t edge = L::kXattrInlineMax - sizeof(L::XattrLeafEntry) - 9;  // "user.edge"
    for (size_t n : {edge, edge + 1, edge, edge - 1, edge + 1}) {
      CAPTURE(n);
      REQUIRE(fs->SetXattr(kRoot, f, "user.edge", Value(n, n), 0).ok());
      CHECK(Get(*fs, f, "user.edge") == Value(n, n));
    }
    CHECK(Err(fs->SetXattr(kRoot, f, "user.big", std::string(65537, 'v'), 0)) == E2BIG);
    CHECK(Get(*fs, f, "user.big") == "<" + std::to_string(ENODATA) + ">");
    // A namespace with no name after it is no attribute (EINVAL, as ext4).
    for (const char* bare : {"user.", "trusted.", "security."}) {
      CAPTURE(bare);
      CHECK(Err(fs->SetXattr(kRoot, f, bare, "v", 0)) == EINVAL);
      CHECK(Get(*fs, f, bare) == "<" + std::to_string(EINVAL) + ">");
      CHECK(Err(fs->RemoveXattr(kRoot, f, bare)) == EINVAL);
    }
    const std::string n255 = "user." + std::string(250, 'n');
    CHECK(fs->SetXattr(kRoot, f, n255, Value(65536, 99), 0).ok());
    CHECK(Err(fs->SetXattr(kRoot, f, n255 + "x", "v", 0)) == ERANGE);
    CHECK(Get(*fs, f, n255) == Value(65536, 99));
    // Everything survives a remount, and fsck finds the pool clean.
    const std::string before = Observe(*fs);
    const std::vector<char> img = Unmounted(fs, raw);
    CHECK(FsckErrors(img) == "");
    fs = MountImage(img, &raw);
    CHECK(Observe(*fs) == before);
    // Removing them all gives back every block.
    for (const std::string& n : Names(*fs, f)) REQUIRE(fs->RemoveXattr(kRoot, f, n).ok());
    CHECK(FreeBlocks(*fs) == free0);
    CHECK(InodeOf(raw->base(), f).xattr_block == 0);
  }

  TEST_CASE("Xattr: replacing a value between inline and value blocks frees the old blocks") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(16 << 20), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    REQUIRE(fs->SetXattr(kRoot, f, "user.keep", "neighbour", 0).ok());
    const uint64_t free1 = FreeBlocks(*fs);
    const std::vector<size_t> sizes = {10, 65536, 3000, 20000, 20000, 1, 40000, 0};
    for (size_t i = 0; i < sizes.size(); ++i) {
      CAPTURE(sizes[i]);
      REQUIRE(fs->SetXattr(kRoot, f, "user.v", Value(sizes[i], i), i ? XATTR_REPLACE : XATTR_CREATE).ok());
      CHECK(Get(*fs, f, "user.v") == Value(sizes[i], i));
      CHECK(Get(*fs, f, "user.keep") == "neighbour");
      const uint64_t blocks = sizes[i] + 22 > L::kXattrInlineMax ? (sizes[i] + 4095) / 4096 : 0;
      CHECK(FreeBlocks(*fs) == free1 - blocks);
    }
    CHECK(Err(fs->SetXattr(kRoot, f, "user.v", "x", XATTR_CREATE)) == EEXIST);
    CHECK(Err(fs->SetXattr(kRoot, f, "user.none", "x", XATTR_REPLACE)) == ENODATA);
    CHECK(Err(fs->SetXattr(kRoot, f, "user.v", "x", 4)) == EINVAL);
    CHECK(FsckErrors(Unmounted(fs, raw)) == "");
  }

  TEST_CASE("Xattr: 10,000 names on one inode: set, get, list, remove, free space back") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(32 << 20), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const uint64_t free0 = FreeBlocks(*fs);
    constexpr int kCount = 10000;
    auto name = [](int i) { return "user.attribute-" + std::to_string(i); };
    for (int i = 0; i < kCount; ++i) {
      // Every 97th value goes to a value block of its own.
      const std::string v = i % 97 == 0 ? Value(5000, i) : Value(i % 40, i);
      Status s = fs->SetXattr(kRoot, f, name(i), v, XATTR_CREATE);
      REQUIRE_MESSAGE(s.ok(), i << ": " << s.ToString());
    }
    std::vector<std::string> listed = Names(*fs, f);
    CHECK(listed.size() == static_cast<size_t>(kCount));
    CHECK(std::set<std::string>(listed.begin(), listed.end()).size() == static_cast<size_t>(kCount));
    for (int i = 0; i < kCount; i += 7)
      CHECK(Get(*fs, f, name(i)) == (i % 97 == 0 ? Value(5000, i) : Value(i % 40, i)));
    // A limit: the names are gathered up to it, and past it the answer is
    // ERANGE (the daemon asks for at most listxattr(2)'s 64 KiB).
    size_t bytes = 0;
    for (const std::string& n : listed) bytes += n.size() + 1;
    CHECK(fs->ListXattr(kRoot, f, bytes)->size() == bytes);
    CHECK(fs->ListXattr(kRoot, f, bytes - 1).status().err() == ERANGE);
    CHECK(fs->ListXattr(kRoot, f, 65536).status().err() == ERANGE);
    // The list order is the order on media: the same after a remount.
    std::vector<char> img = Unmounted(fs, raw);
    CHECK(FsckErrors(img) == "");
    fs = MountImage(img, &raw);
    CHECK(Names(*fs, f) == listed);
    for (int i = 0; i < kCount; ++i) {
      Status s = fs->RemoveXattr(kRoot, f, name(i));
      REQUIRE_MESSAGE(s.ok(), i << ": " << s.ToString());
    }
    CHECK(Names(*fs, f).empty());
    CHECK(FreeBlocks(*fs) == free0);
    CHECK(FsckErrors(Unmounted(fs, raw)) == "");
  }

  TEST_CASE("Xattr: unlinking an inode with thousands of value blocks, on the smallest journal") {
    SimMedia* raw;
    FormatOptions fo;
    fo.geometry.journal_bytes = 64 << 10;  // the smallest journal: freeing takes several
    auto fs = MustMount(FormattedPool(48 << 20, fo), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const uint64_t free0 = FreeBlocks(*fs);  // the root's directory block taken
    for (int i = 0; i < 3000; ++i)
      REQUIRE(fs->SetXattr(kRoot, f, "user.n" + std::to_string(i), Value(5000, i), 0).ok());
    REQUIRE(fs->SetXattr(kRoot, f, "user.max", Value(65536, 1), 0).ok());  // fits the journal
    REQUIRE(fs->Unlink(kRoot, 1, "f").ok());
    fs->Forget(f, 1);
    CHECK(FreeBlocks(*fs) == free0);
    CHECK(FsckErrors(Unmounted(fs, raw)) == "");
  }

  TEST_CASE("Xattr: a full pool refuses a new value with ENOSPC and keeps the old one") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(8 << 20), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    REQUIRE(fs->SetXattr(kRoot, f, "user.big", Value(30000, 1), 0).ok());
    REQUIRE(fs->SetXattr(kRoot, f, "user.small", "s", 0).ok());
    const Ino fill = MustCreate(*fs, 1, "fill");
    const std::string chunk(1 << 16, 'z');
    for (uint64_t off = 0;; off += chunk.size()) {
      iovec iov{const_cast<char*>(chunk.data()), chunk.size()};
      if (!fs->Write(kRoot, fill, off, &iov, 1).ok()) break;
    }
    // Then the last blocks ordinary use may take, one at a time.
    for (int i = 0; fs->StatFs().f_bavail > 0; ++i)
      if (!fs->SetXattr(kRoot, fill, "user.f" + std::to_string(i), Value(4000, i), 0).ok()) break;
    REQUIRE(fs->StatFs().f_bavail <= 1);
    CHECK(Err(fs->SetXattr(kRoot, f, "user.big", Value(65536, 2), 0)) == ENOSPC);
    CHECK(Err(fs->SetXattr(kRoot, f, "user.new", Value(5000, 2), 0)) == ENOSPC);
    CHECK(Get(*fs, f, "user.big") == Value(30000, 1));
    CHECK(Get(*fs, f, "user.small") == "s");
    // A smaller value in the same place needs no block; removal never does.
    CHECK(fs->SetXattr(kRoot, f, "user.small", "t", 0).ok());
    CHECK(fs->RemoveXattr(kRoot, f, "user.big").ok());
    CHECK(fs->SetXattr(kRoot, f, "user.big", Value(30000, 3), 0).ok());
    CHECK(Get(*fs, f, "user.big") == Value(30000, 3));
    CHECK(FsckErrors(Unmounted(fs, raw)) == "");
  }

  TEST_CASE("Xattr: the feature bit is set by the first leaf; unknown bits are refused") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    CHECK(Sb(raw->base()).feature_incompat == 0);
    const Ino f = MustCreate(*fs, 1, "f");
    REQUIRE(fs->SetXattr(kRoot, f, "user.a", "1", 0).ok());
    const L::Superblock sb = Sb(raw->base());
    CHECK(sb.feature_incompat == L::kIncompatXattrLeaves);
    CHECK(std::memcmp(raw->base(), raw->base() + L::kBlockSize, L::kSuperChecksummedBytes + 8) == 0);
    L::Superblock newer = sb;
    newer.feature_incompat |= uint64_t{1} << 40;
    newer.checksum = SuperblockChecksum(newer);
    CHECK(ValidateSuperblock(newer, raw->size()).err() == EOPNOTSUPP);
    CHECK(ValidateSuperblock(sb, raw->size()).ok());
  }

  TEST_CASE("Xattr: an older pool's single block is read, shrunk in place, and converted on set") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const Ino g = MustCreate(*fs, 1, "g");
    const uint64_t free0 = FreeBlocks(*fs);
    std::vector<char> img = Unmounted(fs, raw);
    PutOldXattrBlock(img, f, {{"user.a", "alpha"}, {"user.b", Value(3000, 2)}, {"trusted.t", "x"}});
    PutOldXattrBlock(img, g, {{"user.only", "1"}});
    REQUIRE(FsckErrors(img) == "");
    fs = MountImage(img, &raw);
    CHECK(Sb(raw->base()).feature_incompat == 0);
    CHECK(Names(*fs, f) == std::vector<std::string>{"user.a", "user.b", "trusted.t"});
    CHECK(Get(*fs, f, "user.b") == Value(3000, 2));
    // Removal rewrites the block (no new block, no feature bit).
    REQUIRE(fs->RemoveXattr(kRoot, f, "user.a").ok());
    CHECK(Names(*fs, f) == std::vector<std::string>{"user.b", "trusted.t"});
    CHECK(Get(*fs, f, "user.b") == Value(3000, 2));
    REQUIRE(fs->RemoveXattr(kRoot, g, "user.only").ok());
    CHECK(InodeOf(raw->base(), g).xattr_block == 0);
    CHECK(Sb(raw->base()).feature_incompat == 0);
    img = Unmounted(fs, raw);
    CHECK(FsckErrors(img) == "");
    // The first set converts the block to leaves and sets the feature bit.
    fs = MountImage(img, &raw);
    REQUIRE(fs->SetXattr(kRoot, f, "user.c", Value(60000, 3), 0).ok());
    CHECK(Sb(raw->base()).feature_incompat == L::kIncompatXattrLeaves);
    CHECK(Names(*fs, f) == std::vector<std::string>{"user.b", "trusted.t", "user.c"});
    CHECK(Get(*fs, f, "user.b") == Value(3000, 2));
    CHECK(Get(*fs, f, "trusted.t") == "x");
    CHECK(Get(*fs, f, "user.c") == Value(60000, 3));
    img = Unmounted(fs, raw);
    CHECK(FsckErrors(img) == "");
    fs = MountImage(img, &raw);
    for (const std::string& n : Names(*fs, f)) REQUIRE(fs->RemoveXattr(kRoot, f, n).ok());
    CHECK(FreeBlocks(*fs) == free0);
  }

  TEST_CASE("Xattr: converting a full older block of 338 entries fits the smallest journal") {
    SimMedia* raw;
    FormatOptions fo;
    fo.geometry.journal_bytes = 64 << 10;
    auto fs = MustMount(FormattedPool(8 << 20, fo), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    std::vector<char> img = Unmounted(fs, raw);
    // 12 bytes each (header, 8-byte name, empty value): as many as 4064 hold.
    std::vector<std::pair<std::string, std::string>> attrs;
    for (int i = 0; i < 338; ++i) {
      char n[16];
      std::snprintf(n, sizeof n, "user.%03d", i);
      attrs.emplace_back(n, "");
    }
    PutOldXattrBlock(img, f, attrs);
    fs = MountImage(img, &raw);
    REQUIRE(Names(*fs, f).size() == 338u);
    REQUIRE(fs->SetXattr(kRoot, f, "user.new", Value(65536, 1), 0).ok());
    const std::vector<std::string> names = Names(*fs, f);
    CHECK(names.size() == 339u);
    CHECK(names.front() == "user.000");  // converted in their order
    CHECK(std::count(names.begin(), names.end(), "user.new") == 1);
    CHECK(Get(*fs, f, "user.337") == "");
    CHECK(FsckErrors(Unmounted(fs, raw)) == "");
  }

  TEST_CASE("Xattr: a value changed behind the engine's back gives EIO; fsck clears it") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    REQUIRE(fs->SetXattr(kRoot, f, "user.big", Value(20000, 1), 0).ok());
    REQUIRE(fs->SetXattr(kRoot, f, "user.small", "intact", 0).ok());
    REQUIRE(fs->SetXattr(kRoot, f, "user.inline", "inline value", 0).ok());
    const Found big = FindEntry(raw->base(), f, "user.big");
    REQUIRE(big.runs.size() >= 1);
    raw->base()[big.runs[0].pool_block * L::kBlockSize + 100] ^= 0x20;
    const Found in = FindEntry(raw->base(), f, "user.inline");
    REQUIRE(in.entry != 0);
    raw->base()[in.entry + sizeof(L::XattrLeafEntry) + 11 + 3] ^= 0x01;  // a value byte
    CHECK(Err(fs->GetXattr(kRoot, f, "user.big")) == EIO);
    CHECK(Err(fs->GetXattr(kRoot, f, "user.inline")) == EIO);
    CHECK(Get(*fs, f, "user.small") == "intact");
    CHECK(Names(*fs, f).size() == 3u);
    // An entry whose name no longer matches: EIO, not another attribute.
    const Found small = FindEntry(raw->base(), f, "user.small");
    raw->base()[small.entry + sizeof(L::XattrLeafEntry) + 5] = 'X';
    CHECK(Err(fs->GetXattr(kRoot, f, "user.small")) == EIO);
    raw->base()[small.entry + sizeof(L::XattrLeafEntry) + 5] = 's';
    std::vector<char> img = Unmounted(fs, raw);
    // fsck names both damaged values and, repairing, clears them.
    const std::string errors = FsckErrors(img);
    CHECK(errors.find("'user.big' fails its value checksum") != std::string::npos);
    CHECK(errors.find("'user.inline' fails its value checksum") != std::string::npos);
    fs = MountImage(Repaired(img), &raw);
    CHECK(Names(*fs, f) == std::vector<std::string>{"user.small"});
  }

  TEST_CASE("Xattr: a damaged structure is refused at mount, naming the inode; fsck mends it") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const Ino g = MustCreate(*fs, 1, "g");
    REQUIRE(fs->SetXattr(kRoot, f, "user.a", Value(10000, 1), 0).ok());
    REQUIRE(fs->SetXattr(kRoot, f, "user.b", Value(10000, 1), 0).ok());  // the same value
    REQUIRE(fs->SetXattr(kRoot, g, "user.g", "small", 0).ok());
    std::vector<char> img = Unmounted(fs, raw);
    const uint64_t leaf = InodeOf(img.data(), f).xattr_block;
    const Found a = FindEntry(img.data(), f, "user.a");
    const Found b = FindEntry(img.data(), f, "user.b");
    REQUIRE(a.runs.size() == 1);
    REQUIRE(b.runs.size() == 1);
    std::vector<char> bad = img;
    auto put64 = [&](uint64_t off, uint64_t v) { std::memcpy(bad.data() + off, &v, sizeof(v)); };
    std::string fsck_says;                                  // what fsck must report
    std::string mount_says = "inode " + std::to_string(f);  // what the refusal names
    SUBCASE("bad magic") {
      bad[leaf * L::kBlockSize + 3] ^= 0x01;
      fsck_says = "xattr block " + std::to_string(leaf) + " has a bad magic";
    }
    SUBCASE("a leaf another inode owns") {
      put64(leaf * L::kBlockSize + offsetof(L::XattrLeafHeader, owner_ino), g);
      fsck_says = "xattr leaf " + std::to_string(leaf) + " belongs to inode " + std::to_string(g);
    }
    SUBCASE("an entry running past its leaf") {
      bad[a.entry] = 63;  // slot_count
      fsck_says = "spans 63 slots but needs 1";
    }
    SUBCASE("a value longer than 64 KiB") {
      const uint32_t len = 70000;
      std::memcpy(bad.data() + a.entry + offsetof(L::XattrLeafEntry, value_len), &len, 4);
      fsck_says = "has a value of 70000 bytes (at most 65536)";
    }
    SUBCASE("a value run outside the pool") {
      put64(a.entry + L::XattrRemoteBytes(6, 0), Sb(img.data()).total_blocks + 5);
      fsck_says = "'user.a' has a value run {block " +
                  std::to_string(Sb(img.data()).total_blocks + 5) + ", length 3} outside the data area";
    }
    SUBCASE("two entries naming the same value blocks") {
      put64(b.entry + L::XattrRemoteBytes(6, 0), a.runs[0].pool_block);
      fsck_says = "'user.b' names value blocks other metadata uses";
      mount_says = "block " + std::to_string(a.runs[0].pool_block) + ": refcount 1 but 2";
    }
    SUBCASE("a chain that loops") {
      put64(leaf * L::kBlockSize + offsetof(L::XattrLeafHeader, next_block), leaf);
      fsck_says = "appears twice (the chain loops)";
    }
    SUBCASE("the superblock lacks the feature bit") {
      for (uint64_t sb_block : {L::kSuperBlock, L::kBackupSuperBlock}) {
        L::Superblock sb = Sb(bad.data() + sb_block * L::kBlockSize);
        sb.feature_incompat = 0;
        sb.checksum = SuperblockChecksum(sb);
        std::memcpy(bad.data() + sb_block * L::kBlockSize, &sb, sizeof(sb));
      }
      fsck_says = "the pool holds xattr leaves but lacks their feature bit";
    }
    CAPTURE(fsck_says);
    auto m = Filesystem::Mount(SimMedia::FromImage(bad), MountOptions{});
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().err() == EUCLEAN);
    CHECK_MESSAGE(m.status().ToString().find(mount_says) != std::string::npos,
                  m.status().ToString());
    const std::string errors = FsckErrors(bad);
    CHECK_MESSAGE(errors.find(fsck_says) != std::string::npos, errors);
    fs = MountImage(Repaired(bad), &raw);
    CHECK(Get(*fs, g, "user.g") == "small");
    CHECK(fs->SetXattr(kRoot, f, "user.c", Value(7000, 3), 0).ok());
    CHECK(Get(*fs, f, "user.c") == Value(7000, 3));
  }

  TEST_CASE("Xattr: a crash never links a leaf or value blocks that are not durable yet") {
    // The leaf and the value blocks are written in place before the
    // transaction that links them; the journal's header must not reach the
    // pool before they do, whatever order the cache writes lines back in.
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const Ino g = MustCreate(*fs, 1, "g");
    REQUIRE(fs->SetXattr(kRoot, f, "user.a", Value(20000, 1), 0).ok());  // and the feature bit
    const std::vector<char> img = Unmounted(fs, raw);
    const std::string none = "<" + std::to_string(ENODATA) + ">";
    for (uint64_t point = 1;; ++point) {
      CAPTURE(point);
      auto media = std::make_unique<EagerJournalMedia>(img);
      EagerJournalMedia* m = media.get();
      auto mounted = Filesystem::Mount(std::move(media), MountOptions{});
      REQUIRE(mounted.ok());
      std::unique_ptr<Filesystem> live = std::move(mounted).value();
      m->ArmCrash(point);
      (void)live->SetXattr(kRoot, g, "user.b", "in a new leaf", 0);
      (void)live->SetXattr(kRoot, f, "user.a", Value(20000, 2), 0);  // new value blocks
      const bool crashed = m->crashed();
      const std::vector<char> after = m->durable();
      live.reset();
      auto back = Filesystem::Mount(SimMedia::FromImage(after), MountOptions{});
      REQUIRE_MESSAGE(back.ok(), back.status().ToString());
      std::unique_ptr<Filesystem> again = std::move(back).value();
      const std::string a = Get(*again, f, "user.a");
      CHECK_MESSAGE((a == Value(20000, 1) || a == Value(20000, 2)), a.substr(0, 8));
      const std::string b = Get(*again, g, "user.b");
      CHECK((b == none || b == "in a new leaf"));
      again->Unmount();
      if (!crashed) break;
    }
  }

  TEST_CASE("Xattr: fsck clears a damaged entry without the good entries after it") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    REQUIRE(fs->SetXattr(kRoot, f, "user.a", std::string(150, 'x'), 0).ok());  // slots 1-3
    for (int i = 0; i < 20; ++i)
      REQUIRE(fs->SetXattr(kRoot, f, "user.k" + std::to_string(i), "value " + std::to_string(i), 0)
                  .ok());
    const std::vector<char> img = Unmounted(fs, raw);
    const Found a = FindEntry(img.data(), f, "user.a");
    REQUIRE(a.entry != 0);
    std::vector<char> bad = img;
    std::string fsck_says;
    // One damaged byte: the entry's slot_count.
    SUBCASE("too many slots") {
      bad[a.entry] = 40;
      fsck_says = "spans 40 slots but needs 3";
    }
    SUBCASE("too few slots (its value's bytes then start the next slot)") {
      bad[a.entry] = 1;
      fsck_says = "spans 1 slots but needs 3";
    }
    CAPTURE(fsck_says);
    const std::string errors = FsckErrors(bad);
    CHECK_MESSAGE(errors.find(fsck_says) != std::string::npos, errors);
    fs = MountImage(Repaired(bad), &raw);
    CHECK(Get(*fs, f, "user.a") == "<" + std::to_string(ENODATA) + ">");
    for (int i = 0; i < 20; ++i)
      CHECK(Get(*fs, f, "user.k" + std::to_string(i)) == "value " + std::to_string(i));
    CHECK(Names(*fs, f).size() == 20u);
  }

  TEST_CASE("Xattr: fsck clearing a damaged access ACL gives the owning group nothing its mask held") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f", 0600);
    // u::rw-,u:1000:rw-,g::---,m::rw-,o::---: the mode's group bits hold the
    // mask (rw-); the owning group (gid 0) gets nothing.
    const std::string list = acl::Encode({{acl::kUserObj, 6, acl::kUndefinedId},
                                          {acl::kUser, 6, 1000},
                                          {acl::kGroupObj, 0, acl::kUndefinedId},
                                          {acl::kMask, 6, acl::kUndefinedId},
                                          {acl::kOther, 0, acl::kUndefinedId}});
    const std::string name(acl::kAccessXattr);
    REQUIRE(fs->SetXattr(kRoot, f, name, list, 0).ok());
    const Cred member(2000, 0);  // in the file's group, not named
    REQUIRE(Err(fs->Access(member, f, W_OK)) == EACCES);
    REQUIRE(fs->Access(Cred(1000, 1000), f, W_OK).ok());
    std::vector<char> img = Unmounted(fs, raw);
    const Found e = FindEntry(img.data(), f, name);
    REQUIRE(e.entry != 0);
    img[e.entry + sizeof(L::XattrLeafEntry) + name.size() + 4 + 8 + 2] ^= 0x01;  // u:1000's perm
    // The daemon: a damaged list grants nothing.
    fs = MountImage(img, &raw);
    CHECK(Err(fs->Access(member, f, W_OK)) == EACCES);
    img = Unmounted(fs, raw);
    // fsck clears it; the group must not get the mask's bits for it.
    std::vector<char> fixed;
    const std::string errors = FsckErrors(img, true, &fixed);
    CHECK_MESSAGE(errors.find("fails its value checksum") != std::string::npos, errors);
    CHECK(FsckErrors(fixed) == "");
    fs = MountImage(fixed, &raw);
    CHECK(Err(fs->GetXattr(kRoot, f, name)) == ENODATA);
    CHECK(Err(fs->Access(member, f, W_OK)) == EACCES);
    CHECK(Err(fs->Access(member, f, R_OK)) == EACCES);
  }
}

}  // namespace
}  // namespace leasefs::engine
