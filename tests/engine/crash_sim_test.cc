// The crash simulator: for each operation below, stop the engine at every
// persist point it reaches (and, separately, with in-flight 8-byte words
// landing or not as several seeds decide), recover the image, and require
// that (1) the pool mounts (mount cross-checks link counts and refcounts),
// (2) the offline checker finds no error, and (3) what a user can see is
// exactly the state before the operation or exactly the state after it.
//
// The block-map operations (reflink, copy on write, every fallocate mode,
// unshare, defrag, copy_file_range, move-extents) are here too. Those that
// run as an intent (clone, punch, zero range, collapse, insert) are also
// driven over files of over a thousand extents with a small journal, so that
// they take many transactions and a crash between two of them leaves a
// recorded intent that the mount must roll forward; and crashes are injected
// into that roll-forward as well.
#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include "leasefs/ioctl.h"
#include "engine/acl.h"
#include "engine/check/check.h"
#include "engine/layout.h"
#include "engine/superblock.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;
using layout::kMinPoolBytes;

struct Scenario {
  const char* name;
  std::function<void(Filesystem&)> setup;
  std::function<void(Filesystem&)> op;
  FormatOptions format{};
  size_t pool_bytes = 8 << 20;
  // Block-map scenarios only (see BlockMapScenarios):
  // More of the state to compare, beyond Observe (e.g. which blocks are
  // shared), for operations whose effect Observe cannot see.
  std::function<std::string(Filesystem&)> extra = nullptr;
  // The operation changes nothing Observe shows (unshare, defrag) and is
  // made of pieces that each commit on their own: then the extra state must
  // change, and every crash must leave the contents as they were (the extra
  // state may be anywhere between before and after).
  bool invisible = false;
  // The operation must reach at least this many persist points (so that a
  // multi-transaction operation really is one).
  uint64_t min_points = 0;
  // Also crash the recovery (the mount that rolls an intent forward) at each
  // of its persist points, for a crash in the middle of the operation.
  bool recrash = false;
  // Crash images per persist point: seed 0 keeps only what was drained,
  // seeds 1.. also land a random part of the words in flight.
  uint64_t seeds = 4;
  // A file the operation writes with write(2)'s contract (copy_file_range
  // between offsets that are not alike within their blocks): each of its
  // bytes may be old or new, its size old or new; the rest of the tree is
  // exactly before or after.
  const char* bytewise = nullptr;
  // Changes the setup's image before the operation runs (to give it
  // structures the engine no longer writes).
  std::function<void(std::vector<char>&)> edit_image = nullptr;
};

std::string Bytes(size_t n, char c) { return std::string(n, c); }

Ino At(Filesystem& fs, const std::string& path) {
  Ino cur = 1;
  size_t b = 1;
  while (b < path.size()) {
    size_t e = path.find('/', b);
    if (e == std::string::npos) e = path.size();
    cur = MustLookup(fs, cur, path.substr(b, e - b));
    b = e + 1;
  }
  return cur;
}

void Truncate(Filesystem& fs, Ino ino, uint64_t size) {
  SetAttrArgs a;
  a.valid = SetAttrArgs::kSize;
  a.size = size;
  REQUIRE(fs.SetAttr(kRoot, ino, a).ok());
}

// A small tree most scenarios start from.
void BaseTree(Filesystem& fs) {
  const Ino d = MustMkdir(fs, 1, "d");
  MustMkdir(fs, 1, "e");
  MustMkdir(fs, d, "sub");
  const Ino f = MustCreate(fs, d, "f");
  MustWrite(fs, f, 0, Bytes(10000, 'f'));
  MustCreate(fs, 1, "g");
  REQUIRE(fs.SetXattr(kRoot, f, "user.one", "1", 0).ok());
}

// A format with the smallest journal (64 KiB), so that freeing a file of
// 1000 extents takes several transactions.
FormatOptions SmallJournal() {
  FormatOptions fo;
  fo.geometry.journal_bytes = 64 << 10;
  return fo;
}

// Two files of 1000 one-block extents each (interleaved, so none merge).
void Fragmented(Filesystem& fs) {
  BaseTree(fs);
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  REQUIRE(fs.SetXattr(kRoot, a, "user.x", "y", 0).ok());
  for (uint64_t i = 0; i < 1000; ++i) {
    MustWrite(fs, a, i * kBlockSize, Bytes(kBlockSize, 'a'));
    MustWrite(fs, b, i * kBlockSize, Bytes(kBlockSize, 'b'));
  }
}

// An ACL with a named user and group: u::rw-,u:1000:rwx,g::r--,g:50:r-x,
// m::rwx,o::r--.
std::string NamedAcl() {
  using namespace acl;
  return Encode({{kUserObj, 6, kUndefinedId},
                 {kUser, 7, 1000},
                 {kGroupObj, 4, kUndefinedId},
                 {kGroup, 5, 50},
                 {kMask, 7, kUndefinedId},
                 {kOther, 4, kUndefinedId}});
}

// BaseTree, /d/f with NamedAcl as its access ACL and /e with it as its
// default ACL.
void AclTree(Filesystem& fs) {
  BaseTree(fs);
  REQUIRE(fs.SetXattr(kRoot, At(fs, "/d/f"), acl::kAccessXattr, NamedAcl(), 0).ok());
  REQUIRE(fs.SetXattr(kRoot, At(fs, "/e"), acl::kDefaultXattr, NamedAcl(), 0).ok());
}

// Big xattrs: a value too big for its entry goes to value blocks written
// before the one transaction that switches the entry.
void XattrScenarios(std::vector<Scenario>& s) {
  auto set = [](const char* path, const char* name, std::string value, int flags = 0) {
    return [=](Filesystem& fs) { REQUIRE(fs.SetXattr(kRoot, At(fs, path), name, value, flags).ok()); };
  };
  auto with_big = [](Filesystem& fs) {
    BaseTree(fs);
    REQUIRE(fs.SetXattr(kRoot, At(fs, "/g"), "user.big", Bytes(65536, 'o'), 0).ok());
  };
  // No xattr yet: the pool lacks the feature bit, which the op sets.
  auto bare = [](Filesystem& fs) {
    MustMkdir(fs, 1, "d");
    MustCreate(fs, 1, "g");  // inode 3
  };
  s.push_back({"first xattr of a pool: the feature bit, a leaf and 64 KiB of value blocks", bare,
               set("/g", "user.big", Bytes(65536, 'n'))});
  s.push_back({"replace a 64 KiB xattr with another", with_big,
               set("/g", "user.big", Bytes(65536, 'n'), XATTR_REPLACE)});
  s.push_back({"replace a 64 KiB xattr with a small one", with_big, set("/g", "user.big", "small")});
  s.push_back({"replace a small xattr with a 40 KiB one", BaseTree,
               set("/d/f", "user.one", Bytes(40000, 'n'))});
  s.push_back({"remove a 64 KiB xattr", with_big, [](Filesystem& fs) {
                 REQUIRE(fs.RemoveXattr(kRoot, At(fs, "/g"), "user.big").ok());
               }});
  {
    Scenario c{"set on an inode with an older single xattr block: converted, then set", bare,
               set("/g", "user.new", Bytes(30000, 'n'))};
    c.edit_image = [](std::vector<char>& img) {
      PutOldXattrBlock(img, 3, {{"user.old", Bytes(3000, 'o')}, {"trusted.t", "t"}});
    };
    s.push_back(c);
  }
  {
    // 2400 values of a block each: their blocks' references need more than
    // one transaction of the smallest journal, so the inode is freed in
    // several (a crash between two leaves an orphan the mount reclaims).
    Scenario u{"unlink a file with 2400 xattr value blocks, on the smallest journal",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 const Ino x = MustCreate(fs, 1, "x");
                 for (int i = 0; i < 2400; ++i)
                   REQUIRE(fs.SetXattr(kRoot, x, "user.n" + std::to_string(i), Bytes(2000, 'x'), 0)
                               .ok());
               },
               [](Filesystem& fs) {
                 const Ino x = At(fs, "/x");
                 REQUIRE(fs.Unlink(kRoot, 1, "x").ok());
                 fs.Forget(x, 1000000);
               },
               SmallJournal(), 24 << 20};
    u.min_points = 9;  // the unlink and at least two transactions freeing
    u.seeds = 1;
    s.push_back(u);
  }
}

// The lazily initialized tables (docs/pool_format.md "Lazily initialized
// tables"): the operation raises a mark. Past the mark the image holds
// garbage, as a device formatted over an older filesystem does, so that a
// mark stored before the space under it is zeroed shows at once.
void Garble(std::vector<char>& img, uint64_t from, uint64_t to) {
  std::memset(img.data() + from, 0xa5, to - from);
}

void MarkScenarios(std::vector<Scenario>& s) {
  {
    // Slots 1-15 in use: the create takes the first slot past the mark.
    FormatOptions fo;
    fo.init_inodes = 16;
    Scenario c{"create that raises the inode mark (initializes 64 more slots)",
               [](Filesystem& fs) {
                 BaseTree(fs);  // inodes 2-6
                 for (int i = 7; i < 16; ++i) MustCreate(fs, 1, "x" + std::to_string(i));
                 REQUIRE(fs.TableMarks().inodes == 16);
               },
               [](Filesystem& fs) {
                 CHECK(MustCreate(fs, At(fs, "/d"), "new") == 16);
                 CHECK(fs.TableMarks().inodes == 80);
               },
               fo};
    c.edit_image = [](std::vector<char>& img) {
      layout::Superblock sb;
      std::memcpy(&sb, img.data(), sizeof(sb));
      const uint64_t table = sb.inode_start * kBlockSize;
      Garble(img, table + 16 * sizeof(layout::Inode),
             table + sb.inode_count * sizeof(layout::Inode));
    };
    s.push_back(c);
  }
  {
    // 1024 data blocks' refcounts initialized, nearly all of them in use:
    // the write's blocks lie past the mark.
    FormatOptions fo;
    fo.init_data_bytes = 4 << 20;
    Scenario c{"write that raises the refcount mark (initializes a refcount block)",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 MustWrite(fs, MustCreate(fs, 1, "big"), 0, Bytes(1000 * kBlockSize, 'b'));
                 REQUIRE(fs.TableMarks().refcount_blocks == 1);
               },
               [](Filesystem& fs) {
                 MustWrite(fs, At(fs, "/g"), 0, Bytes(100 * kBlockSize, 'g'));
                 CHECK(fs.TableMarks().refcount_blocks == 2);
               },
               fo};
    c.edit_image = [](std::vector<char>& img) {
      layout::Superblock sb;
      std::memcpy(&sb, img.data(), sizeof(sb));
      Garble(img, (sb.refcount_start + 1) * kBlockSize, sb.data_start * kBlockSize);
    };
    s.push_back(c);
  }
}

std::vector<Scenario> Scenarios() {
  std::vector<Scenario> s;
  MarkScenarios(s);
  s.push_back({"create", BaseTree, [](Filesystem& fs) { MustCreate(fs, At(fs, "/d"), "new"); }});
  s.push_back({"create that grows the directory",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 for (int i = 0; i < 62; ++i) MustCreate(fs, At(fs, "/e"), "n" + std::to_string(i));
               },
               [](Filesystem& fs) { MustCreate(fs, At(fs, "/e"), "overflow"); }});
  s.push_back({"mkdir", BaseTree, [](Filesystem& fs) { MustMkdir(fs, At(fs, "/d/sub"), "deep"); }});
  s.push_back({"long symlink", BaseTree,
               [](Filesystem& fs) { REQUIRE(fs.Symlink(kRoot, 1, "l", Bytes(500, 't')).ok()); }});
  s.push_back({"hard link", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Link(kRoot, At(fs, "/d/f"), At(fs, "/e"), "f2").ok());
               }});
  s.push_back({"write into a hole", BaseTree,
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/d/f"), 100000, Bytes(20000, 'w')); }});
  s.push_back({"append in place", BaseTree, [](Filesystem& fs) {
                 MustWrite(fs, At(fs, "/d/f"), 10000, Bytes(100, 'a'));  // same block, size grows
               }});
  s.push_back({"extend a file past a partial block",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 Truncate(fs, At(fs, "/d/f"), 5000);  // block 1 keeps stale bytes past EOF
               },
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/d/f"), 9000, "z"); }});
  s.push_back({"truncate down", BaseTree, [](Filesystem& fs) { Truncate(fs, At(fs, "/d/f"), 3); }});
  // The first flag of a pool also adds the ATTR_FLAGS feature to both
  // superblock copies, which a crash may tear (docs/pool_format.md).
  s.push_back({"chattr +i +d, the pool's first flags", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.SetAttrFlags(kRoot, At(fs, "/d/f"), FS_IMMUTABLE_FL | FS_NODUMP_FL,
                                         /*may_freeze=*/true)
                             .ok());
               }});
  s.push_back({"chattr -i",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 REQUIRE(fs.SetAttrFlags(kRoot, At(fs, "/d"), FS_IMMUTABLE_FL | FS_DIRSYNC_FL,
                                         /*may_freeze=*/true)
                             .ok());
               },
               [](Filesystem& fs) {
                 REQUIRE(fs.SetAttrFlags(kRoot, At(fs, "/d"), FS_DIRSYNC_FL, true).ok());
               }});
  s.push_back(
      {"truncate up", BaseTree, [](Filesystem& fs) { Truncate(fs, At(fs, "/d/f"), 1 << 20); }});
  s.push_back({"truncate of many extents with a small journal", Fragmented,
               [](Filesystem& fs) { Truncate(fs, At(fs, "/a"), 100); }, SmallJournal(), 16 << 20});
  s.push_back({"unlink", BaseTree, [](Filesystem& fs) { REQUIRE(fs.Unlink(kRoot, 1, "g").ok()); }});
  s.push_back({"unlink and free a file's blocks", BaseTree, [](Filesystem& fs) {
                 const Ino f = At(fs, "/d/f");  // one more reference
                 REQUIRE(fs.Unlink(kRoot, At(fs, "/d"), "f").ok());
                 fs.Forget(f, 1000);  // drop every reference: the inode is freed now
               }});
  s.push_back({"unlink and free a large fragmented file with a small journal", Fragmented,
               [](Filesystem& fs) {
                 const Ino a = At(fs, "/a");
                 REQUIRE(fs.Unlink(kRoot, 1, "a").ok());
                 fs.Forget(a, 1000);
               },
               SmallJournal(), 16 << 20});
  s.push_back({"rmdir and free a directory with blocks",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 const Ino big = MustMkdir(fs, 1, "big");
                 for (int i = 0; i < 200; ++i) MustCreate(fs, big, "n" + std::to_string(i));
                 for (int i = 0; i < 200; ++i)
                   REQUIRE(fs.Unlink(kRoot, big, "n" + std::to_string(i)).ok());
               },
               [](Filesystem& fs) {
                 const Ino big = At(fs, "/big");
                 REQUIRE(fs.Rmdir(kRoot, 1, "big").ok());
                 fs.Forget(big, 1000);
               }});
  s.push_back({"unlink and free a long symlink",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 REQUIRE(fs.Symlink(kRoot, 1, "l", Bytes(500, 't')).ok());
               },
               [](Filesystem& fs) {
                 const Ino l = At(fs, "/l");
                 REQUIRE(fs.Unlink(kRoot, 1, "l").ok());
                 fs.Forget(l, 1000);
               }});
  s.push_back({"rmdir", BaseTree,
               [](Filesystem& fs) { REQUIRE(fs.Rmdir(kRoot, At(fs, "/d"), "sub").ok()); }});
  s.push_back({"rename in a directory", BaseTree,
               [](Filesystem& fs) { REQUIRE(fs.Rename(kRoot, 1, "g", 1, "h", 0).ok()); }});
  s.push_back({"rename over a file", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "f", 0).ok());
               }});
  s.push_back({"move a directory", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, At(fs, "/d"), "sub", At(fs, "/e"), "moved", 0).ok());
               }});
  s.push_back({"exchange a file and a directory", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "sub", RENAME_EXCHANGE).ok());
               }});
  s.push_back({"rename with a whiteout to a new name", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/e"), "g", RENAME_WHITEOUT).ok());
               }});
  s.push_back({"rename with a whiteout over a file", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "f", RENAME_WHITEOUT).ok());
               }});
  s.push_back({"move a directory with a whiteout", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, At(fs, "/d"), "sub", At(fs, "/e"), "sub",
                                   RENAME_WHITEOUT | RENAME_NOREPLACE)
                             .ok());
               }});
  s.push_back({"rename without replacing", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "g", RENAME_NOREPLACE).ok());
               }});
  s.push_back({"exchange two files in different directories", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "f", RENAME_EXCHANGE).ok());
               }});
  {
    // Nothing visible changes: the new inode has no name. A crash anywhere
    // leaves the tree as it was (the next mount reclaims the orphan); the
    // inode count shows that the operation did something.
    Scenario t{"O_TMPFILE (an orphan from the start)", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Tmpfile(kRoot, At(fs, "/d"), 0600, O_RDWR).ok());
               }};
    t.invisible = true;
    t.extra = [](Filesystem& fs) { return "free inodes " + std::to_string(fs.StatFs().f_ffree); };
    s.push_back(t);
  }
  // The whole of the idiom: an unnamed file, its bytes, then its name. Only
  // the link is visible, with every byte or not at all.
  s.push_back({"write and link an O_TMPFILE", BaseTree, [](Filesystem& fs) {
                 auto e = fs.Tmpfile(kRoot, At(fs, "/d"), 0640, O_RDWR);
                 REQUIRE(e.ok());
                 MustWrite(fs, e->attr.st_ino, 0, Bytes(9000, 't'));
                 REQUIRE(fs.Link(kRoot, e->attr.st_ino, At(fs, "/e"), "named").ok());
               }});
  s.push_back({"set an xattr", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.SetXattr(kRoot, At(fs, "/g"), "user.new", "value", 0).ok());
               }});
  s.push_back({"remove the last xattr", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.RemoveXattr(kRoot, At(fs, "/d/f"), "user.one").ok());
               }});
  s.push_back({"read-only and back while mounted, then an unlink", BaseTree,
               [](Filesystem& fs) {
                 REQUIRE(fs.SetReadOnly(true).ok());
                 REQUIRE(fs.Unlink(kRoot, 1, "g").err() == EROFS);
                 REQUIRE(fs.SetReadOnly(false).ok());
                 REQUIRE(fs.Unlink(kRoot, 1, "g").ok());
               }});
  XattrScenarios(s);
  s.push_back({"chmod and chown", BaseTree, [](Filesystem& fs) {
                 SetAttrArgs a;
                 a.valid = SetAttrArgs::kMode | SetAttrArgs::kUid | SetAttrArgs::kGid;
                 a.mode = 0600;
                 a.uid = 42;
                 a.gid = 43;
                 REQUIRE(fs.SetAttr(kRoot, At(fs, "/d/f"), a).ok());
               }});
  // POSIX ACLs: the list and the mode it implies go together.
  s.push_back({"set an access ACL, which changes the mode", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.SetXattr(kRoot, At(fs, "/g"), acl::kAccessXattr, NamedAcl(), 0).ok());
               }});
  s.push_back({"set an ACL equal to a mode over a stored one", AclTree, [](Filesystem& fs) {
                 const std::string minimal = acl::Encode(acl::FromMode(0750));
                 REQUIRE(fs.SetXattr(kRoot, At(fs, "/d/f"), acl::kAccessXattr, minimal, 0).ok());
               }});
  s.push_back({"create under a default ACL", AclTree,
               [](Filesystem& fs) { MustCreate(fs, At(fs, "/e"), "inherits", 0666); }});
  s.push_back({"mkdir under a default ACL", AclTree,
               [](Filesystem& fs) { MustMkdir(fs, At(fs, "/e"), "sub", 0777); }});
  s.push_back({"chmod of a file with an ACL", AclTree, [](Filesystem& fs) {
                 SetAttrArgs a;
                 a.valid = SetAttrArgs::kMode;
                 a.mode = 0601;
                 REQUIRE(fs.SetAttr(kRoot, At(fs, "/d/f"), a).ok());
               }});
  s.push_back({"remove a default ACL", AclTree, [](Filesystem& fs) {
                 REQUIRE(fs.RemoveXattr(kRoot, At(fs, "/e"), acl::kDefaultXattr).ok());
               }});
  s.push_back({"preallocate", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Fallocate(kRoot, At(fs, "/g"), 0, 0, 50000).ok());
               }});
  s.push_back({"write into preallocated space",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 REQUIRE(fs.Fallocate(kRoot, At(fs, "/g"), 0, 0, 50000).ok());
               },
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/g"), 10000, Bytes(9000, 'p')); }});
  return s;
}

// ---------------------------------------------------------------------------
// Block-map scenarios

constexpr uint64_t B = kBlockSize;

// Bytes that differ from offset to offset, so that a shifted, shared, copied
// or zeroed range changes a file's content hash.
std::string Pattern(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

Ino CreateOrLookup(Filesystem& fs, Ino dir, const std::string& name) {
  auto e = fs.Lookup(kRoot, dir, name);
  if (e.ok()) return e->attr.st_ino;
  return MustCreate(fs, dir, name);
}

// Writes `blocks` blocks of /`name` one at a time, /`spacer` growing by a
// block in between, so that each block of /`name` is an extent of its own.
Ino Striped(Filesystem& fs, const std::string& name, const std::string& spacer, uint64_t blocks,
            uint64_t seed) {
  const Ino f = CreateOrLookup(fs, 1, name), sp = CreateOrLookup(fs, 1, spacer);
  auto size = [&](Ino ino) {
    auto e = fs.GetAttr(ino);
    REQUIRE(e.ok());
    return static_cast<uint64_t>(e->attr.st_size);
  };
  const uint64_t at = size(f), sp_at = size(sp);
  for (uint64_t i = 0; i < blocks; ++i) {
    MustWrite(fs, f, at + i * B, Pattern(B, seed + i));
    MustWrite(fs, sp, sp_at + i * B, Pattern(B, seed + 7919 + i));
  }
  return f;
}

void Remove(Filesystem& fs, const std::string& name) {
  const Ino ino = At(fs, "/" + name);
  REQUIRE(fs.Unlink(kRoot, 1, name).ok());
  fs.Forget(ino, 1000000);  // every reference: the inode is freed now
}

// The tree the small block-map scenarios start from:
//   /s  12 blocks and 1000 bytes in 9 extents: blocks 0-5 one extent each,
//       a hole at 6-7, blocks 8-9 written, 10-11 preallocated (unwritten),
//       then the partial last block;
//   /t  5 blocks of its own and an xattr;
//   /spacer  what keeps /s's first blocks apart.
void Sources(Filesystem& fs) {
  BaseTree(fs);
  const Ino s = Striped(fs, "s", "spacer", 6, 10);
  MustWrite(fs, s, 8 * B, Pattern(2 * B, 20));
  REQUIRE(fs.Fallocate(kRoot, s, FALLOC_FL_KEEP_SIZE, 10 * B, 2 * B).ok());
  MustWrite(fs, s, 12 * B, Pattern(1000, 21));
  const Ino t = MustCreate(fs, 1, "t");
  MustWrite(fs, t, 0, Pattern(5 * B, 30));
  REQUIRE(fs.SetXattr(kRoot, t, "user.t", "1", 0).ok());
}

// Sources, then /t made a reflink of the whole of /s (every written block of
// /s shared, refcount 2).
void Cloned(Filesystem& fs) {
  Sources(fs);
  auto n = fs.CloneRange(kRoot, At(fs, "/s"), 0, At(fs, "/t"), 0, 0);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
}

// A format with the smallest journal and two files /a and /b of 1024
// one-block extents each (interleaved), for the intent scenarios: a clone,
// punch, zero, collapse or insert across them takes many transactions.
constexpr uint64_t kBigExtents = 1024;
void BigFragmented(Filesystem& fs) {
  BaseTree(fs);
  Striped(fs, "a", "b", kBigExtents, 1000);
  MustCreate(fs, 1, "c");
}
void BigCloned(Filesystem& fs) {
  BigFragmented(fs);
  auto n = fs.CloneRange(kRoot, At(fs, "/a"), 0, At(fs, "/c"), 0, 0);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
}

// Per file: the runs of its block map (pool-contiguous pieces), and its
// shared and unwritten blocks.
std::string MapSummary(Filesystem& fs, const std::vector<std::string>& paths, bool runs,
                       bool unwritten) {
  std::string out;
  for (const std::string& p : paths) {
    auto map = fs.BlockMap(At(fs, p), 0, SIZE_MAX);
    REQUIRE(map.ok());
    uint64_t pieces = 0, shared = 0, unw = 0;
    const Filesystem::BlockMapRun* prev = nullptr;
    for (const auto& r : map->runs) {
      const bool joins = prev && prev->file_block + prev->length == r.file_block &&
                         prev->pool_block + prev->length == r.pool_block && prev->flags == r.flags;
      pieces += joins ? 0 : 1;
      if (r.refcount > 1) shared += r.length;
      if (r.flags & LEASEFS_EXTENT_UNWRITTEN) unw += r.length;
      prev = &r;
    }
    out += p + ": shared " + std::to_string(shared);
    if (runs) out += " runs " + std::to_string(pieces);
    if (unwritten) out += " unwritten " + std::to_string(unw);
    out += "\n";
  }
  return out;
}

void Clone(Filesystem& fs, const std::string& src, uint64_t src_off, const std::string& dst,
           uint64_t dst_off, uint64_t len) {
  auto n = fs.CloneRange(kRoot, At(fs, src), src_off, At(fs, dst), dst_off, len);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
}

void Falloc(Filesystem& fs, const std::string& path, int mode, uint64_t off, uint64_t len) {
  Status st = fs.Fallocate(kRoot, At(fs, path), mode, off, len);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
}

void CopyRange(Filesystem& fs, const std::string& src, uint64_t src_off, const std::string& dst,
               uint64_t dst_off, uint64_t len, uint64_t want) {
  auto n = fs.CopyFileRange(kRoot, At(fs, src), src_off, At(fs, dst), dst_off, len);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  REQUIRE(*n == want);
}

void MapDax(Filesystem& fs, const std::string& path, uint64_t off, uint64_t len, bool writable,
            uint64_t map_id) {
  auto m = fs.MapForDax(kRoot, At(fs, path), off, len, writable, map_id, {99, 1, 2}, 256);
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
}

// The reach records, the quarantine, and /s's and /t's block maps.
std::string ReachState(Filesystem& fs) {
  const auto q = fs.Quarantine();
  std::string out = "records " + std::to_string(q.records) + ", quarantined " +
                    std::to_string(q.quarantined) + "\n";
  for (const auto& r : fs.ReachRecords())
    out += std::to_string(r.map_id) + ": " + std::to_string(r.file_block) + "+" +
           std::to_string(r.length) + " at " + std::to_string(r.pool_block) + ", " +
           std::to_string(r.quarantined) + " quarantined\n";
  auto exists = [&fs](const char* name) { return fs.Lookup(kRoot, 1, name).ok(); };
  std::vector<std::string> files;
  for (const char* p : {"s", "t"})
    if (exists(p)) files.push_back(std::string("/") + p);
  return out + MapSummary(fs, files, true, true);
}

constexpr int kPunch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
constexpr int kZeroKeep = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

FormatOptions BigFormat() { return SmallJournal(); }
// Every crash image is a whole pool, copied a few times per check: the
// smallest pools that hold the files (and, zeroing shared blocks, the
// unwritten blocks that replace them).
constexpr size_t kBigPool = 12 << 20;
constexpr size_t kBigPoolZeroShared = 16 << 20;

// Every block-map scenario whose recovery is all or nothing today.
std::vector<Scenario> BlockMapScenarios() {
  std::vector<Scenario> s;
  const auto shared_st = [](Filesystem& fs) { return MapSummary(fs, {"/s", "/t"}, false, false); };

  // --- reflink
  s.push_back({"clone a multi-extent file into another file", Sources,
               [](Filesystem& fs) { Clone(fs, "/s", 0, "/t", B, 0); }});
  s.push_back({"clone within one file to a non-overlapping offset", Sources,
               [](Filesystem& fs) { Clone(fs, "/s", 0, "/s", 16 * B, 8 * B); }});
  s.push_back({"clone over blocks already shared", Cloned,
               [](Filesystem& fs) { Clone(fs, "/s", 8 * B, "/t", 0, 2 * B); }});
  s.push_back({"clone past the destination's end of file", Sources,
               [](Filesystem& fs) { Clone(fs, "/s", 0, "/t", 7 * B, 4 * B); }});
  // --- copy on write
  s.push_back({"write into shared blocks (copy on write)", Cloned,
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/t"), 3000, Pattern(6000, 40)); }});
  s.push_back({"write into the source of a clone", Cloned,
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/s"), 8 * B + 10, Pattern(100, 41)); }});
  // --- fallocate
  s.push_back({"punch a block-aligned hole", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", kPunch, 2 * B, 8 * B); }});
  s.push_back({"punch a hole with unaligned edges", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", kPunch, 1000, 9 * B); }});
  s.push_back({"punch a hole in shared blocks", Cloned,
               [](Filesystem& fs) { Falloc(fs, "/t", kPunch, B, 3 * B); }});
  s.push_back({"zero range keeping the size, over shared blocks", Cloned,
               [](Filesystem& fs) { Falloc(fs, "/t", kZeroKeep, 2 * B, 20 * B); }});
  s.push_back({"zero range of whole blocks growing the file", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", FALLOC_FL_ZERO_RANGE, 4 * B, 20 * B); }});
  s.push_back({"zero range, unaligned, growing the file", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", FALLOC_FL_ZERO_RANGE, 5000, 20 * B); }});
  s.push_back({"zero range inside one block", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", kZeroKeep, B + 100, 200); }});
  s.push_back({"zero range inside one shared block", Cloned,
               [](Filesystem& fs) { Falloc(fs, "/t", kZeroKeep, 2 * B + 10, 3000); }});
  s.push_back({"collapse a range", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", FALLOC_FL_COLLAPSE_RANGE, B, 3 * B); }});
  s.push_back({"collapse a range of shared blocks", Cloned,
               [](Filesystem& fs) { Falloc(fs, "/t", FALLOC_FL_COLLAPSE_RANGE, 0, 2 * B); }});
  s.push_back({"insert a range", Sources,
               [](Filesystem& fs) { Falloc(fs, "/s", FALLOC_FL_INSERT_RANGE, 2 * B, 3 * B); }});
  s.push_back({"insert a range into shared blocks", Cloned,
               [](Filesystem& fs) { Falloc(fs, "/t", FALLOC_FL_INSERT_RANGE, 4 * B, B); }});
  {
    Scenario u{"unshare a cloned file", Cloned, [](Filesystem& fs) {
                 Falloc(fs, "/t", FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE, B, 4 * B);
               }};
    u.extra = shared_st;
    u.invisible = true;
    s.push_back(u);
  }
  // --- defrag
  {
    Scenario d{"defrag a fragmented file",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 Striped(fs, "s", "spacer", 40, 50);
                 MustCreate(fs, 1, "keep");  // something after the spacer's blocks
                 MustWrite(fs, At(fs, "/keep"), 0, Pattern(B, 51));
                 Remove(fs, "spacer");  // 40 one-block holes between /s's blocks
               },
               [](Filesystem& fs) {
                 auto r = fs.Defrag(kRoot, At(fs, "/s"));
                 REQUIRE_MESSAGE(r.ok(), r.status().ToString());
                 REQUIRE(r->blocks_moved > 0);
               }};
    d.extra = [](Filesystem& fs) { return MapSummary(fs, {"/s"}, true, false); };
    d.invisible = true;
    s.push_back(d);
  }
  {
    Scenario d{"defrag a file with shared and unwritten blocks",
               [](Filesystem& fs) {
                 Sources(fs);
                 Clone(fs, "/s", 0, "/t", 0, 3 * B);  // /s's first 3 blocks shared
               },
               [](Filesystem& fs) {
                 auto r = fs.Defrag(kRoot, At(fs, "/s"));
                 REQUIRE_MESSAGE(r.ok(), r.status().ToString());
                 REQUIRE(r->blocks_moved > 0);
               }};
    d.extra = [](Filesystem& fs) { return MapSummary(fs, {"/s", "/t"}, true, true); };
    d.invisible = true;
    s.push_back(d);
  }
  // --- copy_file_range
  s.push_back(
      {"copy_file_range of whole blocks to the source's end (a clone)", Sources,
       [](Filesystem& fs) { CopyRange(fs, "/s", 2 * B, "/t", 2 * B, 1 << 20, 10 * B + 1000); }});
  s.push_back({"copy_file_range with partial blocks around a cloned middle", Sources,
               [](Filesystem& fs) { CopyRange(fs, "/s", 100, "/t", B + 100, 10 * B, 10 * B); }});
  s.push_back({"copy_file_range with partial blocks into shared blocks", Cloned,
               [](Filesystem& fs) { CopyRange(fs, "/s", 8 * B + 7, "/t", 7, 3 * B, 3 * B); }});
  {
    // Offsets unlike within their blocks: nothing can be shared, the bytes
    // are copied with write(2)'s contract.
    Scenario c{"copy_file_range, unaligned, over written blocks and past the end", Sources,
               [](Filesystem& fs) { CopyRange(fs, "/s", 100, "/t", 5000, 6 * B, 6 * B); }};
    c.bytewise = "/t";
    s.push_back(c);
  }
  // --- EXT4_IOC_MOVE_EXT, as e4defrag uses it: a preallocated donor
  s.push_back({"move extents into a preallocated donor",
               [](Filesystem& fs) {
                 Sources(fs);
                 const Ino d = MustCreate(fs, 1, "donor");
                 REQUIRE(fs.Fallocate(kRoot, d, 0, 0, 6 * B).ok());
               },
               [](Filesystem& fs) {
                 auto n = fs.MoveExtents(kRoot, At(fs, "/s"), At(fs, "/donor"), 0, 0, 6);
                 REQUIRE_MESSAGE(n.ok(), n.status().ToString());
                 REQUIRE(*n == 6);
               }});

  // --- freeing a block mapped twice by one file, copying within one file
  // right after the source's end (each once left a refcount wrong), and
  // defrag of a file whose extents fill its inline slots but one (once
  // tripped an assertion on the extent-chain block it planned, then trimmed)
  auto self_cloned = [](Filesystem& fs) {
    Sources(fs);
    Clone(fs, "/s", 0, "/s", 16 * B, B);  // /s maps its first pool block twice
  };
  s.push_back({"truncate a file that maps one block twice", self_cloned,
               [](Filesystem& fs) { Truncate(fs, At(fs, "/s"), 0); }});
  s.push_back({"unlink a file that maps one block twice", self_cloned,
               [](Filesystem& fs) { Remove(fs, "s"); }});
  s.push_back({"copy_file_range within one file to right after the source's end",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 MustWrite(fs, MustCreate(fs, 1, "u"), 0, Pattern(B + 54, 60));
               },
               [](Filesystem& fs) { CopyRange(fs, "/u", 100, "/u", B + 100, 1 << 20, B - 46); }});
  {
    Scenario d{"defrag a file of five preallocated extents",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 const Ino u = MustCreate(fs, 1, "u"), sp = MustCreate(fs, 1, "spacer");
                 for (uint64_t i = 0; i < 5; ++i) {
                   REQUIRE(fs.Fallocate(kRoot, u, FALLOC_FL_KEEP_SIZE, 2 * i * B, B).ok());
                   MustWrite(fs, sp, i * B, Pattern(B, 70 + i));
                 }
               },
               [](Filesystem& fs) {
                 auto r = fs.Defrag(kRoot, At(fs, "/u"));
                 REQUIRE_MESSAGE(r.ok(), r.status().ToString());
                 REQUIRE(r->blocks_moved > 0);
               }};
    d.extra = [](Filesystem& fs) {  // where the blocks are
      std::string out;
      auto map = fs.BlockMap(At(fs, "/u"), 0, SIZE_MAX);
      REQUIRE(map.ok());
      for (const auto& r : map->runs) out += " " + std::to_string(r.pool_block);
      return out;
    };
    d.invisible = true;
    s.push_back(d);
  }

  // --- the DAX path: handing out blocks (with the block-map changes that
  // come first) and the quarantine (docs/pool_format.md "Quarantine")
  {
    Scenario m{"map a range for DAX writable: holes filled, unwritten converted, shared copied",
               Cloned, [](Filesystem& fs) { MapDax(fs, "/s", 0, 16 * B, true, 7); }};
    m.extra = ReachState;
    s.push_back(m);
  }
  {
    Scenario m{"map a range for DAX read-only: unwritten converted",
               Sources, [](Filesystem& fs) { MapDax(fs, "/s", 8 * B, 8 * B, false, 7); }};
    m.extra = ReachState;
    s.push_back(m);
  }
  auto mapped = [](Filesystem& fs) {
    Sources(fs);
    MapDax(fs, "/s", 0, 16 * B, true, 7);
    MapDax(fs, "/s", 4 * B, 4 * B, false, 8);  // overlaps the first
  };
  {
    Scenario m{"truncate a range DAX mappings cover", mapped,
               [](Filesystem& fs) { Truncate(fs, At(fs, "/s"), B + 10); }};
    m.extra = ReachState;
    s.push_back(m);
  }
  {
    Scenario m{"unlink a file DAX mappings cover", mapped,
               [](Filesystem& fs) { Remove(fs, "s"); }};
    m.extra = ReachState;
    s.push_back(m);
  }
  {
    Scenario m{"drop a DAX mapping: its quarantined blocks not covered by another are freed",
               [=](Filesystem& fs) {
                 mapped(fs);
                 Truncate(fs, At(fs, "/s"), B + 10);
               },
               [](Filesystem& fs) { REQUIRE(fs.DropReach(7) > 0); }};
    m.extra = ReachState;
    s.push_back(m);
  }

  {
    // Aligned offsets, but a writable mapping covers the source's blocks:
    // nothing may be shared, so the bytes are copied (write(2)'s contract).
    Scenario m{"copy_file_range of a range a writable DAX mapping covers: copied, not shared",
               [](Filesystem& fs) {
                 Sources(fs);
                 MapDax(fs, "/s", 0, 8 * B, true, 7);
               },
               [](Filesystem& fs) { CopyRange(fs, "/s", 0, "/t", 0, 8 * B, 8 * B); }};
    m.extra = ReachState;
    m.bytewise = "/t";
    s.push_back(m);
  }

  // The smallest pool will do for these (every crash image is a copy of it).
  for (Scenario& sc : s)
    if (sc.pool_bytes == Scenario{}.pool_bytes) sc.pool_bytes = kMinPoolBytes;

  // --- intents over many extents with a small journal: many transactions,
  // and a roll-forward at mount for a crash between any two of them.
  // (One crash image per persist point: the torn words of a commit are the
  // small scenarios' business; these are about the roll-forward.)
  auto big = [&](const char* name, std::function<void(Filesystem&)> setup,
                 std::function<void(Filesystem&)> op, size_t pool = kBigPool) {
    Scenario b{name, std::move(setup), std::move(op), BigFormat(), pool};
    b.min_points = 12;  // at least four transactions
    b.recrash = true;
    b.seeds = 1;
    s.push_back(b);
  };
  big("clone 1024 extents over a file of 1024 extents with a small journal", BigFragmented,
      [](Filesystem& fs) { Clone(fs, "/a", 0, "/b", 0, 0); });
  big("punch a hole across 1024 extents with a small journal", BigFragmented,
      [](Filesystem& fs) { Falloc(fs, "/a", kPunch, 10 * B, 1000 * B); });
  big("zero range across 1024 extents with a small journal", BigFragmented,
      [](Filesystem& fs) { Falloc(fs, "/a", kZeroKeep, 10 * B, 1000 * B); });
  big(
      "zero range across 1024 shared extents with a small journal", BigCloned,
      [](Filesystem& fs) { Falloc(fs, "/c", kZeroKeep, 0, kBigExtents * B); }, kBigPoolZeroShared);
  big("collapse a range before 1024 extents with a small journal", BigFragmented,
      [](Filesystem& fs) { Falloc(fs, "/a", FALLOC_FL_COLLAPSE_RANGE, 5 * B, 10 * B); });
  big("insert a range before 1024 extents with a small journal", BigFragmented,
      [](Filesystem& fs) { Falloc(fs, "/a", FALLOC_FL_INSERT_RANGE, 5 * B, 3 * B); });
  return s;
}

// ---------------------------------------------------------------------------
// The runner

std::string State(Filesystem& fs, const Scenario& sc) {
  std::string st = Observe(fs);
  if (sc.extra) st += "--\n" + sc.extra(fs);
  return st;
}

// Runs `sc` from its setup image with a crash armed at the k-th persist
// point of the operation (0: no crash); returns the media afterwards.
std::unique_ptr<Filesystem> RunOp(const Scenario& sc, const std::vector<char>& start, uint64_t k,
                                  SimMedia** raw) {
  auto fs = MountImage(start, raw);
  if (k) (*raw)->ArmCrash(k);
  sc.op(*fs);
  return fs;
}

// The offline checker's errors on `m` ("" if none).
std::string FsckErrors(SimMedia& m) {
  auto report = check::CheckPool(m, check::CheckOptions{});
  if (!report.ok()) return report.status().ToString();
  std::string errors;
  for (const auto& f : report->findings)
    if (f.kind != check::Finding::kNote) errors += f.ToString() + "\n";
  return errors;
}

// The type of the intent recorded in inode slot 0 of a pool (0: none).
uint32_t PendingIntent(const char* pool) {
  layout::Superblock sb;
  std::memcpy(&sb, pool, sizeof(sb));
  layout::Intent it;
  std::memcpy(&it, pool + sb.inode_start * kBlockSize, sizeof(it));
  return it.type;
}

// What a recovered image may show.
struct Expect {
  std::string before, after;            // State()
  std::string file_before, file_after;  // Scenario::bytewise's contents
};

// Observe's lines except the one of `path`.
std::string Without(const std::string& state, const std::string& path) {
  std::string out;
  for (size_t b = 0; b < state.size();) {
    size_t e = state.find('\n', b);
    e = e == std::string::npos ? state.size() : e + 1;
    if (state.compare(b, path.size() + 1, path + " ") != 0) out.append(state, b, e - b);
    b = e;
  }
  return out;
}

// "" if `got` is each byte old or new with the old or the new size.
std::string Bytewise(const std::string& got, const std::string& old, const std::string& neu) {
  if (got.size() != old.size() && got.size() != neu.size())
    return "size " + std::to_string(got.size()) + ", neither " + std::to_string(old.size()) +
           " nor " + std::to_string(neu.size());
  auto at = [](const std::string& v, size_t i) { return i < v.size() ? v[i] : '\0'; };
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != at(old, i) && got[i] != at(neu, i))
      return "byte " + std::to_string(i) + " is neither old nor new";
  return {};
}

// Returns "" if `image` passes the offline checker (which sees the image as
// the daemon would find it, a pending intent included), mounts, shows exactly
// `before` or `after`, and passes the checker again once the mount has
// recovered it; else what is wrong.
std::string Recovered(const std::vector<char>& image, const Scenario& sc, const Expect& x,
                      bool fsck_after = true) {
  const std::string &before = x.before, &after = x.after;
  {
    auto m = SimMedia::FromImage(image);
    if (std::string e = FsckErrors(*m); !e.empty()) return "fsck of the crash image:\n" + e;
  }
  // The mount replays the journal, rolls an intent forward and cross-checks
  // every block's refcount against the references to it.
  auto media = SimMedia::FromImage(image);
  SimMedia* raw = media.get();
  auto fs = Filesystem::Mount(std::move(media), MountOptions{});
  if (!fs.ok()) return "mount: " + fs.status().ToString();
  const std::string now = State(**fs, sc);
  if (sc.invisible) {
    const std::string seen = Observe(**fs), want = before.substr(0, before.find("--\n"));
    if (seen != want)
      return "recovered contents differ from the unchanged ones:\n" + seen + "\nexpected:\n" + want;
  } else if (sc.bytewise && now != before && now != after) {
    const std::string rest = Without(now, sc.bytewise);
    if (rest != Without(before, sc.bytewise) && rest != Without(after, sc.bytewise))
      return "recovered state (but for " + std::string(sc.bytewise) +
             ") is neither before nor after:\n" + now + "\nbefore:\n" + before + "\nafter:\n" +
             after;
    if (std::string e = Bytewise(ReadAll(**fs, At(**fs, sc.bytewise)), x.file_before, x.file_after);
        !e.empty())
      return std::string(sc.bytewise) + ": " + e;
  } else if (now != before && now != after) {
    return "recovered state is neither before nor after:\n" + now + "\nbefore:\n" + before +
           "\nafter:\n" + after;
  }
  if (PendingIntent(raw->base()) != 0) return "the mount left the intent in slot 0";
  // The checker reads the pool the idle engine still holds (without copying
  // it once more: every image is a whole pool).
  (*fs)->Unmount();
  if (!fsck_after) return {};
  if (std::string e = FsckErrors(*raw); !e.empty()) return "fsck after the recovery:\n" + e;
  return {};
}

// The pool a mount of `image` leaves when it crashes at its j-th persist
// point (the roll-forward of an intent, orphan reclaim, ...).
std::vector<char> CrashedRecovery(const std::vector<char>& image, uint64_t j, uint64_t seed) {
  auto m = SimMedia::FromImage(image);
  SimMedia* raw = m.get();
  raw->ArmCrash(j);
  auto fs = Filesystem::Mount(std::move(m), MountOptions{});
  REQUIRE_MESSAGE(fs.ok(), fs.status().ToString());
  return raw->CrashImage(seed, seed != 0);
}

uint64_t RecoveryPoints(const std::vector<char>& image) {
  auto m = SimMedia::FromImage(image);
  SimMedia* raw = m.get();
  auto fs = Filesystem::Mount(std::move(m), MountOptions{});
  REQUIRE_MESSAGE(fs.ok(), fs.status().ToString());
  return raw->persist_points();
}

// Crash images per persist point: the scenario's own seeds, or fewer when
// LEASEFS_CRASH_SIM_SEEDS=N (N >= 1) asks for a smaller budget. ./dev test
// sets 2 for its sanitizer build, where every image costs ten times as much;
// its plain build runs every seed (docs/ci.md).
uint64_t ImagesPerPoint(const Scenario& sc) {
  const char* v = std::getenv("LEASEFS_CRASH_SIM_SEEDS");
  if (!v || !*v) return sc.seeds;
  const uint64_t n = std::strtoull(v, nullptr, 10);
  REQUIRE_MESSAGE(n >= 1, "LEASEFS_CRASH_SIM_SEEDS must be a number >= 1");
  return std::min(n, sc.seeds);
}

// The seed of the i-th of `images` crash images at persist point k. Seed 0
// (only what was drained) runs at every point; with fewer images than seeds,
// the torn seeds take turns from one point to the next, so that each of them
// still runs at some points.
uint64_t ImageSeed(const Scenario& sc, uint64_t images, uint64_t k, uint64_t i) {
  if (i == 0 || images >= sc.seeds) return i;
  return 1 + ((k - 1) * (images - 1) + (i - 1)) % (sc.seeds - 1);
}

// Runs one scenario; stops at its first failure, which it reports.
void RunScenario(const Scenario& sc) {
  CAPTURE(std::string(sc.name));
  const auto t0 = std::chrono::steady_clock::now();
  SimMedia* raw;
  auto fs = MustMount(FormattedPool(sc.pool_bytes, sc.format), &raw);
  sc.setup(*fs);
  fs->Unmount();
  std::vector<char> start = raw->Snapshot();
  fs.reset();
  if (sc.edit_image) sc.edit_image(start);
  Expect x;
  {
    auto first = MountImage(start);
    x.before = State(*first, sc);
    if (sc.bytewise) x.file_before = ReadAll(*first, At(*first, sc.bytewise));
  }
  const std::string& before = x.before;

  // The operation without a crash: its end state and persist points.
  fs = MountImage(start, &raw);
  const uint64_t p0 = raw->persist_points();
  const std::string observed_before = Observe(*fs);
  sc.op(*fs);
  const uint64_t points = raw->persist_points() - p0;
  x.after = State(*fs, sc);
  if (sc.bytewise) x.file_after = ReadAll(*fs, At(*fs, sc.bytewise));
  const std::string& after = x.after;
  if (sc.invisible) {
    REQUIRE_MESSAGE(Observe(*fs) == observed_before, "the operation must not change the contents");
    REQUIRE_MESSAGE(before != after, "the operation must change the block map");
  } else {
    REQUIRE_MESSAGE(before != after, "the operation must change something visible");
  }
  REQUIRE(points > 0);
  REQUIRE_MESSAGE(points >= sc.min_points, std::string(sc.name)
                                               << ": only " << points << " persist points");
  fs.reset();

  const uint64_t images = ImagesPerPoint(sc);
  uint64_t recrashes = 0, intents = 0;
  std::string first_failure, failures;  // the first in full, then every (k, seed)
  auto failed = [&](const std::string& where, const std::string& err) {
    if (first_failure.empty()) first_failure = where + ": " + err;
    failures += " " + where;
  };
  for (uint64_t k = 1; k <= points; ++k) {
    fs = RunOp(sc, start, k, &raw);
    REQUIRE(raw->crashed());
    for (uint64_t i = 0; i < images; ++i) {
      const uint64_t seed = ImageSeed(sc, images, k, i);
      const std::vector<char> image = raw->CrashImage(seed, seed != 0);
      intents += PendingIntent(image.data()) != 0;
      // (The torn images go through the same roll-forward: the checker
      // looks at the pool it leaves for the first only.)
      if (std::string err = Recovered(image, sc, x, seed == 0); !err.empty()) {
        failed("k=" + std::to_string(k) + "/seed=" + std::to_string(seed), err);
        continue;
      }
      // A crash in the roll-forward itself, for a few crash points: every
      // drained step of the recovery must be recoverable in turn.
      if (!sc.recrash || seed != 0 || k != points / 2) continue;
      const uint64_t rpoints = RecoveryPoints(image);
      for (uint64_t j = 1; j <= rpoints; ++j) {
        for (uint64_t rs = 0; rs < images; ++rs) {
          const std::vector<char> again = CrashedRecovery(image, j, rs);
          if (std::string err = Recovered(again, sc, x); !err.empty())
            failed("k=" + std::to_string(k) + "/recovery point " + std::to_string(j) + " of " +
                       std::to_string(rpoints) + "/seed=" + std::to_string(rs),
                   err);
        }
        ++recrashes;
      }
    }
    fs.reset();
  }
  if (!failures.empty()) {
    FAIL_CHECK(std::string(sc.name) << " (" << points << " persist points): crashes at" << failures
                                    << " do not recover; the first: " << first_failure);
    return;
  }
  if (sc.recrash)
    CHECK_MESSAGE(intents > 0, std::string(sc.name)
                                   << ": no crash left an intent for the mount to finish");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(std::string(sc.name)
          << ": " << points << " persist points, all recovered in " << secs << " s"
          << (images < sc.seeds ? " (" + std::to_string(images) + " of " +
                                      std::to_string(sc.seeds) + " crash images per point)"
                                : std::string())
          << (intents ? ", " + std::to_string(intents) + " with a pending intent" : std::string())
          << (recrashes ? " (and " + std::to_string(recrashes) + " crashes of a recovery)"
                        : std::string()));
}

TEST_SUITE("crash") {
  TEST_CASE("Crash simulator: every operation is all or nothing at every persist point") {
    for (const Scenario& sc : Scenarios()) RunScenario(sc);
  }

  TEST_CASE("Crash simulator: every block-map operation is all or nothing at every persist point") {
    for (const Scenario& sc : BlockMapScenarios()) RunScenario(sc);
  }

  // The upgrade of a version-2 pool by its first writable mount (the marks
  // in both copies, then the version word, backup then primary): a crash at
  // any of its persist points leaves a pool that mounts, checks clean and
  // holds the same tree, of version 2 or 3; the next mount finishes it.
  TEST_CASE("Crash simulator: the upgrade of a version-2 pool is all or nothing") {
    SimMedia* raw = nullptr;
    FormatOptions whole;  // version 2 initialized both tables whole
    whole.init_inodes = uint64_t{1} << 40;
    whole.init_data_bytes = uint64_t{1} << 50;
    auto fs = MustMount(FormattedPool(8 << 20, whole), &raw);
    BaseTree(*fs);
    const std::string tree = Observe(*fs);
    fs->Unmount();
    std::vector<char> v2 = raw->Snapshot();
    fs.reset();
    for (uint64_t copy : {0, 1}) {
      auto* sb = reinterpret_cast<layout::Superblock*>(v2.data() + copy * kBlockSize);
      sb->version = layout::kFormatVersionV2;
      sb->inode_mark = sb->refcount_mark = 0;  // reserved bytes in version 2
      sb->checksum = SuperblockChecksum(*sb);
    }
    auto version = [](const std::vector<char>& img, uint64_t copy) {
      return reinterpret_cast<const layout::Superblock*>(img.data() + copy * kBlockSize)->version;
    };
    uint64_t points = 0;
    {
      auto m = SimMedia::FromImage(v2);
      SimMedia* r = m.get();
      MountReport report;
      auto up = Filesystem::Mount(std::move(m), MountOptions{}, &report);
      REQUIRE(up.ok());
      CHECK(report.upgraded);
      points = r->persist_points();
    }
    // The marks, the backup, the primary, the state word.
    REQUIRE(points == 4);
    uint64_t upgraded = 0;
    for (uint64_t k = 1; k <= points; ++k) {
      for (uint64_t seed = 0; seed < 4; ++seed) {
        CAPTURE(k);
        CAPTURE(seed);
        auto m = SimMedia::FromImage(v2);
        SimMedia* r = m.get();
        r->ArmCrash(k);
        auto crashing = Filesystem::Mount(std::move(m), MountOptions{});  // owns *r
        REQUIRE(crashing.ok());
        const std::vector<char> image = r->CrashImage(seed, seed != 0);
        upgraded += version(image, 1) == layout::kFormatVersion;
        {
          auto img = SimMedia::FromImage(image);
          CHECK(FsckErrors(*img) == "");
        }
        {
          // A read-only mount reads every one of these states too.
          MountOptions ro;
          ro.read_only = true;
          auto f = Filesystem::Mount(SimMedia::FromImage(image), ro);
          REQUIRE_MESSAGE(f.ok(), f.status().ToString());
          CHECK(Observe(**f) == tree);
        }
        SimMedia* after = nullptr;
        MountReport report;
        auto again = MustMount(SimMedia::FromImage(image), &after, &report);
        CHECK(Observe(*again) == tree);
        CHECK(version(after->Snapshot(), 0) == layout::kFormatVersion);
        CHECK(version(after->Snapshot(), 1) == layout::kFormatVersion);
        // An 8 MiB pool's tables are smaller than what mkfs initializes.
        CHECK(again->TableMarks() == Marks{512, 2});
        again->Unmount();
        CHECK(FsckErrors(*after) == "");
      }
    }
    CHECK(upgraded > 0);
  }
}

}  // namespace
}  // namespace leasefs::engine
