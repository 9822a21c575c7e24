#include "tests/crash/fuse_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "leasefs/ioctl.h"

namespace leasefs::crashtest {

std::vector<std::string> FsckCheckArgs() {
  const char* v = std::getenv("LEASEFS_FSCK_CHECK_ARGS");
  std::string s = v ? v : "-n";
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

TimedResult RunFor(const std::vector<std::string>& argv, std::chrono::milliseconds limit) {
  TimedResult t;
  char tmpl[] = "/tmp/leasefs-crash-out-XXXXXX";
  int fd = mkstemp(tmpl);
  unlink(tmpl);
  std::vector<char*> v;
  for (const auto& a : argv) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    execv(v[0], v.data());
    _exit(127);
  }
  int status = 0;
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() >= end) {
      t.timed_out = true;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) t.r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) t.r.term_signal = WTERMSIG(status);
  lseek(fd, 0, SEEK_SET);
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;)
    t.r.output.append(buf, static_cast<size_t>(n));
  close(fd);
  return t;
}

int MountsOn(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt;
    f >> id >> parent >> dev >> root >> mnt;
    n += mnt == path;
  }
  return n;
}

bool IsMounted(const std::string& path) { return MountsOn(path) > 0; }

bool FuseAnswers(const std::string& path) {
  constexpr long kFuseSuperMagic = 0x65735546;
  struct statfs sf {};
  return statfs(path.c_str(), &sf) == 0 && sf.f_type == kFuseSuperMagic;
}

std::string MountAndWait(testing::TestMount& m) {
  // TestMount::Mount returns once statfs reaches the new daemon.
  std::string out;
  if (!m.Mount(&out)) return "mount failed: " + out;
  if (!FuseAnswers(m.mnt())) return "the mount does not answer statfs:\n" + Tail(m.DaemonLog());
  return {};
}

MountSweeper::~MountSweeper() {
  if (path.empty()) return;
  for (int i = 0; i < 100 && IsMounted(path); ++i) DetachMount(path);
  rmdir(path.c_str());
}

void DetachMount(const std::string& path) {
  testing::Run({"/bin/fusermount3", "-u", "-z", "-q", path});
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool WriteWhole(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  return done == data.size();
}

bool CopyWhole(const std::string& from, const std::string& to) {
  int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return false;
  int out = open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    close(in);
    return false;
  }
  bool ok = true;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0) ok = false;
    if (n <= 0) break;
    if (write(out, buf, static_cast<size_t>(n)) != n) {
      ok = false;
      break;
    }
  }
  close(in);
  close(out);
  return ok;
}

ScratchDir::ScratchDir() {
  char t[] = "/tmp/leasefs-crash-mnt-XXXXXX";
  if (!mkdtemp(t)) throw std::runtime_error("mkdtemp failed");
  path_ = t;
}

ScratchDir::~ScratchDir() {
  if (IsMounted(path_)) DetachMount(path_);
  rmdir(path_.c_str());
}

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::vector<std::string> SplitLines(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    out.push_back(s.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

DaemonProcess::DaemonProcess(const std::string& pool, const std::string& mnt,
                             const std::vector<std::string>& extra_args)
    : mnt_(mnt) {
  char tmpl[] = "/tmp/leasefs-crash-log-XXXXXX";
  log_fd_ = mkstemp(tmpl);
  unlink(tmpl);
  std::vector<std::string> argv = {testing::LeasefsBin(), pool, mnt, "-f"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> v;
  for (const auto& a : argv) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(log_fd_, 1);
    dup2(log_fd_, 2);
    execv(v[0], v.data());
    _exit(127);
  }
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    Reap(true);
  }
  if (IsMounted(mnt_)) DetachMount(mnt_);
  if (log_fd_ >= 0) close(log_fd_);
}

bool DaemonProcess::Reap(bool block) {
  int status = 0;
  if (pid_ <= 0) return true;
  if (waitpid(pid_, &status, block ? 0 : WNOHANG) != pid_) return false;
  pid_ = -1;
  if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result_.term_signal = WTERMSIG(status);
  result_.output = output();
  return true;
}

std::string DaemonProcess::output() const {
  std::string out;
  char buf[4096];
  for (off_t off = 0;;) {
    ssize_t n = pread(log_fd_, buf, sizeof buf, off);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

DaemonProcess::State DaemonProcess::Await(std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (Reap(false)) return State::kExited;
    if (IsMounted(mnt_)) {
      struct stat st {};
      if (stat(mnt_.c_str(), &st) == 0) return State::kMounted;
    }
    if (std::chrono::steady_clock::now() >= end) return State::kStuck;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int DaemonProcess::Unmount() {
  if (pid_ <= 0) return result_.signaled() ? 128 + result_.term_signal : result_.exit_code;
  testing::Run({"/bin/fusermount3", "-u", mnt_});
  for (int i = 0; i < 1000; ++i) {
    if (Reap(false)) return result_.signaled() ? 128 + result_.term_signal : result_.exit_code;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  Reap(true);
  return -2;
}

namespace {

struct BmapRun {
  const std::string* path;
  uint64_t file_offset;
  uint64_t pool_block;
  uint64_t blocks;
  uint32_t flags;
  uint32_t refcount;
};

// Every run of `path`'s block map; "" or what went wrong.
std::string ReadBmap(const std::string& path, std::vector<BmapRun>* runs) {
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return path + ": open: " + std::strerror(errno);
  auto b = std::make_unique<leasefs_bmap>();
  std::string err;
  for (uint64_t start = 0;;) {
    std::memset(b.get(), 0, sizeof(*b));
    b->start = start;
    if (ioctl(fd, LEASEFS_IOC_BMAP, b.get()) != 0) {
      err = path + ": LEASEFS_IOC_BMAP: " + std::strerror(errno);
      break;
    }
    for (uint32_t i = 0; i < b->count; ++i) {
      const leasefs_extent& e = b->extents[i];
      if (b->block_size == 0 || e.pool_offset % b->block_size || e.length % b->block_size ||
          e.length == 0) {
        err = path + ": a run at file offset " + std::to_string(e.file_offset) +
              " is not whole blocks";
        break;
      }
      runs->push_back({&path, e.file_offset, e.pool_offset / b->block_size,
                       e.length / b->block_size, e.flags, e.refcount});
    }
    if (!err.empty() || !(b->flags & LEASEFS_BMAP_MORE)) break;
    if (b->next <= start) {
      err = path + ": LEASEFS_IOC_BMAP does not advance from " + std::to_string(start);
      break;
    }
    start = b->next;
  }
  close(fd);
  return err;
}

}  // namespace

SharingReport CheckSharing(const std::string& root) {
  SharingReport rep;
  std::set<ino_t> seen;
  std::vector<std::unique_ptr<std::string>> paths;  // stable, for BmapRun::path
  std::vector<BmapRun> runs;
  std::vector<std::string> errors;
  std::function<void(const std::string&)> walk = [&](const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) {
      errors.push_back(dir + ": opendir: " + std::strerror(errno));
      return;
    }
    std::vector<std::string> subdirs;
    while (struct dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string p = dir + "/" + name;
      struct stat st {};
      if (lstat(p.c_str(), &st) != 0) {
        errors.push_back(p + ": lstat: " + std::strerror(errno));
        continue;
      }
      if (S_ISDIR(st.st_mode)) subdirs.push_back(p);
      if (!S_ISREG(st.st_mode) || !seen.insert(st.st_ino).second) continue;
      paths.push_back(std::make_unique<std::string>(p));
      ++rep.files;
      if (std::string err = ReadBmap(*paths.back(), &runs); !err.empty()) errors.push_back(err);
    }
    closedir(d);
    for (const auto& s : subdirs) walk(s);
  };
  walk(root);

  std::unordered_map<uint64_t, uint32_t> mapped;  // pool block -> extents mapping it
  for (const BmapRun& r : runs)
    for (uint64_t i = 0; i < r.blocks; ++i) ++mapped[r.pool_block + i];
  rep.blocks = mapped.size();
  for (const auto& [block, n] : mapped) rep.shared += n > 1;
  // Blocks whose reported refcount is wrong, with who maps them.
  std::map<uint64_t, std::string> bad;
  for (const BmapRun& r : runs) {
    for (uint64_t i = 0; i < r.blocks; ++i) {
      const uint64_t b = r.pool_block + i;
      const uint32_t n = mapped[b];
      const bool shared_flag = r.flags & LEASEFS_EXTENT_SHARED;
      if (r.refcount == n && shared_flag == (n > 1)) continue;
      std::string& line = bad[b];
      if (line.empty())
        line = "pool block " + std::to_string(b) + ": refcount " + std::to_string(r.refcount) +
               (shared_flag ? " (SHARED)" : "") + " but mapped by " + std::to_string(n) +
               " extents:";
      line += " " + *r.path + " at " + std::to_string(r.file_offset + i * 4096) + ";";
    }
  }
  for (const auto& [b, line] : bad) {
    if (errors.size() >= 12) break;
    errors.push_back(line);
  }
  if (bad.size() > 0)
    errors.push_back(std::to_string(bad.size()) + " pool blocks have a wrong refcount");
  for (const auto& e : errors) rep.error += e + "\n";
  return rep;
}

}  // namespace leasefs::crashtest
