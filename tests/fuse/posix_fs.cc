#include "tests/fuse/posix_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "tests/support/needs.h"

// This file holds the doctest runner (and main) of every posix_* binary.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

namespace leasefs::testing {

// --- Syscall results as text -------------------------------------------------

std::string ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "errno " + std::to_string(e);
}

std::string Err(long rc) {
  const int e = errno;  // before anything else can change it
  return rc == -1 ? ErrnoName(e) : "OK";
}

// --- Where the tests run -------------------------------------------------------

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string MakeTempDir(const std::string& parent, const char* prefix) {
  std::string t = parent + "/" + prefix + "XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data()))
    throw std::runtime_error("mkdtemp in " + parent + ": " + std::strerror(errno));
  return buf.data();
}

void RemoveTree(const std::string& dir) {
  if (!dir.empty()) Run({"/bin/rm", "-rf", "--one-file-system", dir});
}

// The mount(2) flags of FsOptions::mount_options, for reference mode.
unsigned long MountFlags(const std::string& options) {
  static const std::pair<std::string_view, unsigned long> kFlags[] = {
      {"noatime", MS_NOATIME},       {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME},
      {"nodiratime", MS_NODIRATIME}, {"lazytime", MS_LAZYTIME},
  };
  unsigned long flags = 0;
  size_t pos = 0;
  while (pos <= options.size()) {
    const size_t end = std::min(options.find(',', pos), options.size());
    const std::string item = options.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    bool known = false;
    for (const auto& [name, flag] : kFlags) {
      if (item != name) continue;
      flags |= flag;
      known = true;
    }
    if (!known) throw std::runtime_error("reference mode: unknown mount option " + item);
  }
  return flags;
}

}  // namespace

bool ReferenceMode() { return !Env("LEASEFS_TEST_REFERENCE_DIR").empty(); }

std::string TestMountOptions() {
  std::string extra = Env("LEASEFS_TEST_MOUNT_OPTIONS");
  return extra.empty() ? "allow_other" : "allow_other," + extra;
}

bool DaemonChecksAlone(const TestFs& fs) {
  if (fs.reference()) return false;
  const std::string o = "," + TestMountOptions() + ",";
  const size_t no = o.rfind(",no_default_permissions,");
  const size_t yes = o.rfind(",default_permissions,");
  return no != std::string::npos && (yes == std::string::npos || yes < no);
}

TestFs::TestFs(FsOptions opts) {
  if (!ReferenceMode()) {
    MountOptions mo;
    mo.pool_size = opts.pool_size;
    mo.mkfs_args = opts.mkfs_args;
    mo.options = TestMountOptions();
    if (!opts.mount_options.empty()) mo.options += "," + opts.mount_options;
    mount_ = std::make_unique<TestMount>(mo);
    root_ = mount_->mnt();
    return;
  }
  if (opts.ref_tmpfs_bytes != 0 || !opts.mount_options.empty()) {
    const unsigned long flags = MountFlags(opts.mount_options);
    tmpfs_mnt_ = MakeTempDir("/tmp", "leasefs-ref-tmpfs-");
    const uint64_t bytes = opts.ref_tmpfs_bytes != 0 ? opts.ref_tmpfs_bytes : uint64_t{64} << 20;
    std::string data = "size=" + std::to_string(bytes) + ",mode=0755";
    if (opts.ref_tmpfs_inodes != 0) data += ",nr_inodes=" + std::to_string(opts.ref_tmpfs_inodes);
    if (::mount("tmpfs", tmpfs_mnt_.c_str(), "tmpfs", flags, data.c_str()) != 0) {
      std::string e = std::strerror(errno);
      rmdir(tmpfs_mnt_.c_str());
      throw std::runtime_error("mount tmpfs: " + e);
    }
    root_ = tmpfs_mnt_;
    return;
  }
  ref_dir_ = MakeTempDir(Env("LEASEFS_TEST_REFERENCE_DIR"), "posix-");
  chmod(ref_dir_.c_str(), 0755);
  root_ = ref_dir_;
}

TestFs::~TestFs() {
  if (!tmpfs_mnt_.empty()) {
    if (umount(tmpfs_mnt_.c_str()) != 0) umount2(tmpfs_mnt_.c_str(), MNT_DETACH);
    rmdir(tmpfs_mnt_.c_str());
  }
  RemoveTree(ref_dir_);
  // mount_'s destructor unmounts and deletes the pool.
}

std::string TestFs::path(const std::string& rel) const { return root_ + "/" + rel; }

std::string TestFs::Remount() {
  if (!mount_) return "";
  const int rc = mount_->Unmount();
  std::string log = mount_->DaemonLog();
  if (rc != 0) return "daemon exited " + std::to_string(rc) + " at unmount: " + log;
  std::string out;
  if (!mount_->Mount(&out)) return "remount failed: " + out;
  return "";
}

std::string TestFs::UnmountFsckRemount() {
  if (!mount_) return "";
  const int rc = mount_->Unmount();
  if (rc != 0) return "daemon exited " + std::to_string(rc) + " at unmount: " + mount_->DaemonLog();
  ProcessResult r = mount_->Fsck();
  std::string err;
  if (r.signaled() || r.exit_code != 0)
    err = "fsck.leasefs exited " +
          (r.signaled() ? "on signal " + std::to_string(r.term_signal)
                        : std::to_string(r.exit_code)) +
          ": " + r.output;
  std::string out;
  if (!mount_->Mount(&out))
    err += (err.empty() ? "" : "; ") + std::string("remount failed: ") + out;
  return err;
}

std::string FsType(const TestFs& fs) {
  if (!fs.reference()) return "leasefs";
  struct statfs sf {};
  if (statfs(fs.root().c_str(), &sf) != 0) return "?";
  switch (static_cast<unsigned long>(sf.f_type)) {
    case TMPFS_MAGIC:
      return "tmpfs";
    case EXT4_SUPER_MAGIC:
      return "ext4";
    case XFS_SUPER_MAGIC:
      return "xfs";
    case BTRFS_SUPER_MAGIC:
      return "btrfs";
    default:
      return std::to_string(static_cast<unsigned long>(sf.f_type));
  }
}

bool FsTypeIn(const TestFs& fs, const std::string& types) {
  return ("," + types + ",").find("," + FsType(fs) + ",") != std::string::npos;
}

// --- Files ----------------------------------------------------------------------

std::string PwriteAll(int fd, const std::string& data, off_t off) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done, off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return "pwrite at " + std::to_string(off + static_cast<off_t>(done)) + ": " +
             ErrnoName(errno);
    }
    if (n == 0) return "pwrite returned 0";
    done += static_cast<size_t>(n);
  }
  return "";
}

std::string PreadAll(int fd, size_t len, off_t off) {
  std::string out(len, '\0');
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, out.data() + done, len - done, off + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

std::string WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode));
  if (!fd.ok()) return "open " + path + ": " + ErrnoName(errno);
  std::string e = PwriteAll(fd.get(), data, 0);
  if (!e.empty()) return e;
  std::string c = fd.Close();
  return c == "OK" ? "" : "close: " + c;
}

std::string ReadFile(const std::string& path, bool* ok) {
  Fd fd(open(path.c_str(), O_RDONLY));
  if (ok) *ok = fd.ok();
  if (!fd.ok()) return "";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && ok) *ok = false;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

struct stat Lstat(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) st = {};
  return st;
}

struct stat Stat(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) st = {};
  return st;
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (!d) return names;
  while (struct dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string Diff(const std::string& got, const std::string& want) {
  if (got == want) return "";
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  char at[96];
  if (i < got.size() && i < want.size())
    std::snprintf(at, sizeof at, "; first difference at byte %zu: 0x%02x, expected 0x%02x", i,
                  static_cast<unsigned char>(got[i]), static_cast<unsigned char>(want[i]));
  else
    std::snprintf(at, sizeof at, "; equal up to byte %zu", i);
  return std::to_string(got.size()) + " bytes, expected " + std::to_string(want.size()) + at;
}

std::string Pattern(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    // xorshift64*
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    out[i] = static_cast<char>((x * 0x2545F4914F6CDD1Dull) >> 56);
  }
  return out;
}

uint64_t Fnv1a(const std::string& data, uint64_t h) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

int64_t Nanos(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void TickClock() { std::this_thread::sleep_for(std::chrono::milliseconds(25)); }

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

std::string Fd::Close() {
  int fd = fd_;
  fd_ = -1;
  return SYS(close(fd));
}

// --- Running as another user ---------------------------------------------------

void ChildChecks::Eq(const std::string& actual, const std::string& expected, const char* what,
                     int line) {
  if (actual != expected)
    failures_ += "line " + std::to_string(line) + ": " + what + " gave " + actual + ", expected " +
                 expected + "\n";
}

void ChildChecks::True(bool ok, const char* what, int line) {
  if (!ok) failures_ += "line " + std::to_string(line) + ": " + what + " is false\n";
}

namespace {

// In a child: switches credentials (exit 126 if it cannot), runs `fn` with
// umask 022 and writes its failures to `out`; never returns.
[[noreturn]] void RunChildChecks(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, int out,
                                 const std::function<void(ChildChecks&)>& fn) {
  if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
    _exit(126);
  umask(022);
  ChildChecks k;
  fn(k);
  // Keep well under the pipe's capacity: the parent reads only after we exit.
  std::string f = k.failures().substr(0, 16384);
  size_t done = 0;
  while (done < f.size()) {
    ssize_t n = write(out, f.data() + done, f.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  _exit(f.empty() ? 0 : 1);
}

// In the parent: reads what the child `pid` wrote to `in` (closing it),
// reaps it, and says what failed ("" if nothing).
std::string CollectChildChecks(pid_t pid, int in, uid_t uid, gid_t gid) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(in);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  const std::string who = "as uid " + std::to_string(uid) + " gid " + std::to_string(gid) + ": ";
  if (rc == 126) return who + "could not switch credentials\n";
  if (rc != 0 && out.empty()) return who + "child exited " + std::to_string(rc) + "\n";
  return out.empty() ? "" : who + "\n" + out;
}

}  // namespace

std::string AsUser(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                   const std::function<void(ChildChecks&)>& fn) {
  int p[2];
  if (pipe(p) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return "fork failed";
  }
  if (pid == 0) {
    close(p[0]);
    RunChildChecks(uid, gid, groups, p[1], fn);
  }
  close(p[1]);
  return CollectChildChecks(pid, p[0], uid, gid);
}

std::vector<std::string> AsUsersAtOnce(const std::vector<uid_t>& uids,
                                       const std::function<void(size_t, ChildChecks&)>& fn) {
  struct Child {
    pid_t pid = -1;
    int in = -1;
  };
  std::vector<Child> children(uids.size());
  std::vector<std::string> failures(uids.size());
  // Every fork from this thread, before any child is waited for: nothing of
  // ours allocates while a fork copies the allocator's state.
  for (size_t i = 0; i < uids.size(); ++i) {
    int p[2];
    if (pipe(p) != 0) {
      failures[i] = "pipe failed";
      continue;
    }
    const pid_t pid = fork();
    if (pid < 0) {
      close(p[0]);
      close(p[1]);
      failures[i] = "fork failed";
      continue;
    }
    if (pid == 0) {
      close(p[0]);
      RunChildChecks(uids[i], uids[i], {}, p[1], [&fn, i](ChildChecks& k) { fn(i, k); });
    }
    close(p[1]);  // before the next fork: only child i may hold it
    children[i] = {pid, p[0]};
  }
  for (size_t i = 0; i < uids.size(); ++i) {
    if (children[i].pid > 0)
      failures[i] = CollectChildChecks(children[i].pid, children[i].in, uids[i], uids[i]);
  }
  return failures;
}

// --- main ------------------------------------------------------------------------

// --- Children driven by the test ------------------------------------------------

CommandedChild::CommandedChild(const std::function<int(int sock)>& body) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error("socketpair: " + ErrnoName(errno));
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork: " + ErrnoName(errno));
  if (pid_ == 0) {
    close(sv[0]);
    _exit(body(sv[1]));  // never back into the test framework
  }
  close(sv[1]);
  sock_ = sv[0];
}

CommandedChild::~CommandedChild() {
  if (pid_ > 0) {
    Send("exit");
    Reap(2000);
  }
  close(sock_);
}

void CommandedChild::Send(const std::string& cmd) { SayLine(sock_, cmd); }

std::string CommandedChild::Reply(int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  std::string line;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{sock_, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return "TIMEOUT";
    char c;
    if (read(sock_, &c, 1) != 1) return "EOF";
    if (c == '\n') return line;
    line += c;
  }
}

void CommandedChild::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  Reap(5000);
}

void CommandedChild::Reap(int timeout_ms) {
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    usleep(10000);
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void SayLine(int sock, const std::string& line) {
  const std::string l = line + "\n";
  (void)!write(sock, l.data(), l.size());
}

bool ReadLine(int sock, std::string* line) {
  line->clear();
  char c;
  while (read(sock, &c, 1) == 1) {
    if (c == '\n') return true;
    *line += c;
  }
  return false;
}

int RunPosixSuite(int argc, char** argv) {
  umask(022);
  if (ReferenceMode()) {
    if (geteuid() != 0) {
      std::fprintf(stderr, "skipped: reference mode needs root (tests switch users)\n");
      return 77;
    }
    std::fprintf(stderr, "reference mode: %s\n", std::getenv("LEASEFS_TEST_REFERENCE_DIR"));
  } else if (!CanMountFuse()) {
    std::fprintf(stderr, "skipped: cannot mount FUSE for other users (need root and /dev/fuse)\n");
    return 77;
  }
  if (const std::string missing = UnmetNeeds(); !missing.empty()) {
    std::fprintf(stderr, "skipped: %s\n", missing.c_str());
    return 77;
  }
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}

}  // namespace leasefs::testing

int main(int argc, char** argv) { return leasefs::testing::RunPosixSuite(argc, argv); }
