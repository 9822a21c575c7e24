// Attribute flags in the engine (docs/attr-flags.md): who may set which,
// what they are stored as, the feature bit they need, and every operation
// an immutable or append-only inode refuses, with its exact errno. The
// mounted tests (tests/fuse/attr_flags_test.cc) do the same through the
// kernel; here the calls the kernel would refuse first reach the engine too.
#include <fcntl.h>

#include <cstring>
#include <string>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include "engine/layout.h"
#include "engine/layout_guard.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;

constexpr uint32_t kImmutable = FS_IMMUTABLE_FL;
constexpr uint32_t kAppend = FS_APPEND_FL;

int Err(const Status& s) { return s.err(); }
template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

const Cred kUser(1000, 1000);

Result<size_t> Write(Filesystem& fs, Ino ino, uint64_t off, const std::string& data,
                     bool append = false, const Cred& c = kRoot) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  return fs.Write(c, ino, off, &iov, 1, append);
}

SetAttrArgs Args(unsigned valid) {
  SetAttrArgs a;
  a.valid = valid;
  a.mode = 0600;
  a.size = 1;
  a.atime_ns = a.mtime_ns = 1;
  return a;
}

// Answers every question with `answer` and counts them.
class FixedGuard final : public LayoutGuard {
 public:
  Status MayChange(const Cred&, const LayoutChange& change) override {
    ++asked;
    last = change;
    return answer == 0 ? Status::Ok() : Status::Error(answer, "test guard");
  }
  int answer = 0;
  int asked = 0;
  LayoutChange last;
};

uint64_t RoCompat(const std::vector<char>& image) {
  layout::Superblock sb;
  std::memcpy(&sb, image.data(), sizeof(sb));
  return sb.feature_ro_compat;
}

TEST_SUITE("attr_flags") {
  TEST_CASE("Attribute flags: set, read back, kept across a remount, with the feature bit") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    const Ino d = MustMkdir(*fs, 1, "d");
    CHECK(RoCompat(raw->Snapshot()) == 0);
    CHECK(*fs->GetAttrFlags(f) == 0u);
    REQUIRE(fs->SetAttrFlags(kRoot, f,
                             kImmutable | kAppend | FS_NODUMP_FL | FS_NOATIME_FL | FS_SYNC_FL, true)
                .ok());
    REQUIRE(fs->SetAttrFlags(kRoot, d, FS_DIRSYNC_FL | FS_NODUMP_FL, true).ok());
    CHECK(RoCompat(raw->Snapshot()) == layout::kRoCompatAttrFlags);
    CHECK(fs->GetAttr(f)->attr_flags ==
          (kImmutable | kAppend | FS_NODUMP_FL | FS_NOATIME_FL | FS_SYNC_FL));
    fs->Unmount();
    const std::vector<char> image = raw->Snapshot();
    fs.reset();
    // Both superblock copies carry the bit.
    layout::Superblock backup;
    std::memcpy(&backup, image.data() + kBlockSize, sizeof(backup));
    CHECK(backup.feature_ro_compat == layout::kRoCompatAttrFlags);
    auto again = MountImage(image);
    CHECK(*again->GetAttrFlags(f) ==
          (kImmutable | kAppend | FS_NODUMP_FL | FS_NOATIME_FL | FS_SYNC_FL));
    CHECK(*again->GetAttrFlags(d) == (FS_DIRSYNC_FL | FS_NODUMP_FL));
  }

  TEST_CASE("Attribute flags: who may set which, and the flags leasefs does not keep") {
    auto fs = MustMount(FormattedPool());
    const Ino mine = MustCreate(*fs, 1, "mine");
    SetAttrArgs own;
    own.valid = SetAttrArgs::kUid | SetAttrArgs::kGid;
    own.uid = own.gid = 1000;
    REQUIRE(fs->SetAttr(kRoot, mine, own).ok());
    const Ino roots = MustCreate(*fs, 1, "roots");
    // The owner may set nodump and noatime on its own file, not on another's.
    CHECK(fs->SetAttrFlags(kUser, mine, FS_NODUMP_FL, false).ok());
    CHECK(Err(fs->SetAttrFlags(kUser, roots, FS_NODUMP_FL, false)) == EPERM);
    // Immutable and append-only need CAP_LINUX_IMMUTABLE, either way, for
    // root too.
    CHECK(Err(fs->SetAttrFlags(kUser, mine, FS_NODUMP_FL | kImmutable, false)) == EPERM);
    CHECK(Err(fs->SetAttrFlags(kRoot, roots, kAppend, false)) == EPERM);
    REQUIRE(fs->SetAttrFlags(kRoot, mine, FS_NODUMP_FL | kImmutable, true).ok());
    CHECK(Err(fs->SetAttrFlags(kUser, mine, FS_NODUMP_FL, false)) == EPERM);
    // While it stays immutable, no other flag changes (ext4's rule).
    CHECK(Err(fs->SetAttrFlags(kRoot, mine, kImmutable, true)) == EPERM);
    CHECK(*fs->GetAttrFlags(mine) == (FS_NODUMP_FL | kImmutable));
    // Unknown flags, and dirsync on a file: EOPNOTSUPP.
    CHECK(Err(fs->SetAttrFlags(kRoot, roots, FS_COMPR_FL, true)) == EOPNOTSUPP);
    CHECK(Err(fs->SetAttrFlags(kRoot, roots, FS_DIRSYNC_FL, true)) == EOPNOTSUPP);
    CHECK(Err(fs->SetAttrFlags(kRoot, roots, 0x80000000u, true)) == EOPNOTSUPP);
    // Only regular files and directories carry flags.
    auto fifo = fs->Mknod(kRoot, 1, "fifo", S_IFIFO | 0644, 0);
    REQUIRE(fifo.ok());
    CHECK(Err(fs->SetAttrFlags(kRoot, fifo->attr.st_ino, FS_NODUMP_FL, true)) == ENOTTY);
    CHECK(Err(fs->SetAttrFlags(kRoot, 999, FS_NODUMP_FL, true)) == ENOENT);
  }

  TEST_CASE("Attribute flags: an immutable file refuses every change, with EPERM") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    const Ino other = MustCreate(*fs, 1, "other");
    MustWrite(*fs, f, 0, std::string(2 * kBlockSize, 'x'));
    MustWrite(*fs, other, 0, std::string(2 * kBlockSize, 'o'));
    REQUIRE(fs->SetXattr(kRoot, f, "user.a", "1", 0).ok());
    REQUIRE(fs->SetAttrFlags(kRoot, f, kImmutable, true).ok());
    using A = SetAttrArgs;
    CHECK(Err(Write(*fs, f, 0, "y")) == EPERM);
    CHECK(Err(Write(*fs, f, 2 * kBlockSize, "y", true)) == EPERM);
    CHECK(Err(Write(*fs, f, 0, "")) == EPERM);
    CHECK(Err(fs->Open(kRoot, f, O_WRONLY)) == EPERM);
    CHECK(Err(fs->Open(kRoot, f, O_RDWR)) == EPERM);
    CHECK(Err(fs->Open(kRoot, f, O_RDONLY | O_TRUNC)) == EPERM);
    CHECK(fs->Open(kRoot, f, O_RDONLY).ok());
    CHECK(Err(fs->Access(kRoot, f, W_OK)) == EPERM);
    CHECK(fs->Access(kRoot, f, R_OK).ok());
    for (unsigned v :
         {unsigned{A::kSize}, unsigned{A::kMode}, unsigned{A::kUid}, unsigned{A::kGid},
          unsigned{A::kAtime}, unsigned{A::kMtime}, unsigned{A::kAtimeNow | A::kMtimeNow}})
      CHECK_MESSAGE(Err(fs->SetAttr(kRoot, f, Args(v))) == EPERM, "setattr valid " << v);
    CHECK(Err(fs->SetXattr(kRoot, f, "user.b", "2", 0)) == EPERM);
    CHECK(Err(fs->RemoveXattr(kRoot, f, "user.a")) == EPERM);
    CHECK(Err(fs->RemovePrivs(kRoot, f)) == EPERM);
    for (int mode :
         {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
          FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE})
      CHECK_MESSAGE(Err(fs->Fallocate(kRoot, f, mode, 0, kBlockSize)) == EPERM, "mode " << mode);
    CHECK(Err(fs->CloneRange(kRoot, other, 0, f, 0, kBlockSize)) == EPERM);
    CHECK(Err(fs->CopyFileRange(kRoot, other, 0, f, 0, 10)) == EPERM);
    CHECK(Err(fs->Defrag(kRoot, f)) == EPERM);
    CHECK(Err(fs->MoveExtents(kRoot, f, other, 0, 0, 1)) == EPERM);
    CHECK(Err(fs->MoveExtents(kRoot, other, f, 0, 0, 1)) == EPERM);
    CHECK(Err(fs->MapForDax(kRoot, f, 0, kBlockSize, /*writable=*/true, 7, {4242, 1, 1}, 8)) ==
          EPERM);
    CHECK(fs->MapForDax(kRoot, f, 0, kBlockSize, /*writable=*/false, 8, {4242, 1, 1}, 8).ok());
    // Its names stay too.
    CHECK(Err(fs->Unlink(kRoot, 1, "f")) == EPERM);
    CHECK(Err(fs->Rename(kRoot, 1, "f", 1, "g", 0)) == EPERM);
    CHECK(Err(fs->Rename(kRoot, 1, "other", 1, "f", 0)) == EPERM);
    CHECK(Err(fs->Rename(kRoot, 1, "other", 1, "f", RENAME_EXCHANGE)) == EPERM);
    CHECK(Err(fs->Link(kRoot, f, 1, "f2")) == EPERM);
    // Reading, and cloning from it, change nothing of it.
    CHECK(ReadAll(*fs, f) == std::string(2 * kBlockSize, 'x'));
    CHECK(*fs->CloneRange(kRoot, f, 0, other, 0, kBlockSize) == kBlockSize);
    CHECK(fs->GetAttr(f)->attr.st_size == 2 * kBlockSize);
    // And it can be thawed, after which all of that works again.
    REQUIRE(fs->SetAttrFlags(kRoot, f, 0, true).ok());
    CHECK(*Write(*fs, f, 0, "y") == 1u);
    CHECK(fs->Unlink(kRoot, 1, "f").ok());
  }

  TEST_CASE("Attribute flags: an append-only file only grows at its end") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    const Ino other = MustCreate(*fs, 1, "other");
    MustWrite(*fs, f, 0, std::string(100, 'x'));
    MustWrite(*fs, other, 0, std::string(kBlockSize, 'o'));
    REQUIRE(fs->SetAttrFlags(kRoot, f, kAppend, true).ok());
    using A = SetAttrArgs;
    // Only through O_APPEND, and only at the end.
    CHECK(Err(Write(*fs, f, 100, "y")) == EPERM);
    CHECK(Err(Write(*fs, f, 0, "y", true)) == EPERM);
    CHECK(Err(Write(*fs, f, 101, "y", true)) == EPERM);
    CHECK(*Write(*fs, f, 100, "tail", true) == 4u);
    CHECK(Err(fs->Open(kRoot, f, O_WRONLY)) == EPERM);
    CHECK(Err(fs->Open(kRoot, f, O_RDWR)) == EPERM);
    CHECK(Err(fs->Open(kRoot, f, O_WRONLY | O_APPEND | O_TRUNC)) == EPERM);
    CHECK(Err(fs->Open(kRoot, f, O_RDONLY | O_TRUNC)) == EPERM);
    CHECK(fs->Open(kRoot, f, O_WRONLY | O_APPEND).ok());
    CHECK(fs->Open(kRoot, f, O_RDONLY).ok());
    // Attributes: not the size (either way), mode, owner or explicit times;
    // "now" is allowed.
    for (unsigned v : {A::kSize, A::kMode, A::kUid, A::kGid, A::kAtime, A::kMtime})
      CHECK_MESSAGE(Err(fs->SetAttr(kRoot, f, Args(v))) == EPERM, "setattr valid " << v);
    SetAttrArgs grow = Args(A::kSize);
    grow.size = 1 << 20;
    CHECK(Err(fs->SetAttr(kRoot, f, grow)) == EPERM);
    CHECK(fs->SetAttr(kRoot, f, Args(A::kAtimeNow | A::kMtimeNow)).ok());
    CHECK(Err(fs->SetXattr(kRoot, f, "user.b", "2", 0)) == EPERM);
    // Preallocation only.
    CHECK(fs->Fallocate(kRoot, f, 0, 0, 2 * kBlockSize).ok());
    CHECK(fs->Fallocate(kRoot, f, FALLOC_FL_KEEP_SIZE, 0, 4 * kBlockSize).ok());
    for (int mode : {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
                     FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE})
      CHECK_MESSAGE(Err(fs->Fallocate(kRoot, f, mode, 0, kBlockSize)) == EPERM, "mode " << mode);
    CHECK(Err(fs->CloneRange(kRoot, other, 0, f, 0, kBlockSize)) == EPERM);
    CHECK(Err(fs->CopyFileRange(kRoot, other, 0, f, 2 * kBlockSize, 10)) == EPERM);
    CHECK(Err(fs->Defrag(kRoot, f)) == EPERM);
    CHECK(Err(fs->MoveExtents(kRoot, other, f, 0, 0, 1)) == EPERM);
    CHECK(Err(fs->MapForDax(kRoot, f, 0, kBlockSize, true, 7, {4242, 1, 1}, 8)) == EPERM);
    CHECK(Err(fs->Unlink(kRoot, 1, "f")) == EPERM);
    CHECK(Err(fs->Rename(kRoot, 1, "f", 1, "g", 0)) == EPERM);
    CHECK(Err(fs->Link(kRoot, f, 1, "f2")) == EPERM);
    CHECK(ReadAll(*fs, f) == std::string(100, 'x') + "tail" + std::string(2 * kBlockSize - 104, 0));
  }

  TEST_CASE("Attribute flags: immutable and append-only directories") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d");
    const Ino x = MustCreate(*fs, d, "x");
    MustMkdir(*fs, d, "sub");
    MustCreate(*fs, 1, "outside");
    REQUIRE(fs->SetAttrFlags(kRoot, d, kImmutable, true).ok());
    CHECK(Err(fs->Create(kRoot, d, "new", 0644, O_CREAT | O_WRONLY)) == EPERM);
    CHECK(Err(fs->Tmpfile(kRoot, d, 0644, O_WRONLY)) == EPERM);
    CHECK(Err(fs->Mkdir(kRoot, d, "new", 0755)) == EPERM);
    CHECK(Err(fs->Symlink(kRoot, d, "new", "t")) == EPERM);
    CHECK(Err(fs->Mknod(kRoot, d, "new", S_IFIFO | 0644, 0)) == EPERM);
    CHECK(Err(fs->Link(kRoot, x, d, "x2")) == EPERM);
    CHECK(Err(fs->Unlink(kRoot, d, "x")) == EPERM);
    CHECK(Err(fs->Rmdir(kRoot, d, "sub")) == EPERM);
    CHECK(Err(fs->Rename(kRoot, d, "x", d, "y", 0)) == EPERM);
    CHECK(Err(fs->Rename(kRoot, 1, "outside", d, "y", 0)) == EPERM);
    CHECK(Err(fs->Rmdir(kRoot, 1, "d")) == EPERM);  // before ENOTEMPTY, as may_delete
    // The files in it are not immutable themselves.
    CHECK(*Write(*fs, x, 0, "ok") == 2u);
    // An existing name still opens with O_CREAT.
    CHECK(fs->Create(kRoot, d, "x", 0644, O_CREAT | O_WRONLY).ok());
    REQUIRE(fs->SetAttrFlags(kRoot, d, kAppend, true).ok());
    // Append-only: names come, none go.
    CHECK(fs->Create(kRoot, d, "new", 0644, O_CREAT | O_WRONLY).ok());
    CHECK(fs->Rename(kRoot, 1, "outside", d, "moved", 0).ok());
    CHECK(Err(fs->Unlink(kRoot, d, "x")) == EPERM);
    CHECK(Err(fs->Rmdir(kRoot, d, "sub")) == EPERM);
    CHECK(Err(fs->Rename(kRoot, d, "x", d, "y", 0)) == EPERM);
    CHECK(Err(fs->Rename(kRoot, d, "new", d, "x", 0)) == EPERM);
  }

  TEST_CASE("Attribute flags: noatime keeps reads from touching atime; some flags are inherited") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d");
    REQUIRE(fs->SetAttrFlags(kRoot, d, FS_NOATIME_FL | FS_NODUMP_FL | FS_DIRSYNC_FL, true).ok());
    const Ino f = MustCreate(*fs, d, "f");
    const Ino sub = MustMkdir(*fs, d, "sub");
    auto fifo = fs->Mknod(kRoot, d, "p", S_IFIFO | 0644, 0);
    REQUIRE(fifo.ok());
    CHECK(*fs->GetAttrFlags(f) == (FS_NOATIME_FL | FS_NODUMP_FL));
    CHECK(*fs->GetAttrFlags(sub) == (FS_NOATIME_FL | FS_NODUMP_FL | FS_DIRSYNC_FL));
    CHECK(*fs->GetAttrFlags(fifo->attr.st_ino) == 0u);
    MustWrite(*fs, f, 0, "data");
    SetAttrArgs old = Args(SetAttrArgs::kAtime);
    old.atime_ns = 1'000'000'000;
    REQUIRE(fs->SetAttr(kRoot, f, old).ok());
    CHECK(ReadAll(*fs, f) == "data");
    CHECK(fs->GetAttr(f)->attr.st_atim.tv_sec == 1);
    REQUIRE(fs->SetAttrFlags(kRoot, f, 0, true).ok());
    CHECK(ReadAll(*fs, f) == "data");
    CHECK(fs->GetAttr(f)->attr.st_atim.tv_sec > 1);
  }

  TEST_CASE("Attribute flags: freezing a file asks the layout guard, and refuses DAX writers") {
    auto fs = MustMount(FormattedPool());
    FixedGuard guard;
    fs->SetLayoutGuard(&guard);
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, std::string(3 * kBlockSize, 'x'));
    guard.asked = 0;
    // A flag that freezes nothing asks nothing.
    REQUIRE(fs->SetAttrFlags(kRoot, f, FS_NODUMP_FL, true).ok());
    CHECK(guard.asked == 0);
    // A lease in the way: the guard's answer, and nothing changed.
    guard.answer = ERESTART;
    CHECK(Err(fs->SetAttrFlags(kRoot, f, kImmutable, true)) == ERESTART);
    CHECK(guard.asked == 1);
    CHECK(guard.last.kind == LayoutChangeKind::kUnmap);
    CHECK(guard.last.offset == 0);
    CHECK(guard.last.length == LayoutChange::kToEnd);
    CHECK_FALSE(guard.last.size_changes);
    CHECK(*fs->GetAttrFlags(f) == FS_NODUMP_FL);
    // A writable DAX mapping outlives any lease: EBUSY until it goes.
    guard.answer = 0;
    REQUIRE(fs->MapForDax(kRoot, f, kBlockSize, kBlockSize, true, 77, {4242, 1, 1}, 8).ok());
    CHECK(Err(fs->SetAttrFlags(kRoot, f, kAppend, true)) == EBUSY);
    CHECK(fs->DropReach(77) == 1u);
    CHECK(fs->SetAttrFlags(kRoot, f, kAppend, true).ok());
    // Thawing asks nothing.
    guard.asked = 0;
    CHECK(fs->SetAttrFlags(kRoot, f, 0, true).ok());
    CHECK(guard.asked == 0);
    fs->SetLayoutGuard(nullptr);
  }
}

}  // namespace
}  // namespace leasefs::engine
