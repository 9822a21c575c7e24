// The DAX path on a mounted leasefs, through its raw ioctls (the client
// library and leasefs-run have tests of their own): who may map what, that
// stores through a mapping and read(2)/write(2) see each other at once, and
// the quarantine: blocks a holder may still reach are given to no other
// file until it confirms the unmap, dies, or, across a daemon restart, dies.
//
// Mapping holders that must outlive a step (die, survive a restart) run in
// child processes (MapHolder); the rest runs in the test process.
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <atomic>
#include <climits>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uint64_t B = 4096;
constexpr uid_t kAlice = 1000;
constexpr uid_t kBob = 1001;

std::string Errno(int e) { return e == 0 ? "OK" : ErrnoName(e); }

int SetLease(int fd, uint64_t off, uint64_t len, uint32_t type, uint32_t flags = 0) {
  leasefs_lease l{};
  l.offset = off;
  l.length = len;
  l.type = type;
  l.flags = flags;
  return ioctl(fd, LEASEFS_IOC_SETLEASE, &l) == 0 ? 0 : errno;
}

// 0 or the errno of DAX_MAP; the answer in *m.
int DaxMap(int fd, uint64_t off, uint64_t len, uint32_t flags, leasefs_dax_map* m) {
  *m = leasefs_dax_map{};
  m->offset = off;
  m->length = len;
  m->flags = flags;
  return ioctl(fd, LEASEFS_IOC_DAX_MAP, m) == 0 ? 0 : errno;
}

int DaxUnmap(int fd, uint64_t map_id) {
  leasefs_dax_unmap u{};
  u.map_id = map_id;
  return ioctl(fd, LEASEFS_IOC_DAX_UNMAP, &u) == 0 ? 0 : errno;
}

// The first page of the mapping list (every test has fewer than 128 records).
leasefs_dax_list DaxList(int fd) {
  leasefs_dax_list l{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_DAX_LIST, &l) == 0);
  return l;
}

// The pool offsets of a file's blocks, from BMAP.
std::set<uint64_t> PoolBlocks(int fd) {
  std::set<uint64_t> out;
  leasefs_bmap b{};
  for (;;) {
    REQUIRE(ioctl(fd, LEASEFS_IOC_BMAP, &b) == 0);
    for (uint32_t i = 0; i < b.count; ++i) {
      for (uint64_t o = 0; o < b.extents[i].length; o += B) out.insert(b.extents[i].pool_offset + o);
    }
    if (!(b.flags & LEASEFS_BMAP_MORE)) break;
    b.start = b.next;
  }
  return out;
}

// The pool, opened as a DAX client opens it (the path DAX_INFO names).
int OpenPool(int any_fd, int flags = O_RDWR) {
  leasefs_dax_info info{};
  REQUIRE(ioctl(any_fd, LEASEFS_IOC_DAX_INFO, &info) == 0);
  return open(info.path, flags | O_CLOEXEC);
}

// Maps the extents of `m` from the pool at one address; holes as zero pages.
char* MapExtents(int pool, const leasefs_dax_map& m, int prot) {
  void* base = mmap(nullptr, m.length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(base != MAP_FAILED);
  char* p = static_cast<char*>(base);
  for (uint32_t i = 0; i < m.count; ++i) {
    const leasefs_dax_extent& e = m.extents[i];
    char* at = p + (e.file_offset - m.offset);
    void* r = (e.flags & LEASEFS_DAX_HOLE)
                  ? mmap(at, e.length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
                  : mmap(at, e.length, prot, MAP_SHARED | MAP_FIXED, pool, e.pool_offset);
    REQUIRE(r == at);
  }
  return p;
}

uint64_t FreeBlocks(const std::string& dir) {
  struct statvfs s{};
  REQUIRE(statvfs(dir.c_str(), &s) == 0);
  return s.f_bfree;
}

// Waits up to `ms` for `pred`.
bool Eventually(const std::function<bool()>& pred, int ms = 3000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// Once every holder is gone the last record goes (the daemon notices a death
// a little later) and nothing stays quarantined.
void CheckDrained(int dir) {
  CHECK(Eventually([&] { return DaxList(dir).records_total == 0; }));
  CHECK(DaxList(dir).quarantined_total == 0);
}

// Unmounts (the daemon exits 0); fsck then finds the pool clean.
void CheckUnmountsClean(TestMount& m) {
  CHECK(m.Unmount() == 0);
  const ProcessResult fsck = m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

// fork(), the child running as `uid` (it exits 2 when it cannot switch):
// 0 in the child, its pid in the test.
pid_t ForkAs(uid_t uid) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0 && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(2);
  return pid;
}

// Reaps child `pid`, which must have exited 0.
void CheckExitsZero(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// Writes `path` so that every user may open it for writing, whatever the
// umask.
void WriteSharedFile(const std::string& path, const std::string& data) {
  REQUIRE(WriteFile(path, data, 0666) == "");
  REQUIRE(chmod(path.c_str(), 0666) == 0);
}

// The state of the lease at offset 0 of `fd` (GETLEASE).
uint32_t LeaseState(int fd) {
  leasefs_getlease g{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_GETLEASE, &g) == 0);
  return g.lease.state;
}

// A process that opens `path`, takes a WRITE lease on [0, len), maps it for
// writing through DAX and then waits; it answers "ready MAP_ID" on its socket.
// It can be told to "store" a byte over the whole mapping (as a holder that
// ignores everything would), and dies with the test's SIGKILL.
class MapHolder {
 public:
  MapHolder(const std::string& path, uint64_t len, uid_t uid = 0)
      : child_([&](int sock) { return Child(path, len, uid, sock); }) {
    ready_ = child_.Reply(10000);
  }
  const std::string& ready() const { return ready_; }
  pid_t pid() const { return child_.pid(); }
  std::string Ask(const std::string& cmd) { return child_.Ask(cmd, 10000); }
  void Kill() { child_.Kill(); }

 private:
  static int Child(const std::string& path, uint64_t len, uid_t uid, int sock) {
    auto say = [sock](const std::string& s) { SayLine(sock, s); };
    if (uid != 0 && (setgid(uid) != 0 || setuid(uid) != 0)) return say("setuid"), 1;
    const int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) return say("open " + ErrnoName(errno)), 1;
    if (int e = SetLease(fd, 0, len, LEASEFS_LEASE_WRITE); e != 0) {
      return say("lease " + ErrnoName(e)), 1;
    }
    leasefs_dax_map m;
    if (int e = DaxMap(fd, 0, len, LEASEFS_DAX_WRITE, &m); e != 0) {
      return say("map " + ErrnoName(e)), 1;
    }
    leasefs_dax_info info{};
    if (ioctl(fd, LEASEFS_IOC_DAX_INFO, &info) != 0) return say("info"), 1;
    // A user who may not open the pool has its record all the same (the
    // daemon cannot know); it just cannot map.
    const int pool = open(info.path, O_RDWR | O_CLOEXEC);
    char* p = nullptr;
    if (pool >= 0) {
      p = static_cast<char*>(mmap(nullptr, m.length, PROT_READ | PROT_WRITE, MAP_SHARED, pool,
                                  m.extents[0].pool_offset));
      if (p == MAP_FAILED || m.count != 1) return say("mmap"), 1;
    }
    say("ready " + std::to_string(m.map_id) + " " + std::to_string(m.extents[0].pool_offset));
    std::mutex spray_mu;
    std::vector<std::pair<char*, uint64_t>> sprayed;
    if (p != nullptr) sprayed.push_back({p, m.length});
    std::string cmd;
    while (ReadLine(sock, &cmd) && cmd != "exit") {
      if (cmd.rfind("store ", 0) == 0 && p != nullptr) {
        std::memset(p, std::stoi(cmd.substr(6)), m.length);
        say("stored");
      } else if (cmd == "release") {
        say(Errno(SetLease(fd, 0, len, LEASEFS_LEASE_UNLOCK)));
      } else if (cmd.rfind("map ", 0) == 0) {
        // map PATH: a WRITE lease and a writable DAX mapping of all of PATH,
        // kept for the spray.
        const int f2 = open(cmd.substr(4).c_str(), O_RDWR);
        struct stat st{};
        leasefs_dax_map m2;
        if (f2 < 0 || fstat(f2, &st) != 0) {
          say("open");
        } else if (int e = SetLease(f2, 0, 0, LEASEFS_LEASE_WRITE); e != 0) {
          say("lease " + ErrnoName(e));
        } else if (int e2 = DaxMap(f2, 0, st.st_size, LEASEFS_DAX_WRITE, &m2); e2 != 0) {
          say("map " + ErrnoName(e2));
        } else {
          bool ok = pool >= 0;
          for (uint32_t i = 0; ok && i < m2.count; ++i) {
            void* q = mmap(nullptr, m2.extents[i].length, PROT_READ | PROT_WRITE, MAP_SHARED, pool,
                           m2.extents[i].pool_offset);
            ok = q != MAP_FAILED;
            if (ok) {
              std::lock_guard<std::mutex> g(spray_mu);
              sprayed.push_back({static_cast<char*>(q), m2.extents[i].length});
            }
          }
          say(ok ? "mapped" : "mmap");
        }
      } else if (cmd == "spray") {
        // A holder that ignores everything: stores into all it ever mapped,
        // over and over, until it dies.
        std::thread([&] {
          for (unsigned round = 0;; ++round) {
            std::vector<std::pair<char*, uint64_t>> now;
            {
              std::lock_guard<std::mutex> g(spray_mu);
              now = sprayed;
            }
            for (auto& [at, n] : now) std::memset(at, 0x80 | (round & 0x7f), n);
          }
        }).detach();
        say("spraying");
      } else if (cmd == "unmap") {
        if (p != nullptr) munmap(p, m.length);
        say(Errno(DaxUnmap(fd, m.map_id)));
      }
    }
    return 0;
  }
  CommandedChild child_;
  std::string ready_;
};

struct Mounted {
  Mounted() : m([] {
      MountOptions o;
      o.options = "allow_other,lease_break_time=1";
      return o;
    }()) {}
  TestMount m;
};

TEST_CASE("DAX_INFO names the pool the daemon serves, and the version says DAX") {
  if (!CanMountFuse()) return;
  Mounted t;
  const int fd = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(fd >= 0);
  leasefs_version v{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_VERSION, &v) == 0);
  CHECK((v.features & LEASEFS_FEATURE_DAX) != 0);
  leasefs_dax_info info{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_DAX_INFO, &info) == 0);
  char real[PATH_MAX];
  REQUIRE(realpath(t.m.pool().c_str(), real) != nullptr);
  CHECK(std::string(info.path) == real);
  CHECK(info.path_len == strlen(real));
  CHECK(info.block_size == B);
  const int pool = open(real, O_RDONLY);
  REQUIRE(pool >= 0);
  unsigned char uuid[16];
  REQUIRE(pread(pool, uuid, 16, 40) == 16);
  CHECK(memcmp(uuid, info.uuid, 16) == 0);
  struct stat st{};
  REQUIRE(fstat(pool, &st) == 0);
  CHECK(info.pool_bytes == static_cast<uint64_t>(st.st_size));
  close(pool);
  close(fd);
}

TEST_CASE("DAX_MAP needs an active covering lease, and checks every field") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(8 * B, 'a')) == "");
  const int fd = open(f.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  leasefs_dax_map m;
  CHECK(Errno(DaxMap(fd, 0, B, 0, &m)) == "EPERM");  // no lease at all
  REQUIRE(SetLease(fd, 0, 4 * B, LEASEFS_LEASE_READ) == 0);
  // Stores change no layout: a READ lease will do for a writable mapping
  // of blocks the file owns alone...
  CHECK(Errno(DaxMap(fd, 0, 4 * B, LEASEFS_DAX_WRITE, &m)) == "OK");
  CHECK(Errno(DaxUnmap(fd, m.map_id)) == "OK");
  // ...but not where the map would have to give the range blocks (a hole,
  // a reflinked block): that is the holder's layout change.
  REQUIRE(SetLease(fd, 0, 4 * B, LEASEFS_LEASE_UNLOCK) == 0);  // a READ lease breaks for its own
  REQUIRE(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * B, B) == 0);
  REQUIRE(SetLease(fd, 0, 4 * B, LEASEFS_LEASE_READ) == 0);
  CHECK(Errno(DaxMap(fd, 0, 4 * B, LEASEFS_DAX_WRITE, &m)) == "EPERM");
  CHECK(Errno(DaxMap(fd, 0, 2 * B, LEASEFS_DAX_WRITE, &m)) == "OK");  // before the hole
  CHECK(Errno(DaxUnmap(fd, m.map_id)) == "OK");
  CHECK(Errno(DaxMap(fd, 0, 5 * B, 0, &m)) == "EPERM");  // beyond the lease
  CHECK(Errno(DaxMap(fd, 1, B, 0, &m)) == "EINVAL");
  CHECK(Errno(DaxMap(fd, 0, B + 1, 0, &m)) == "EINVAL");
  CHECK(Errno(DaxMap(fd, 0, 0, 0, &m)) == "EINVAL");
  CHECK(Errno(DaxMap(fd, 0, B, 0x2, &m)) == "EINVAL");
  CHECK(Errno(DaxMap(fd, (1ull << 63) - B, 2 * B, 0, &m)) == "EINVAL");
  // pool_uuid is an answer only: whatever comes in is overwritten.
  m = leasefs_dax_map{};
  m.length = 4 * B;
  std::memset(m.pool_uuid, 0xee, sizeof(m.pool_uuid));
  CHECK(Errno(ioctl(fd, LEASEFS_IOC_DAX_MAP, &m) == 0 ? 0 : errno) == "OK");
  CHECK(m.length == 4 * B);
  CHECK(m.file_size == 8 * B);
  leasefs_dax_info info{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_DAX_INFO, &info) == 0);
  CHECK(memcmp(m.pool_uuid, info.uuid, 16) == 0);
  CHECK(Errno(DaxUnmap(fd, m.map_id)) == "OK");
  CHECK(Errno(DaxUnmap(fd, m.map_id)) == "ENOENT");
  // A WRITE lease on a read-only descriptor (the owner may take one) still
  // does not make a writable mapping.
  const int ro = open(f.c_str(), O_RDONLY);
  REQUIRE(SetLease(ro, 4 * B, 4 * B, LEASEFS_LEASE_WRITE) == 0);
  CHECK(Errno(DaxMap(ro, 4 * B, 4 * B, LEASEFS_DAX_WRITE, &m)) == "EBADF");
  close(ro);
  close(fd);
  CHECK(DaxList(open(t.m.mnt().c_str(), O_RDONLY)).records_total == 0);
}

TEST_CASE("a writable mapping gets blocks of its own, and DAX stores and read/write see each other") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = open(f.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, 16 * B) == 0);  // all hole
  REQUIRE(PoolBlocks(fd).empty());
  REQUIRE(SetLease(fd, 0, 0, LEASEFS_LEASE_WRITE) == 0);
  leasefs_dax_map m;
  REQUIRE(Errno(DaxMap(fd, 0, 32 * B, LEASEFS_DAX_WRITE, &m)) == "OK");
  CHECK(m.length == 16 * B);  // stops at the end of the file
  uint64_t covered = 0;
  std::set<uint64_t> handed;
  for (uint32_t i = 0; i < m.count; ++i) {
    CHECK(m.extents[i].flags == 0);
    CHECK(m.extents[i].file_offset == covered);
    covered += m.extents[i].length;
    for (uint64_t o = 0; o < m.extents[i].length; o += B) handed.insert(m.extents[i].pool_offset + o);
  }
  CHECK(covered == 16 * B);
  CHECK(handed == PoolBlocks(fd));  // the holes got the very blocks handed out
  const int pool = OpenPool(fd);
  REQUIRE(pool >= 0);
  char* p = MapExtents(pool, m, PROT_READ | PROT_WRITE);
  CHECK(std::string(p, 16 * B) == std::string(16 * B, '\0'));
  std::memcpy(p + 5 * B + 7, "through dax", 11);
  const int other = open(f.c_str(), O_RDONLY);
  CHECK(PreadAll(other, 11, 5 * B + 7) == "through dax");
  CHECK(PwriteAll(fd, "through fuse", 9 * B + 1) == "");
  CHECK(std::string(p + 9 * B + 1, 12) == "through fuse");
  munmap(p, m.length);
  CHECK(Errno(DaxUnmap(fd, m.map_id)) == "OK");
  close(other);
  close(pool);
  close(fd);
}

TEST_CASE("a read-only mapping reports holes and zeroes preallocated blocks") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = open(f.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(PwriteAll(fd, std::string(B, 'x'), 0) == "");
  REQUIRE(fallocate(fd, FALLOC_FL_KEEP_SIZE, 2 * B, B) == 0);  // unwritten, past EOF
  REQUIRE(ftruncate(fd, 4 * B) == 0);                            // block 1 hole, 2 unwritten, 3 hole
  REQUIRE(SetLease(fd, 0, 0, LEASEFS_LEASE_READ) == 0);
  leasefs_dax_map m;
  REQUIRE(Errno(DaxMap(fd, 0, 4 * B, 0, &m)) == "OK");
  REQUIRE(m.count == 4);
  CHECK(m.extents[0].flags == 0);
  CHECK(m.extents[1].flags == LEASEFS_DAX_HOLE);
  CHECK(m.extents[2].flags == 0);
  CHECK(m.extents[3].flags == LEASEFS_DAX_HOLE);
  const int pool = OpenPool(fd, O_RDONLY);
  char* p = MapExtents(pool, m, PROT_READ);
  CHECK(std::string(p, B) == std::string(B, 'x'));
  CHECK(std::string(p + 2 * B, B) == std::string(B, '\0'));
  // The formerly unwritten block is written now: an overwrite through FUSE
  // (which breaks nothing) is seen through the mapping.
  CHECK(PwriteAll(fd, "late", 2 * B + 10) == "");
  CHECK(std::string(p + 2 * B + 10, 4) == "late");
  munmap(p, m.length);
  CHECK(Errno(DaxUnmap(fd, 0)) == "OK");
  close(pool);
  close(fd);
}

TEST_CASE("blocks a holder still maps are quarantined when its file lets them go, until it unmaps") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("victim");
  REQUIRE(WriteFile(f, std::string(16 * B, 'v')) == "");
  MapHolder holder(f, 16 * B);
  REQUIRE(holder.ready().rfind("ready ", 0) == 0);
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  leasefs_dax_list l = DaxList(dir);
  REQUIRE(l.count >= 1);
  CHECK(l.records[0].owner_pid == holder.pid());
  CHECK(l.records[0].quarantined == 0);
  CHECK((l.records[0].flags & LEASEFS_DAX_REC_WRITE) != 0);
  const std::set<uint64_t> held = [&] {
    const int fd = open(f.c_str(), O_RDONLY);
    auto s = PoolBlocks(fd);
    close(fd);
    return s;
  }();
  REQUIRE(held.size() == 16);
  // The holder ignores the break: its lease is revoked after a second and
  // the truncate goes on.
  REQUIRE(truncate(f.c_str(), 0) == 0);
  l = DaxList(dir);
  CHECK(l.quarantined_total == 16 * B);
  // The tools show it: leasectl dax in full, leasectl leases as a total.
  const std::string leasectl = ToolPath("LEASECTL_BIN", "leasectl");
  const ProcessResult dax = Run({leasectl, "dax", t.m.mnt()});
  CHECK(dax.exit_code == 0);
  CHECK_MESSAGE(dax.output.find(" 64K     64K         " + std::to_string(holder.pid())) !=
                    std::string::npos,
                dax.output);
  CHECK_MESSAGE(dax.output.find(" write,unleased\n") != std::string::npos, dax.output);
  CHECK_MESSAGE(dax.output.find("1 of ") != std::string::npos, dax.output);
  CHECK_MESSAGE(dax.output.find("records in use, 64K quarantined\n") != std::string::npos,
                dax.output);
  const ProcessResult leases = Run({leasectl, "leases", t.m.mnt()});
  CHECK_MESSAGE(leases.output.find("quarantine: 65536 bytes kept from reuse; DAX records: 1 "
                                   "(leasectl dax)\n") != std::string::npos,
                leases.output);
  const uint64_t free_before = FreeBlocks(t.m.mnt());
  // A new file takes space; none of it may be the quarantined blocks. Then
  // the holder stores through its stale mapping: the new file is untouched.
  const std::string g = t.m.path("newcomer");
  REQUIRE(WriteFile(g, std::string(64 * B, 'n')) == "");
  const int gfd = open(g.c_str(), O_RDONLY);
  for (uint64_t b : PoolBlocks(gfd)) CHECK(held.count(b) == 0);
  CHECK(holder.Ask("store 122") == "stored");
  CHECK(PreadAll(gfd, 64 * B, 0) == std::string(64 * B, 'n'));
  close(gfd);
  // The unmap confirmed: the blocks come back.
  CHECK(holder.Ask("unmap") == "OK");
  l = DaxList(dir);
  CHECK(l.records_total == 0);
  CHECK(l.quarantined_total == 0);
  CHECK(FreeBlocks(t.m.mnt()) == free_before - 64 + 16);
  close(dir);
}

TEST_CASE("a holder's death drops its records and frees what they kept") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(8 * B, 'v')) == "");
  const uint64_t free0 = FreeBlocks(t.m.mnt());
  MapHolder holder(f, 8 * B);
  REQUIRE(holder.ready().rfind("ready ", 0) == 0);
  CHECK(holder.Ask("release") == "OK");  // unleased, still mapped
  REQUIRE(truncate(f.c_str(), 0) == 0);  // no break needed now
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  CHECK(DaxList(dir).quarantined_total == 8 * B);
  CHECK((DaxList(dir).records[0].flags & LEASEFS_DAX_REC_UNLEASED) != 0);
  CHECK(FreeBlocks(t.m.mnt()) == free0);
  holder.Kill();
  CheckDrained(dir);
  CHECK(FreeBlocks(t.m.mnt()) == free0 + 8);
  close(dir);
}

TEST_CASE("a daemon killed and restarted keeps the records of living holders, drops the dead") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const std::string g = t.m.path("g");
  REQUIRE(WriteFile(f, std::string(8 * B, 'f')) == "");
  REQUIRE(WriteFile(g, std::string(4 * B, 'g')) == "");
  MapHolder lives(f, 8 * B);
  MapHolder dies(g, 4 * B);
  REQUIRE(lives.ready().rfind("ready ", 0) == 0);
  REQUIRE(dies.ready().rfind("ready ", 0) == 0);
  t.m.Kill();
  dies.Kill();
  std::string log;
  REQUIRE(t.m.Mount(&log));
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  leasefs_dax_list l = DaxList(dir);
  REQUIRE(l.count == 1);
  CHECK(l.records[0].owner_pid == lives.pid());
  CHECK((l.records[0].flags & LEASEFS_DAX_REC_RESTART) != 0);
  // Its file lets the blocks go; they stay out of reach of others.
  REQUIRE(truncate(f.c_str(), 0) == 0);
  CHECK(DaxList(dir).quarantined_total == 8 * B);
  lives.Kill();
  CheckDrained(dir);
  close(dir);
  CheckUnmountsClean(t.m);
}

TEST_CASE("DAX ioctls from an unprivileged process with garbage: errors only, nothing changes") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  WriteSharedFile(f, std::string(8 * B, 'z'));
  const pid_t pid = ForkAs(kAlice);
  if (pid == 0) {
    const int fd = open(f.c_str(), O_RDWR);
    if (fd < 0) _exit(3);
    std::mt19937_64 rng(42);
    for (int i = 0; i < 3000; ++i) {
      leasefs_dax_map m;
      auto* words = reinterpret_cast<uint64_t*>(&m);
      for (size_t w = 0; w < sizeof(m) / 8; ++w) words[w] = rng() & (rng() % 2 ? 0xffff : ~0ull);
      const unsigned cmds[] = {LEASEFS_IOC_DAX_MAP, LEASEFS_IOC_DAX_UNMAP, LEASEFS_IOC_DAX_LIST,
                               LEASEFS_IOC_DAX_INFO};
      if (ioctl(fd, cmds[i % 4], &m) == 0 && i % 4 == 0) _exit(4);  // no lease: never maps
      if (i == 1500 && SetLease(fd, 0, 4 * B, LEASEFS_LEASE_READ) != 0) _exit(5);
    }
    _exit(0);
  }
  CheckExitsZero(pid);
  bool ok = false;
  CHECK(ReadFile(f, &ok) == std::string(8 * B, 'z'));
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  CHECK(DaxList(dir).records_total == 0);
  close(dir);
  CHECK(t.m.Unmount() == 0);
}

TEST_CASE("an unprivileged process races maps, unmaps, releases and truncates: no crash, no record outlives it") {
  if (!CanMountFuse()) return;
  Mounted t;  // break time 1 s
  const std::string f = t.m.path("f");
  WriteSharedFile(f, std::string(64 * B, 'r'));
  const pid_t pid = ForkAs(kAlice);
  if (pid == 0) {
    const int fd = open(f.c_str(), O_RDWR | O_NONBLOCK);
    if (fd < 0) _exit(3);
    std::atomic<bool> stop{false};
    std::atomic<int> mapped{0};
    // Two threads map and confirm through one open file while a third
    // releases and retakes its lease and a fourth changes the file's layout.
    auto mapper = [&] {
      while (!stop) {
        leasefs_dax_map m;
        if (DaxMap(fd, 0, 64 * B, (mapped % 2) ? LEASEFS_DAX_WRITE : 0, &m) == 0) {
          ++mapped;
          DaxUnmap(fd, m.map_id);
        }
      }
    };
    std::thread a(mapper), b(mapper);
    std::thread leases([&] {
      while (!stop) {
        SetLease(fd, 0, 0, LEASEFS_LEASE_WRITE);
        SetLease(fd, 0, 0, LEASEFS_LEASE_UNLOCK);
      }
    });
    std::thread layout([&] {
      for (int i = 0; !stop; ++i) {
        ftruncate(fd, (i % 2 ? 32 : 64) * B);
        DaxUnmap(fd, 0);
      }
    });
    usleep(3 * 1000 * 1000);
    stop = true;
    a.join();
    b.join();
    leases.join();
    layout.join();
    _exit(mapped > 0 ? 0 : 4);  // the race let some maps through
  }
  CheckExitsZero(pid);
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  REQUIRE(dir >= 0);  // the daemon lives
  CheckDrained(dir);
  close(dir);
  CheckUnmountsClean(t.m);
}

TEST_CASE("one process cannot confirm another's unmap") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  WriteSharedFile(f, std::string(4 * B, 'q'));
  MapHolder holder(f, 4 * B, kBob);
  REQUIRE(holder.ready().rfind("ready ", 0) == 0);
  const uint64_t id = std::stoull(holder.ready().substr(6));
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  CHECK(Errno(DaxUnmap(dir, id)) == "ENOENT");  // we are not its process
  CHECK(DaxList(dir).records_total == 1);
  close(dir);
}

// Events of the mount's log after `after`, of one type.
size_t CountEvents(int fd, uint32_t type) {
  leasefs_events ev{};
  size_t n = 0;
  for (;;) {
    REQUIRE(ioctl(fd, LEASEFS_IOC_EVENTS, &ev) == 0);
    for (uint32_t i = 0; i < ev.count; ++i) n += ev.events[i].type == type;
    if (ev.count == 0) return n;
    ev.after = ev.events[ev.count - 1].seq;
  }
}

TEST_CASE("scenario 12 with real mappings: DAX stores, opens and reads never break a lease") {
  if (!CanMountFuse()) return;
  for (const char* mode : {"unmap-only", "xfs-faithful"}) {
    CAPTURE(mode);
    MountOptions o;
    o.options = std::string("allow_other,write_break=") + mode;
    TestMount m(o);
    const std::string f = m.path("f");
    REQUIRE(WriteFile(f, std::string(256 * B, 'a')) == "");
    const int fd = open(f.c_str(), O_RDWR);
    REQUIRE(SetLease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
    leasefs_dax_map dm;
    REQUIRE(Errno(DaxMap(fd, 0, 256 * B, LEASEFS_DAX_WRITE, &dm)) == "OK");
    const int pool = OpenPool(fd);
    char* p = MapExtents(pool, dm, PROT_READ | PROT_WRITE);
    // Another process (sharing the mapping, as a fork does) stores through
    // it, opens the file for writing and reads it.
    const pid_t q = fork();
    REQUIRE(q >= 0);
    if (q == 0) {
      std::memset(p + 17 * B, 'q', 3 * B);
      const int qfd = open(f.c_str(), O_RDWR);
      if (qfd < 0) _exit(2);
      char buf[B];
      _exit(pread(qfd, buf, B, 17 * B) == static_cast<ssize_t>(B) && buf[0] == 'q' ? 0 : 3);
    }
    CheckExitsZero(q);
    CHECK(PreadAll(fd, 3 * B, 17 * B) == std::string(3 * B, 'q'));
    CHECK(LeaseState(fd) == LEASEFS_STATE_ACTIVE);
    CHECK(CountEvents(fd, LEASEFS_EVENT_BREAK) == 0);
    munmap(p, dm.length);
    CHECK(Errno(DaxUnmap(fd, dm.map_id)) == "OK");
    close(pool);
    close(fd);
  }
}

TEST_CASE("scenario 13 with real mappings: changes outside the mapped, leased range go ahead") {
  if (!CanMountFuse()) return;
  MountOptions o;
  o.options = "allow_other,lease_break_time=10";
  TestMount m(o);
  const std::string f = m.path("f"), g = m.path("g");
  REQUIRE(WriteFile(f, std::string(10 << 20, 'f')) == "");
  REQUIRE(WriteFile(g, std::string(1 << 20, 'g')) == "");
  const int fd = open(f.c_str(), O_RDWR);
  REQUIRE(SetLease(fd, 0, 1 << 20, LEASEFS_LEASE_READ) == 0);
  leasefs_dax_map dm;
  REQUIRE(Errno(DaxMap(fd, 0, 1 << 20, 0, &dm)) == "OK");
  const int pool = OpenPool(fd, O_RDONLY);
  char* p = MapExtents(pool, dm, PROT_READ);
  const int other = open(f.c_str(), O_RDWR);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(Errno(truncate(g.c_str(), 0) == 0 ? 0 : errno) == "OK");
  CHECK(Errno(fallocate(other, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 << 20, 1 << 20) == 0
                  ? 0
                  : errno) == "OK");
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  CHECK(LeaseState(fd) == LEASEFS_STATE_ACTIVE);
  CHECK(std::string(p, 1 << 20) == std::string(1 << 20, 'f'));
  // The punched blocks were not mapped: free at once, nothing quarantined.
  CHECK(DaxList(fd).quarantined_total == 0);
  munmap(p, dm.length);
  CHECK(Errno(DaxUnmap(fd, 0)) == "OK");
  close(other);
  close(pool);
  close(fd);
}

TEST_CASE("revocation over many rounds: late stores never reach a file, the quarantine drains") {
  if (!CanMountFuse()) return;
  for (const bool restart : {false, true}) {
  CAPTURE(restart);
  MountOptions o;
  o.options = "allow_other,lease_break_time=1";
  o.pool_size = "16M";  // small: freed space is taken again at once
  TestMount m(o);
  // Everything in a directory of its own, removed at the end, so that free
  // space comes back exactly (a directory keeps the blocks it grew; the
  // root gets its first one for "d").
  REQUIRE(mkdir(m.path("d").c_str(), 0755) == 0);
  const uint64_t free0 = FreeBlocks(m.mnt());
  const std::string first = m.path("d/v0");
  REQUIRE(WriteFile(first, std::string(32 * B, 'v')) == "");
  MapHolder holder(first, 32 * B);
  REQUIRE(holder.ready().rfind("ready ", 0) == 0);
  REQUIRE(holder.Ask("spray") == "spraying");
  int dir = open(m.mnt().c_str(), O_RDONLY);
  std::mt19937 rng(7);
  std::vector<std::pair<std::string, std::string>> newcomers;  // path, contents
  constexpr int kRounds = 6;
  for (int round = 0; round < kRounds; ++round) {
    CAPTURE(round);
    const std::string victim = m.path("d/v" + std::to_string(round));
    const int mapped_rounds = restart && round >= kRounds / 2 ? kRounds / 2 : round + 1;
    if (restart && round == kRounds / 2) {
      // The daemon dies mid-way; its successor finds the holder alive and
      // keeps its records, so nothing it may still reach is handed out.
      close(dir);
      m.Kill();
      std::string log;
      REQUIRE(m.Mount(&log));
      dir = open(m.mnt().c_str(), O_RDONLY);
      CHECK(DaxList(dir).quarantined_total == static_cast<uint64_t>(mapped_rounds) * 32 * B);
    }
    if (round >= mapped_rounds) {
      // After the restart the holder's descriptors are dead: it maps no
      // more, but sprays on; newcomers keep coming.
    } else if (round > 0) {
      REQUIRE(WriteFile(victim, std::string(32 * B, 'v')) == "");
      REQUIRE(holder.Ask("map " + victim) == "mapped");
    }
    // The holder ignores the break; after a second its lease is revoked and
    // the truncate frees the blocks it still sprays.
    if (round < mapped_rounds) REQUIRE(truncate(victim.c_str(), 0) == 0);
    CHECK(DaxList(dir).quarantined_total == static_cast<uint64_t>(mapped_rounds) * 32 * B);
    // Newcomers take what space there is.
    for (int i = 0; i < 8; ++i) {
      std::string data(16 * B, '\0');
      for (char& c : data) c = static_cast<char>('a' + rng() % 26);
      const std::string path = m.path("d/n" + std::to_string(round) + "_" + std::to_string(i));
      if (WriteFile(path, data) != "") break;  // the pool is full: fine
      newcomers.emplace_back(path, std::move(data));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // more spraying
    for (const auto& newcomer : newcomers) {
      bool ok = false;
      CHECK_MESSAGE(ReadFile(newcomer.first, &ok) == newcomer.second, newcomer.first);
    }
  }
  CHECK(DaxList(dir).quarantined_total == (restart ? kRounds / 2 : kRounds) * 32 * B);
  holder.Kill();
  CheckDrained(dir);
  for (const auto& [path, data] : newcomers) REQUIRE(unlink(path.c_str()) == 0);
  for (int round = 0; round < kRounds; ++round) unlink(m.path("d/v" + std::to_string(round)).c_str());
  REQUIRE(rmdir(m.path("d").c_str()) == 0);
  // The kernel forgets the holder's unlinked files when it gets round to it.
  CHECK(Eventually([&] { return FreeBlocks(m.mnt()) == free0; }));
  CHECK(FreeBlocks(m.mnt()) == free0);
  close(dir);
  CheckUnmountsClean(m);
  }
}

TEST_CASE("a user's share of the table holds against racing maps; the list shows it its own") {
  if (!CanMountFuse()) return;
  Mounted t;  // 256 MiB: a table of 512 records, a quarter for each user
  const int dir = open(t.m.mnt().c_str(), O_RDONLY);
  const uint64_t capacity = DaxList(dir).records_max;
  REQUIRE(capacity == 512);
  // Two files written a block at a time in turn: each is 200 runs of one
  // block, so a map of one gives LEASEFS_DAX_MAX records.
  const std::string a = t.m.path("frag-a"), b = t.m.path("frag-b");
  {
    const int fa = open(a.c_str(), O_RDWR | O_CREAT, 0666), fb = open(b.c_str(), O_RDWR | O_CREAT, 0666);
    for (uint64_t i = 0; i < 200; ++i) {
      REQUIRE(PwriteAll(fa, std::string(B, 'a'), i * B) == "");
      REQUIRE(PwriteAll(fb, std::string(B, 'b'), i * B) == "");
    }
    fchmod(fa, 0666);
    close(fa);
    close(fb);
  }
  // Alice maps it from 6 threads at once, each through its own descriptor
  // and lease: together they get her share and no more.
  const pid_t alice = ForkAs(kAlice);
  if (alice == 0) {
    std::vector<std::thread> threads;
    std::atomic<int> edquot{0}, mapped{0};
    for (int i = 0; i < 6; ++i) {
      threads.emplace_back([&] {
        // Open for writing: a lease on a file of another owner needs it.
        const int fd = open(a.c_str(), O_RDWR);
        if (fd < 0 || SetLease(fd, 0, 0, LEASEFS_LEASE_READ) != 0) return;
        leasefs_dax_map m;
        const int e = DaxMap(fd, 0, 200 * B, 0, &m);
        if (e == EDQUOT) ++edquot;
        if (e == 0) ++mapped;
        // Keep the descriptor (and its mapping's record) open.
      });
    }
    for (auto& th : threads) th.join();
    // 6 maps of 128 records against a share of 128: one fits, the rest
    // find the share spent (a map may also get a part of what is left).
    if (edquot.load() == 0) _exit(7);
    pause();
    _exit(0);
  }
  // Wait until her threads are done: the table stops growing.
  uint64_t last = ~0ull;
  for (int i = 0; i < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const uint64_t now = DaxList(dir).records_total;
    if (now == last && now > 0) break;
    last = now;
  }
  const leasefs_dax_list all = DaxList(dir);  // root sees every record
  CHECK(all.records_total == capacity / 4);
  uint64_t hers = 0;
  for (uint32_t i = 0; i < all.count; ++i) hers += all.records[i].owner_pid == alice;
  CHECK(all.count > 0);
  CHECK(hers == all.count);  // nobody else maps anything
  // Bob sees none of hers, only the totals.
  const pid_t bob = ForkAs(kBob);
  if (bob == 0) {
    const int d = open(t.m.mnt().c_str(), O_RDONLY);
    leasefs_dax_list l{};
    if (ioctl(d, LEASEFS_IOC_DAX_LIST, &l) != 0) _exit(3);
    _exit(l.count == 0 && l.records_total == capacity / 4 ? 0 : 4);
  }
  CheckExitsZero(bob);
  kill(alice, SIGKILL);
  waitpid(alice, nullptr, 0);
  CHECK(Eventually([&] { return DaxList(dir).records_total == 0; }));
  close(dir);
}

TEST_CASE("a writable map that must break others' leases: O_NONBLOCK gives EWOULDBLOCK, not a wait") {
  if (!CanMountFuse()) return;
  Mounted t;  // break time 1 s
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, "") == "");
  REQUIRE(truncate(f.c_str(), 8 * B) == 0);  // holes: a writable map fills them
  const int reader = open(f.c_str(), O_RDWR);
  REQUIRE(SetLease(reader, 0, 0, LEASEFS_LEASE_READ) == 0);
  const int writer = open(f.c_str(), O_RDWR | O_NONBLOCK);
  REQUIRE(SetLease(writer, 0, 0, LEASEFS_LEASE_WRITE) == 0);  // coexists with READ ones
  leasefs_dax_map m;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(Errno(DaxMap(writer, 0, 8 * B, LEASEFS_DAX_WRITE, &m)) == "EAGAIN");  // EWOULDBLOCK
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500));
  CHECK(LeaseState(reader) == LEASEFS_STATE_BREAKING);  // the break was started
  CHECK(DaxList(writer).records_total == 0);
  REQUIRE(SetLease(reader, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  CHECK(Errno(DaxMap(writer, 0, 8 * B, LEASEFS_DAX_WRITE, &m)) == "OK");
  CHECK(m.length == 8 * B);
  CHECK(Errno(DaxUnmap(writer, 0)) == "OK");
  close(writer);
  close(reader);
}

TEST_CASE("DAX holders and plain (page-cache) mappings meet at DAX_MAP, fsync, msync and DAX_UNMAP") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(4 * B, 'a')) == "");
  const int plain_fd = open(f.c_str(), O_RDWR);
  char* plain = static_cast<char*>(mmap(nullptr, 4 * B, PROT_READ | PROT_WRITE, MAP_SHARED, plain_fd, 0));
  REQUIRE(plain != MAP_FAILED);
  plain[1] = 'p';  // a dirty cached page
  const int fd = open(f.c_str(), O_RDWR);
  REQUIRE(SetLease(fd, 0, 0, LEASEFS_LEASE_WRITE) == 0);
  leasefs_dax_map m;
  REQUIRE(Errno(DaxMap(fd, 0, 4 * B, LEASEFS_DAX_WRITE, &m)) == "OK");
  const int pool = OpenPool(fd);
  char* dax = MapExtents(pool, m, PROT_READ | PROT_WRITE);
  CHECK(dax[1] == 'p');  // DAX_MAP wrote the dirty page back first
  dax[0] = 'D';
  REQUIRE(fsync(fd) == 0);  // the file's sync point: plain mappings read again
  CHECK(plain[0] == 'D');
  plain[2 * B] = 'q';
  REQUIRE(msync(plain, 4 * B, MS_SYNC) == 0);  // the plain mapping's sync point
  CHECK(dax[2 * B] == 'q');
  CHECK(plain[3 * B] == 'a');  // cached now
  dax[3 * B] = 'E';
  munmap(dax, m.length);
  REQUIRE(Errno(DaxUnmap(fd, m.map_id)) == "OK");  // and the holder's last word
  CHECK(plain[3 * B] == 'E');
  CHECK(PreadAll(fd, 4, 0) == "Dpaa");
  munmap(plain, 4 * B);
  close(pool);
  close(fd);
  close(plain_fd);
}

}  // namespace
}  // namespace leasefs::testing
