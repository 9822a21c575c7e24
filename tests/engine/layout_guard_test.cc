// The layout guard as the engine asks it (engine/layout_guard.h): which calls
// ask, with exactly which change and whose open file; that a refusal of any
// step of any call leaves every file as it was (bytes, block map, size, mode,
// times, xattrs, free space); and that WouldAllocate says what the write then
// reports.
#include <fcntl.h>

#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <linux/falloc.h>

#include "engine/filesystem.h"
#include "engine/layout.h"
#include "engine/layout_guard.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using Kind = LayoutChangeKind;
using layout::kMaxFileSize;

constexpr uint64_t B = layout::kBlockSize;
constexpr uint64_t kToEnd = LayoutChange::kToEnd;
constexpr uint64_t kOpenFile = 42;  // the open file every call below comes through

// Records every question with the open file of the Cred it came with, and
// answers `answer` to question number `refuse_at` (from 0), OK to the others
// (and to all when `answer` is 0).
class RecordingGuard final : public LayoutGuard {
 public:
  struct Asked {
    LayoutChange change;
    uint64_t open_file;
  };

  Status MayChange(const Cred& by, const LayoutChange& change) override {
    asked.push_back({change, by.open_file()});
    if (answer != 0 && asked.size() == refuse_at + 1) return Status::Error(answer, "test guard");
    return Status::Ok();
  }

  std::vector<Asked> asked;
  int answer = 0;
  size_t refuse_at = 0;
};

// A user who owns none of the files below, calling through open file 42.
Cred User() {
  Cred c(1000, 1000);
  c.set_open_file(kOpenFile);
  return c;
}

std::string Pattern(size_t n, char seed) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7) % 61);
  return s;
}

std::string Describe(const LayoutChange& c) {
  std::ostringstream o;
  o << "ino " << c.ino << " " << ToString(c.kind) << " [" << c.offset << ", ";
  if (c.length == kToEnd) {
    o << "end)";
  } else {
    o << "+" << c.length << ")";
  }
  o << " size " << c.old_size << (c.size_changes ? " -> " : " == ") << c.new_size;
  return o.str();
}

// A change as the engine should report it; the size changes iff the two
// sizes differ (when it does not, both are the current size).
LayoutChange Want(Ino ino, Kind kind, uint64_t off, uint64_t len, uint64_t old_size,
                  uint64_t new_size) {
  LayoutChange c;
  c.ino = ino;
  c.kind = kind;
  c.offset = off;
  c.length = len;
  c.size_changes = old_size != new_size;
  c.old_size = old_size;
  c.new_size = new_size;
  return c;
}

// Every question asked, one line each, with the open file it came through.
std::string AskedLines(const RecordingGuard& g) {
  std::string s;
  for (const auto& a : g.asked) s += Describe(a.change) + " by " + std::to_string(a.open_file) + "\n";
  return s;
}

std::string WantLines(const std::vector<LayoutChange>& want, uint64_t open_file = kOpenFile) {
  std::string s;
  for (const auto& c : want) s += Describe(c) + " by " + std::to_string(open_file) + "\n";
  return s;
}

Result<size_t> WriteAs(Filesystem& fs, const Cred& c, Ino ino, uint64_t off,
                       const std::string& data) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  return fs.Write(c, ino, off, &iov, 1);
}

uint64_t SizeOf(Filesystem& fs, Ino ino) {
  auto e = fs.GetAttr(ino);
  REQUIRE(e.ok());
  return static_cast<uint64_t>(e->attr.st_size);
}

// Everything a refused call must leave as it was, of one file.
struct FileState {
  std::string meta;   // size, blocks, mode, times, xattrs, block map
  std::string bytes;  // the contents
  bool operator==(const FileState&) const = default;
};

FileState Capture(Filesystem& fs, Ino ino) {
  FileState st;
  auto e = fs.GetAttr(ino);
  REQUIRE(e.ok());
  const struct stat& a = e->attr;
  std::ostringstream o;
  o << "size " << a.st_size << " blocks " << a.st_blocks << " mode " << std::oct << a.st_mode
    << std::dec << " mtime " << a.st_mtim.tv_sec << "." << a.st_mtim.tv_nsec << " ctime "
    << a.st_ctim.tv_sec << "." << a.st_ctim.tv_nsec << "\n";
  auto names = fs.ListXattr(kRoot, ino);
  REQUIRE(names.ok());
  for (size_t at = 0; at < names->size();) {
    const std::string name = names->substr(at, names->find('\0', at) - at);
    auto v = fs.GetXattr(kRoot, ino, name);
    REQUIRE(v.ok());
    o << "xattr " << name << "=" << *v << "\n";
    at += name.size() + 1;
  }
  auto map = fs.BlockMap(ino, 0, 1000);
  REQUIRE(map.ok());
  for (const auto& r : map->runs)
    o << "run " << r.file_block << " " << r.pool_block << " " << r.length << " " << r.flags << " "
      << r.refcount << "\n";
  st.meta = o.str();
  st.bytes = ReadAll(fs, ino);
  return st;
}

// The files of one test:
//   v: the victim, root's, mode 06777 (so that the user may change it and
//      would drop setuid and setgid), with security.capability and a user
//      xattr; blocks 0, 1, 2 and 5 written, each its own extent, block 2
//      shared with s, block 3 a hole, block 4 unwritten; 5 * B + 100 bytes.
//   s: 4 blocks, block 0 shared with v's block 2.
//   d: a donor for move-extents, 3 written blocks, with security.capability.
struct World {
  RecordingGuard guard;
  std::unique_ptr<Filesystem> fs = MustMount(FormattedPool(8 << 20));
  Ino v = 0, s = 0, d = 0;

  World() {
    Filesystem& f = *fs;
    v = MustCreate(f, 1, "v", 06777);
    const Ino spacer = MustCreate(f, 1, "spacer");
    for (uint64_t b : {0, 1, 2, 5}) {
      MustWrite(f, v, b * B, Pattern(b == 5 ? 100 : B, static_cast<char>('a' + b)));
      MustWrite(f, spacer, b * B, std::string(B, 's'));
    }
    REQUIRE(f.Fallocate(kRoot, v, FALLOC_FL_KEEP_SIZE, 4 * B, B).ok());
    s = MustCreate(f, 1, "s", 0666);
    MustWrite(f, s, 0, Pattern(4 * B, 'S'));
    REQUIRE(f.CloneRange(kRoot, v, 2 * B, s, 0, B).ok());
    d = MustCreate(f, 1, "d", 0666);
    MustWrite(f, d, 0, Pattern(3 * B, 'D'));
    for (Ino ino : {v, d})
      REQUIRE(f.SetXattr(kRoot, ino, "security.capability", "cap", 0).ok());
    REQUIRE(f.SetXattr(kRoot, v, "user.note", "kept", 0).ok());
    REQUIRE(SizeOf(f, v) == 5 * B + 100);
    f.SetLayoutGuard(&guard);
  }

  // Every file, and the pool's free blocks.
  std::vector<FileState> CaptureAll() {
    std::vector<FileState> all;
    for (Ino ino : {v, s, d}) all.push_back(Capture(*fs, ino));
    all.push_back({"free " + std::to_string(fs->StatFs().f_bfree), ""});
    return all;
  }
};

using Call = std::function<Status(World&, const Cred&)>;

struct Case {
  const char* name;
  Call call;
  // The questions it asks, in order, of a fresh World.
  std::function<std::vector<LayoutChange>(const World&)> want;
};

constexpr uint64_t V = 5 * B + 100;  // v's size
constexpr Kind kUnmap = Kind::kUnmap, kAlloc = Kind::kAllocatingWrite, kOver = Kind::kOverwrite;

// Every layout-changing call, made by the user through open file 42, with
// what it must ask.
std::vector<Case> Cases() {
  auto write = [](uint64_t off, size_t n) -> Call {
    return [=](World& w, const Cred& c) {
      return WriteAs(*w.fs, c, w.v, off, std::string(n, 'w')).status();
    };
  };
  auto truncate = [](uint64_t size, unsigned also) -> Call {
    return [=](World& w, const Cred& c) {
      SetAttrArgs a;
      a.valid = SetAttrArgs::kSize | also;
      a.size = size;
      return w.fs->SetAttr(c, w.v, a).status();
    };
  };
  auto falloc = [](int mode, uint64_t off, uint64_t len) -> Call {
    return [=](World& w, const Cred& c) { return w.fs->Fallocate(c, w.v, mode, off, len); };
  };
  auto copy = [](uint64_t src_off, uint64_t dst_off, uint64_t len) -> Call {
    return [=](World& w, const Cred& c) {
      return w.fs->CopyFileRange(c, w.s, src_off, w.v, dst_off, len).status();
    };
  };
  // v's change alone.
  auto on_v = [](Kind kind, uint64_t off, uint64_t len, uint64_t new_size) {
    return [=](const World& w) { return std::vector{Want(w.v, kind, off, len, V, new_size)}; };
  };
  // An allocating write of v: every block whose mapping may change, from
  // the block of the write (or of the old end of file, when the write
  // starts past it) to the end of the write's last block.
  auto alloc_v = [on_v](uint64_t off, uint64_t len, uint64_t new_size) {
    const uint64_t from = std::min<uint64_t>(off, V) / B * B;
    return on_v(kAlloc, from, (off + len + B - 1) / B * B - from, new_size);
  };
  return {
      {"overwrite", write(10, 3), on_v(kOver, 10, 3, V)},
      {"write into a hole", write(3 * B + 5, 10), alloc_v(3 * B + 5, 10, V)},
      {"write into an unwritten block", write(4 * B + 5, 10), on_v(kOver, 4 * B + 5, 10, V)},
      {"write into a shared block", write(2 * B + 5, 10), alloc_v(2 * B + 5, 10, V)},
      {"write at the end of file, in its last block", write(V, 10), alloc_v(V, 10, V + 10)},
      {"write past the end of file", write(9 * B, 10), alloc_v(9 * B, 10, 9 * B + 10)},
      {"truncate down", truncate(2 * B + 7, 0), on_v(kUnmap, 2 * B, kToEnd, 2 * B + 7)},
      {"truncate up", truncate(9 * B, 0), on_v(kUnmap, 5 * B, kToEnd, 9 * B)},
      {"truncate and touch", truncate(B, SetAttrArgs::kMtimeNow), on_v(kUnmap, B, kToEnd, B)},
      {"open with O_TRUNC",
       [](World& w, const Cred& c) { return w.fs->Open(c, w.v, O_WRONLY | O_TRUNC).status(); },
       on_v(kUnmap, 0, kToEnd, 0)},
      {"create with O_TRUNC",
       [](World& w, const Cred& c) {
         return w.fs->Create(c, 1, "v", 0644, O_WRONLY | O_CREAT | O_TRUNC).status();
       },
       on_v(kUnmap, 0, kToEnd, 0)},
      {"preallocate", falloc(0, 5 * B, 3 * B), on_v(kUnmap, 5 * B, 3 * B, 8 * B)},
      {"preallocate keeping the size", falloc(FALLOC_FL_KEEP_SIZE, 3 * B, 4 * B),
       on_v(kUnmap, 3 * B, 4 * B, V)},
      {"punch a hole", falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 2 * B),
       on_v(kUnmap, 0, 3 * B, V)},
      {"zero a range", falloc(FALLOC_FL_ZERO_RANGE, 100, 7 * B),
       on_v(kUnmap, 0, 8 * B, 7 * B + 100)},
      {"zero a range keeping the size", falloc(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 100, B),
       on_v(kUnmap, 0, 2 * B, V)},
      {"collapse a range", falloc(FALLOC_FL_COLLAPSE_RANGE, B, B), on_v(kUnmap, B, kToEnd, V - B)},
      {"insert a range", falloc(FALLOC_FL_INSERT_RANGE, B, 2 * B),
       on_v(kUnmap, B, kToEnd, V + 2 * B)},
      {"unshare", falloc(FALLOC_FL_UNSHARE_RANGE, 0, 8 * B), on_v(kUnmap, 0, 8 * B, 8 * B)},
      {"unshare keeping the size", falloc(FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE, 0, 8 * B),
       on_v(kUnmap, 0, 8 * B, V)},
      {"clone from v",
       [](World& w, const Cred& c) {
         return w.fs->CloneRange(c, w.v, 0, w.s, 6 * B, 2 * B).status();
       },
       [](const World& w) {
         return std::vector{Want(w.v, kUnmap, 0, 2 * B, V, V),
                            Want(w.s, kUnmap, 6 * B, 2 * B, 4 * B, 8 * B)};
       }},
      {"clone into v",
       [](World& w, const Cred& c) { return w.fs->CloneRange(c, w.s, B, w.v, 0, 2 * B).status(); },
       [](const World& w) {
         return std::vector{Want(w.s, kUnmap, B, 2 * B, 4 * B, 4 * B),
                            Want(w.v, kUnmap, 0, 2 * B, V, V)};
       }},
      {"clone within v",
       [](World& w, const Cred& c) { return w.fs->CloneRange(c, w.v, 0, w.v, 8 * B, B).status(); },
       [](const World& w) {
         return std::vector{Want(w.v, kUnmap, 0, B, V, V), Want(w.v, kUnmap, 8 * B, B, V, 9 * B)};
       }},
      {"copy_file_range by clone, with both edges", copy(100, 100, 2 * B + 200),
       [](const World& w) {
         return std::vector{Want(w.s, kUnmap, B, B, 4 * B, 4 * B),
                            Want(w.v, kAlloc, 100, B - 100, V, V), Want(w.v, kUnmap, B, B, V, V),
                            Want(w.v, kAlloc, 2 * B, 300, V, V)};
       }},
      {"copy_file_range by clone, growing the file", copy(100, 6 * B + 100, 2 * B),
       [](const World& w) {
         return std::vector{Want(w.s, kUnmap, B, B, 4 * B, 4 * B),
                            Want(w.v, kAlloc, 6 * B + 100, B - 100, V, V),
                            Want(w.v, kUnmap, 7 * B, B, V, V),
                            Want(w.v, kAlloc, 8 * B, 100, V, 8 * B + 100)};
       }},
      {"copy_file_range by clone, whole blocks only", copy(0, 8 * B, 4 * B),
       [](const World& w) {
         return std::vector{Want(w.s, kUnmap, 0, 4 * B, 4 * B, 4 * B),
                            Want(w.v, kUnmap, 8 * B, 4 * B, V, 12 * B)};
       }},
      {"copy_file_range by clone, one edge only", copy(100, 100, 50),
       on_v(kAlloc, 100, 50, V)},
      {"copy_file_range by write, filling a hole", copy(0, 10, 3 * B), alloc_v(10, 3 * B, V)},
      {"copy_file_range by write, over owned blocks", copy(0, 10, 100), on_v(kOver, 10, 100, V)},
      {"defrag", [](World& w, const Cred& c) { return w.fs->Defrag(c, w.v).status(); },
       [](const World& w) {
         return std::vector{Want(w.v, kUnmap, 0, 2 * B, V, V), Want(w.v, kUnmap, 4 * B, 2 * B, V, V)};
       }},
      {"move extents",
       [](World& w, const Cred& c) { return w.fs->MoveExtents(c, w.v, w.d, 0, 0, 2).status(); },
       [](const World& w) {
         return std::vector{Want(w.v, kUnmap, 0, 2 * B, V, V),
                            Want(w.d, kUnmap, 0, 2 * B, 3 * B, 3 * B)};
       }},
      {"move extents, cut at the end of file",
       [](World& w, const Cred& c) { return w.fs->MoveExtents(c, w.v, w.d, 5, 1, 10).status(); },
       [](const World& w) {
         return std::vector{Want(w.v, kUnmap, 5 * B, B, V, V),
                            Want(w.d, kUnmap, B, B, 3 * B, 3 * B)};
       }},
  };
}

TEST_SUITE("layout_guard") {
  TEST_CASE("LayoutGuard: every layout change asks exactly what it changes, then goes ahead") {
    for (const Case& k : Cases()) {
      CAPTURE(k.name);
      World w;
      const auto before = w.CaptureAll();
      const Status s = k.call(w, User());
      CHECK_MESSAGE(s.ok(), s.ToString());
      CHECK(AskedLines(w.guard) == WantLines(k.want(w)));
      CHECK(w.CaptureAll() != before);  // so the refusals below could show a change
    }
  }

  TEST_CASE("LayoutGuard: a refusal at any step leaves no trace and returns the guard's error") {
    for (const int answer : {ETXTBSY, ERESTART}) {
      for (const Case& k : Cases()) {
        // A defrag refused after its first piece keeps that piece moved (its
        // own test below); every other call asks everything up front.
        World probe;
        const size_t steps = std::string(k.name) == "defrag" ? 1 : k.want(probe).size();
        for (size_t at = 0; at < steps; ++at) {
          CAPTURE(k.name);
          CAPTURE(answer);
          CAPTURE(at);
          World w;
          w.guard.answer = answer;
          w.guard.refuse_at = at;
          const auto before = w.CaptureAll();
          const Status s = k.call(w, User());
          CHECK(s.err() == answer);
          CHECK(w.guard.asked.size() == at + 1);  // nothing asked after the refusal
          const auto after = w.CaptureAll();
          REQUIRE(after.size() == before.size());
          for (size_t i = 0; i < after.size(); ++i) {
            CAPTURE(i);
            CHECK(after[i].meta == before[i].meta);
            CHECK((after[i].bytes == before[i].bytes));
          }
        }
      }
    }
  }

  TEST_CASE("LayoutGuard: a refused write by a non-owner keeps setuid, setgid and the capability") {
    World w;
    w.guard.answer = EDEADLOCK;  // any error comes back unchanged
    CHECK(WriteAs(*w.fs, User(), w.v, 0, "x").status().err() == EDEADLOCK);
    auto e = w.fs->GetAttr(w.v);
    REQUIRE(e.ok());
    CHECK((e->attr.st_mode & 07777) == 06777);
    CHECK(w.fs->GetXattr(kRoot, w.v, "security.capability").ok());
    // Agreed to, the same write drops them.
    w.guard.answer = 0;
    CHECK(WriteAs(*w.fs, User(), w.v, 0, "x").ok());
    e = w.fs->GetAttr(w.v);
    REQUIRE(e.ok());
    CHECK((e->attr.st_mode & 07777) == 0777);
    CHECK(w.fs->GetXattr(kRoot, w.v, "security.capability").status().err() == ENODATA);
  }

  TEST_CASE("LayoutGuard: reads, opens, attributes, xattrs and the namespace ask nothing") {
    World w;
    Filesystem& fs = *w.fs;
    const Cred u = User();
    CHECK(ReadAll(fs, w.v).size() == 5 * B + 100);
    CHECK(fs.Open(u, w.v, O_RDWR).ok());
    CHECK(fs.Open(u, w.v, O_RDONLY).ok());
    CHECK(fs.Create(u, 1, "v", 0644, O_RDWR | O_CREAT).ok());
    SetAttrArgs a;
    a.valid = SetAttrArgs::kMode | SetAttrArgs::kUid | SetAttrArgs::kGid | SetAttrArgs::kAtime |
              SetAttrArgs::kMtime;
    a.mode = 0640;
    a.uid = 7;
    a.gid = 8;
    CHECK(fs.SetAttr(kRoot, w.s, a).ok());
    a.valid = SetAttrArgs::kSize;  // to the size it has
    a.size = 5 * B + 100;
    CHECK(fs.SetAttr(u, w.v, a).ok());
    CHECK(fs.SetXattr(kRoot, w.v, "user.x", "1", 0).ok());
    CHECK(fs.RemoveXattr(kRoot, w.v, "user.x").ok());
    CHECK(fs.GetXattr(kRoot, w.v, "user.note").ok());
    CHECK(fs.ListXattr(kRoot, w.v).ok());
    CHECK(WriteAs(fs, u, w.v, B, "").ok());  // zero bytes
    CHECK(fs.Lseek(w.v, 0, SEEK_HOLE).ok());
    CHECK(fs.BlockMap(w.v, 0, 100).ok());
    CHECK(fs.Fsync(w.v, false).ok());
    CHECK(fs.CloneRange(kRoot, w.v, 5 * B + 100, w.s, 0, 0).ok());  // nothing to clone
    CHECK(fs.CopyFileRange(kRoot, w.v, 6 * B, w.s, 0, B).ok());     // past the source's end
    CHECK(fs.WouldAllocate(w.v, 3 * B, 1));
    CHECK(fs.Link(kRoot, w.d, 1, "d2").ok());
    CHECK(fs.Unlink(kRoot, 1, "d2").ok());
    CHECK(fs.Rename(kRoot, 1, "d", 1, "d3", 0).ok());
    // Empty files truncated, and files freed, ask nothing either.
    const Ino e = MustCreate(fs, 1, "empty", 0666);
    CHECK(fs.Open(u, e, O_WRONLY | O_TRUNC).ok());
    CHECK(fs.Create(kRoot, 1, "new", 0644, O_RDWR | O_CREAT | O_TRUNC).ok());
    CHECK(fs.Rename(kRoot, 1, "s", 1, "d3", 0).ok());  // d3 (d) loses its last link
    fs.Forget(w.d, 2);  // and its references (create, link): freed
    CHECK(fs.GetAttr(w.d).status().err() == ENOENT);
    CHECK(fs.Mkdir(kRoot, 1, "dir", 0755).ok());
    CHECK(fs.Symlink(kRoot, 1, "link", "v").ok());
    CHECK(AskedLines(w.guard) == "");
  }

  TEST_CASE("LayoutGuard: without a guard, or after it is removed, nothing is asked") {
    World w;
    w.fs->SetLayoutGuard(nullptr);
    w.guard.answer = ETXTBSY;
    CHECK(WriteAs(*w.fs, User(), w.v, 3 * B, "x").ok());
    CHECK(w.fs->Fallocate(User(), w.v, FALLOC_FL_COLLAPSE_RANGE, B, B).ok());
    CHECK(w.guard.asked.empty());
  }

  TEST_CASE("LayoutGuard: the open file asked about is the Cred's") {
    World w;
    Cred by_path = Cred::Root();  // truncate(2): no open file
    SetAttrArgs a;
    a.valid = SetAttrArgs::kSize;
    a.size = 1;
    CHECK(w.fs->SetAttr(by_path, w.v, a).ok());
    Cred other(1000, 1000);
    other.set_open_file(7);
    CHECK(WriteAs(*w.fs, other, w.v, 0, "x").ok());
    CHECK(AskedLines(w.guard) == WantLines({Want(w.v, kUnmap, 0, kToEnd, V, 1)}, 0) +
                                     WantLines({Want(w.v, kOver, 0, 1, 1, 1)}, 7));
  }

  TEST_CASE("LayoutGuard: a call refused for its arguments asks nothing and drops nothing") {
    World w;
    const auto before = w.CaptureAll();
    CHECK(w.fs->Fallocate(User(), w.v, FALLOC_FL_COLLAPSE_RANGE, 100, B).err() == EINVAL);
    CHECK(w.fs->Fallocate(User(), w.v, FALLOC_FL_COLLAPSE_RANGE, B, 5 * B).err() == EINVAL);
    CHECK(w.fs->Fallocate(User(), w.v, FALLOC_FL_INSERT_RANGE, 6 * B, B).err() == EINVAL);
    CHECK(w.fs->Fallocate(User(), w.v, FALLOC_FL_INSERT_RANGE, 0, kMaxFileSize - B).err() ==
          EFBIG);
    CHECK(w.fs->Fallocate(User(), w.v, 0, 0, 0).err() == EINVAL);
    CHECK(w.fs->CloneRange(User(), w.s, 100, w.v, 0, B).status().err() == EINVAL);
    CHECK(w.fs->MoveExtents(User(), w.v, w.d, 9, 0, 1).status().err() == EINVAL);
    CHECK(WriteAs(*w.fs, User(), w.v, kMaxFileSize, "x").status().err() == EFBIG);
    CHECK(w.CaptureAll() == before);
    CHECK(AskedLines(w.guard) == "");
  }

  TEST_CASE("LayoutGuard: a write clamped at the size limit asks about the bytes it writes") {
    World w;
    const uint64_t off = kMaxFileSize - 10;
    auto n = WriteAs(*w.fs, User(), w.v, off, std::string(100, 'x'));
    REQUIRE(n.ok());
    CHECK(*n == 10);
    // The write's whole last block (the size limit is block-aligned).
    CHECK(AskedLines(w.guard) ==
          WantLines({Want(w.v, kAlloc, V / B * B, kMaxFileSize - V / B * B, V, kMaxFileSize)}));
  }

  TEST_CASE("LayoutGuard: copy_file_range by write asks once, however many writes it takes") {
    World w;
    Filesystem& fs = *w.fs;
    const Ino big = MustCreate(fs, 1, "big", 0666);
    const std::string data = Pattern(3 << 20, 'B');  // three of the copy's 1 MiB writes
    MustWrite(fs, big, 0, data);
    w.guard.asked.clear();
    auto n = fs.CopyFileRange(User(), big, 0, w.v, 10, data.size());
    REQUIRE(n.ok());
    CHECK(*n == data.size());
    CHECK(AskedLines(w.guard) ==
          WantLines({Want(w.v, kAlloc, 0, (data.size() + 10 + B - 1) / B * B, V,
                          data.size() + 10)}));
    CHECK((ReadAll(fs, w.v, 10, data.size()) == data));
  }

  TEST_CASE("LayoutGuard: a defrag refused at a later piece keeps the pieces it moved") {
    World w;
    Filesystem& fs = *w.fs;
    auto map_before = fs.BlockMap(w.v, 0, 100);
    REQUIRE(map_before.ok());
    const std::string bytes = ReadAll(fs, w.v);
    w.guard.answer = ERESTART;
    w.guard.refuse_at = 1;
    CHECK(fs.Defrag(User(), w.v).status().err() == ERESTART);
    CHECK(AskedLines(w.guard) == WantLines({Want(w.v, kUnmap, 0, 2 * B, V, V),
                                            Want(w.v, kUnmap, 4 * B, 2 * B, V, V)}));
    auto map_after = fs.BlockMap(w.v, 0, 100);
    REQUIRE(map_after.ok());
    // Blocks 0 and 1 are one run now; blocks 2 on are where they were.
    const auto& a = map_after->runs;
    const auto& b = map_before->runs;
    REQUIRE(b.size() == 5);
    REQUIRE(a.size() == 4);
    CHECK(a[0].file_block == 0);
    CHECK(a[0].length == 2);
    CHECK(a[0].pool_block != b[0].pool_block);
    CHECK(std::vector(a.begin() + 1, a.end()) == std::vector(b.begin() + 2, b.end()));
    CHECK((ReadAll(fs, w.v) == bytes));
    // Asked again with the guard agreeing, it goes on with the rest.
    w.guard = RecordingGuard();
    REQUIRE(fs.Defrag(User(), w.v).ok());
    CHECK(AskedLines(w.guard) == WantLines({Want(w.v, kUnmap, 4 * B, 2 * B, V, V)}));
  }

  TEST_CASE("WouldAllocate: says what the write then reports") {
    World w;
    Filesystem& fs = *w.fs;
    struct Probe {
      const char* what;
      uint64_t off, len;
      bool allocates;
    };
    const Probe probes[] = {
        {"a hole", 3 * B + 5, 10, true},
        {"an unwritten block", 4 * B, B, false},
        {"a written block", 10, 100, false},
        {"written blocks, whole", 0, 2 * B, false},
        {"a block shared by a clone", 2 * B + 1, 1, true},
        {"written blocks and a shared one", B, 2 * B, true},
        {"the end of file, inside the last block", V, 1, true},
        {"the last byte", V - 1, 1, false},
        {"past the end of file", 7 * B, 1, true},
    };
    for (const Probe& p : probes) {
      CAPTURE(p.what);
      World fresh;
      CHECK(fresh.fs->WouldAllocate(fresh.v, p.off, p.len) == p.allocates);
      REQUIRE(WriteAs(*fresh.fs, User(), fresh.v, p.off, std::string(p.len, 'p')).ok());
      REQUIRE(fresh.guard.asked.size() == 1);
      CHECK(fresh.guard.asked[0].change.kind == (p.allocates ? kAlloc : kOver));
    }
    // Once written, a hole or shared block is the file's own: no longer.
    REQUIRE(WriteAs(fs, User(), w.v, 2 * B, std::string(2 * B, 'o')).ok());
    CHECK_FALSE(fs.WouldAllocate(w.v, 2 * B, 2 * B));
    // Errors: the write would fail, so it would allocate nothing.
    CHECK_FALSE(fs.WouldAllocate(9999, 0, 1));                  // ENOENT
    CHECK_FALSE(fs.WouldAllocate(1, 0, 1));                     // EISDIR
    CHECK_FALSE(fs.WouldAllocate(w.v, kMaxFileSize, 1));        // EFBIG
    CHECK_FALSE(fs.WouldAllocate(w.v, 3 * B, 0));               // no bytes
    auto link = fs.Symlink(kRoot, 1, "l", "v");
    REQUIRE(link.ok());
    CHECK_FALSE(fs.WouldAllocate(link->attr.st_ino, 0, 1));     // EINVAL
    // At the size limit it asks about the bytes the write would write.
    CHECK(fs.WouldAllocate(w.v, kMaxFileSize - 1, 100));
  }

  TEST_CASE("WouldAllocate: false on a read-only mount") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(8 << 20), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    fs->Unmount();
    const std::vector<char> image = raw->Snapshot();
    fs.reset();
    MountOptions ro;
    ro.read_only = true;
    auto mounted = Filesystem::Mount(SimMedia::FromImage(image), ro);
    REQUIRE(mounted.ok());
    CHECK_FALSE((*mounted)->WouldAllocate(f, 0, 1));
  }

  TEST_CASE("LayoutGuard: the kinds' names") {
    CHECK(std::string(ToString(Kind::kUnmap)) == "unmap");
    CHECK(std::string(ToString(Kind::kAllocatingWrite)) == "allocating-write");
    CHECK(std::string(ToString(Kind::kOverwrite)) == "overwrite");
  }
}

}  // namespace
}  // namespace leasefs::engine
