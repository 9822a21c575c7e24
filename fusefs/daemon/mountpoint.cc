#include "fusefs/daemon/mountpoint.h"

#include <limits.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

extern char** environ;

namespace leasefs::daemon {

namespace {

// Dead mounts stacked on one mount point that ClearStaleMount removes.
constexpr int kMaxStackedMounts = 16;

Status ErrnoStatus(int err, const std::string& what) { return Status::Error(err, what); }

Result<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) return ErrnoStatus(errno, path);
  return std::string(buf);
}

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && IsOctal(s[i + 1]) && IsOctal(s[i + 2]) &&
        IsOctal(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Fields of a mountinfo line: "id parent dev root MOUNTPOINT opts [tags] - TYPE src sopts".
// Sets *id to the mount's ID when it is a FUSE mount on `path`.
bool LineIsFuseMountOn(const std::string& line, const std::string& path, uint64_t* id = nullptr) {
  std::istringstream in(line);
  uint64_t mount_id = 0;
  std::string parent, dev, root, mnt, field;
  if (!(in >> mount_id >> parent >> dev >> root >> mnt)) return false;
  if (UnescapeMountinfo(mnt) != path) return false;
  while (in >> field && field != "-") {
  }
  std::string type;
  if (!(in >> type)) return false;
  if (id) *id = mount_id;
  return type == "fuse" || type.rfind("fuse.", 0) == 0;
}

// Runs fusermount3 -u -z -q `path` and waits for it.
Status LazyUnmountAsUser(const std::string& path) {
  const char* argv[] = {"fusermount3", "-u", "-z", "-q", path.c_str(), nullptr};
  pid_t pid = 0;
  int err = posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv), environ);
  if (err != 0) return ErrnoStatus(err, "cannot run fusermount3");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoStatus(errno, "waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Status::Error(ENOTCONN, "fusermount3 -u -z " + path + " failed");
  return Status::Ok();
}

}  // namespace

Result<std::string> CanonicalPath(const std::string& path) {
  auto full = RealPath(path);
  if (full.ok() || full.status().err() != ENOTCONN) return full;
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  const std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  if (base.empty() || base == "." || base == "..") return full;
  auto parent = RealPath(dir);
  if (!parent.ok()) return parent;
  return *parent == "/" ? "/" + base : *parent + "/" + base;
}

bool IsFuseMountPoint(const std::string& canonical_path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (LineIsFuseMountOn(line, canonical_path)) return true;
  }
  return false;
}

Result<std::vector<uint64_t>> FuseMountIds(const std::string& mountinfo, const std::string& path) {
  std::ifstream in(mountinfo);
  if (!in) return ErrnoStatus(errno, mountinfo);
  std::vector<uint64_t> ids;
  std::string line;
  uint64_t id = 0;
  while (std::getline(in, line)) {
    if (LineIsFuseMountOn(line, path, &id)) ids.push_back(id);
  }
  return ids;
}

// statfs, not stat: the kernel answers stat from its attribute cache for up
// to attr_timeout after the daemon died, while STATFS always goes to the
// daemon (fs/fuse/inode.c, fuse_statfs).
Status ClearStaleMount(const std::string& canonical_path) {
  // Each dead daemon that was not cleaned up left one mount; unstack them all.
  for (int i = 0; i < kMaxStackedMounts; ++i) {
    struct statfs sfs {};
    if (statfs(canonical_path.c_str(), &sfs) == 0) return Status::Ok();
    if (errno != ENOTCONN) return ErrnoStatus(errno, canonical_path);
    if (!IsFuseMountPoint(canonical_path))
      return Status::Error(ENOTCONN, canonical_path + " is not a FUSE mount point");
    if (geteuid() == 0) {
      if (umount2(canonical_path.c_str(), MNT_DETACH) != 0)
        return ErrnoStatus(errno, "umount2 " + canonical_path);
    } else {
      LFS_RETURN_IF_ERROR(LazyUnmountAsUser(canonical_path));
    }
  }
  return Status::Error(ENOTCONN, canonical_path + " still has dead mounts after " +
                                     std::to_string(kMaxStackedMounts) + " detaches");
}

}  // namespace leasefs::daemon
