#include "tools/leasectl/mount_view.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <deque>
#include <memory>
#include <utility>

#include <fmt/core.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "base/unique_fd.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "tools/leasectl/cli.h"

namespace leasefs::leasectl {

int ListLeases(int fd, std::vector<leasefs_lease_info>* out) {
  auto page = std::make_unique<leasefs_lease_info[]>(LEASEFS_LIST_MAX);
  uint64_t after = 0;
  for (;;) {
    size_t n = 0;
    int more = 0;
    if (const int rc = leasefs_list_leases(fd, after, page.get(), LEASEFS_LIST_MAX, &n, &more);
        rc != 0)
      return -rc;
    out->insert(out->end(), page.get(), page.get() + n);
    if (!more) return 0;
    // A daemon that says "more" must give something, in id order.
    if (n == 0 || page[n - 1].id <= after) return EPROTO;
    after = page[n - 1].id;
  }
}

int ListPins(int fd, PinListing* out) {
  auto page = std::make_unique<leasefs_pin_list>();
  uint64_t after = 0;
  for (;;) {
    if (const int rc = leasefs_pin_list_page(fd, after, page.get()); rc != 0) return -rc;
    out->pins.insert(out->pins.end(), page->pins, page->pins + page->count);
    out->contexts = page->contexts;
    out->refused_bad_rkey = page->refused_bad_rkey;
    out->refused_fenced = page->refused_fenced;
    out->refused_other = page->refused_other;
    out->malformed_frames = page->malformed_frames;
    if (!(page->flags & LEASEFS_LIST_MORE)) return 0;
    if (page->count == 0 || page->pins[page->count - 1].pin_id <= after) return EPROTO;
    after = page->pins[page->count - 1].pin_id;
  }
}

int ReadBlockMap(int fd, BlockMap* map) {
  auto req = std::make_unique<leasefs_bmap>();
  uint64_t start = 0;
  for (bool first = true;; first = false) {
    *req = leasefs_bmap{};
    req->start = start;
    if (ioctl(fd, LEASEFS_IOC_BMAP, req.get()) != 0) return IoctlError(fd, errno);
    // A daemon that breaks the ABI's promises must not make us loop or
    // read past the array.
    if (req->count > LEASEFS_BMAP_MAX || req->block_size == 0) return EPROTO;
    // The size comes from here rather than fstat(2): FUSE may answer that
    // from attributes cached before an ioctl (a reflink, a collapse)
    // changed the size.
    if (first) {
      map->size = req->file_size;
      map->block_size = req->block_size;
    }
    map->extents.insert(map->extents.end(), req->extents, req->extents + req->count);
    if ((req->flags & LEASEFS_BMAP_MORE) == 0) return 0;
    if (req->next <= start) return EPROTO;
    start = req->next;
  }
}

int ListDax(int fd, DaxListing* out) {
  auto page = std::make_unique<leasefs_dax_list>();
  uint64_t after = 0;
  for (;;) {
    *page = leasefs_dax_list{};
    page->after = after;
    if (ioctl(fd, LEASEFS_IOC_DAX_LIST, page.get()) != 0) return errno;
    if (page->count > LEASEFS_DAX_LIST_MAX) return EPROTO;
    out->records.insert(out->records.end(), page->records, page->records + page->count);
    out->quarantined_total = page->quarantined_total;
    out->records_total = page->records_total;
    out->records_max = page->records_max;
    if (!(page->flags & LEASEFS_LIST_MORE)) return 0;
    if (page->count == 0 || page->records[page->count - 1].map_id <= after) return EPROTO;
    after = page->records[page->count - 1].map_id;
  }
}

std::map<uint64_t, std::string> OpenFilesOf(pid_t pid, dev_t dev) {
  std::map<uint64_t, std::string> files;
  const std::string dir = fmt::format("/proc/{}/fd", pid);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return files;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string link = dir + "/" + e->d_name;
    struct stat st {};
    if (stat(link.c_str(), &st) != 0 || st.st_dev != dev) continue;
    char target[4096];
    const ssize_t n = readlink(link.c_str(), target, sizeof(target));
    if (n > 0 && static_cast<size_t>(n) < sizeof(target))
      files.emplace(st.st_ino, std::string(target, static_cast<size_t>(n)));
  }
  closedir(d);
  return files;
}

std::string MountRoot(const std::string& path, dev_t dev) {
  char real[PATH_MAX];
  if (realpath(path.c_str(), real) == nullptr) return "";
  std::string at = real;
  struct stat st {};
  if (stat(at.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    const size_t slash = at.rfind('/');  // realpath's answer is absolute
    at.resize(slash == 0 ? 1 : slash);
  }
  while (at != "/") {
    const size_t slash = at.rfind('/');
    const std::string parent = slash == 0 ? "/" : at.substr(0, slash);
    if (stat(parent.c_str(), &st) != 0 || st.st_dev != dev) break;
    at = parent;
  }
  return at;
}

namespace {

// Opens directory `path` if it is on `dev` (no symlink followed at its last
// step); invalid otherwise.
UniqueFd OpenDirOn(const std::string& path, dev_t dev) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (fd.valid() && (fstat(fd.get(), &st) != 0 || st.st_dev != dev)) return UniqueFd();
  return fd;
}

}  // namespace

size_t WalkMount(const std::string& root, size_t budget, const WalkVisitor& visit) {
  struct stat st {};
  if (stat(root.c_str(), &st) != 0) return budget;
  const dev_t dev = st.st_dev;
  // Paths, not descriptors, wait in the queue: a wide tree would otherwise
  // hold a descriptor per directory.
  std::deque<std::string> todo{root};
  bool more = true;
  while (!todo.empty() && more && budget > 0) {
    const std::string path = std::move(todo.front());
    todo.pop_front();
    UniqueFd fd = OpenDirOn(path, dev);
    if (!fd.valid()) continue;
    const int raw = fd.release();
    DIR* d = fdopendir(raw);
    if (d == nullptr) {
      close(raw);
      continue;
    }
    const std::string prefix = path == "/" ? "/" : path + "/";
    while (const dirent* e = readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (budget == 0) break;
      --budget;
      const std::string child = prefix + e->d_name;
      more = visit(child, *e);
      if (!more) break;
      // DT_UNKNOWN: OpenDirOn tells when the entry comes up.
      if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) todo.push_back(child);
    }
    closedir(d);
  }
  return budget;
}

std::map<uint64_t, std::string> FindInodes(const std::string& root, std::set<uint64_t> wanted,
                                           size_t budget) {
  std::map<uint64_t, std::string> found;
  if (wanted.empty()) return found;
  WalkMount(root, budget, [&](const std::string& path, const dirent& e) {
    if (wanted.erase(e.d_ino) != 0) found.emplace(e.d_ino, path);
    return !wanted.empty();
  });
  return found;
}

}  // namespace leasefs::leasectl
