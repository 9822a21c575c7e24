#include "fusefs/daemon/peer_fd.h"

#include <cerrno>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

namespace leasefs::daemon {

namespace {

Result<std::string> Slurp(const std::string& path, int missing_errno) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno == ENOENT ? missing_errno : (errno ? errno : EPERM);
    return Status::Error(err, "cannot read " + path);
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Undoes mountinfo's escapes (\040 for a space, and so on).
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string> Fields(const std::string& line) {
  std::vector<std::string> f;
  std::istringstream in(line);
  for (std::string w; in >> w;) f.push_back(w);
  return f;
}

}  // namespace

std::string DeviceOfMount(const std::string& mountinfo, uint64_t mnt_id) {
  std::istringstream in(mountinfo);
  for (std::string line; std::getline(in, line);) {
    const auto f = Fields(line);
    if (f.size() >= 5 && f[0] == std::to_string(mnt_id)) return f[2];
  }
  return {};
}

std::string DeviceOfMountPoint(const std::string& mountinfo, const std::string& path) {
  std::string dev;
  std::istringstream in(mountinfo);
  for (std::string line; std::getline(in, line);) {
    const auto f = Fields(line);
    if (f.size() >= 5 && Unescape(f[4]) == path) dev = f[2];  // the last one is on top
  }
  return dev;
}

Result<std::string> PeerFiles::OwnDevice() {
  std::lock_guard<std::mutex> l(mu_);
  if (!own_device_.empty()) return own_device_;
  LFS_ASSIGN_OR_RETURN(std::string info, Slurp("/proc/self/mountinfo", EPERM));
  own_device_ = DeviceOfMountPoint(info, mountpoint_);
  if (own_device_.empty()) return Status::Error(EXDEV, "own mount not found");
  return own_device_;
}

Result<PeerFile> PeerFiles::Resolve(pid_t pid, int fd) {
  if (fd < 0 || pid <= 0) return Status::Error(EBADF);
  const std::string proc = "/proc/" + std::to_string(pid);
  LFS_ASSIGN_OR_RETURN(std::string info, Slurp(proc + "/fdinfo/" + std::to_string(fd), EBADF));
  PeerFile pf;
  uint64_t mnt_id = 0;
  bool have_ino = false, have_mnt = false;
  std::istringstream in(info);
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    const std::string value = line.substr(colon + 1);
    try {
      if (key == "flags") pf.flags = static_cast<int>(std::stoul(value, nullptr, 8));
      if (key == "mnt_id") mnt_id = std::stoull(value), have_mnt = true;
      if (key == "ino") pf.ino = std::stoull(value), have_ino = true;
    } catch (const std::exception&) {
      return Status::Error(EBADF, "unreadable fdinfo");
    }
  }
  if (!have_ino || !have_mnt) return Status::Error(EXDEV, "not a file on a mount");
  LFS_ASSIGN_OR_RETURN(std::string own, OwnDevice());
  LFS_ASSIGN_OR_RETURN(std::string mounts, Slurp(proc + "/mountinfo", EBADF));
  if (DeviceOfMount(mounts, mnt_id) != own) return Status::Error(EXDEV, "another filesystem");
  return pf;
}

}  // namespace leasefs::daemon
