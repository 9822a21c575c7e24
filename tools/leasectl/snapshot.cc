#include "tools/leasectl/snapshot.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "base/unique_fd.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "tools/leasectl/bmap_format.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/pin_format.h"

namespace leasefs::leasectl {

namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

uint64_t Now(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

// A regular file the walk met.
struct Found {
  std::string path;
  uint64_t ino = 0;
};

// Every regular file under `root` once (the first name met for one with
// several links); *complete is false when the budget ran out.
std::vector<Found> RegularFiles(const std::string& root, bool* complete) {
  std::vector<Found> files;
  std::map<uint64_t, size_t> seen;
  const size_t left = WalkMount(root, kSnapshotWalkBudget, [&](const std::string& path,
                                                             const dirent& e) {
    bool regular = e.d_type == DT_REG;
    if (e.d_type == DT_UNKNOWN) {
      struct stat st {};
      regular = lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
    }
    if (regular && seen.emplace(e.d_ino, files.size()).second)
      files.push_back({path, e.d_ino});
    return true;
  });
  *complete = left > 0;
  return files;
}

// One file as the snapshot lists it: {"file", "ino", "size", "extents"}
// (extents as `bmap --json` gives them), or with "extents": null and
// "error" when its block map cannot be read.
OJson FileJson(const Found& f) {
  OJson j;
  j["file"] = ValidUtf8(f.path);
  j["ino"] = f.ino;
  // O_NOFOLLOW: the entry may have become a symlink since readdir.
  UniqueFd fd(open(f.path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  BlockMap map;
  int err = fd.valid() ? 0 : errno;
  struct stat st {};
  if (err == 0 && (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))) err = ENOENT;
  if (err == 0) err = ReadBlockMap(fd.get(), &map);
  if (err != 0) {
    j["size"] = err == ENOENT ? 0 : static_cast<uint64_t>(st.st_size);
    j["extents"] = nullptr;
    j["error"] = ErrorText(err);
    return j;
  }
  map.file = f.path;
  OJson bmap = BlockMapJson(map);
  j["size"] = map.size;
  j["extents"] = std::move(bmap["extents"]);
  return j;
}

// The event log from its start, as `events --json` prints it.
int EventsJson(int fd, OJson* out) {
  *out = OJson::array();
  auto events = std::make_unique<leasefs_event[]>(LEASEFS_EVENTS_MAX);
  uint64_t after = 0;
  for (;;) {
    size_t n = 0;
    uint64_t lost = 0;
    const int rc =
        leasefs_read_events(fd, after, 0, events.get(), LEASEFS_EVENTS_MAX, &n, &lost);
    if (rc != 0) return -rc;
    if (lost != 0) out->push_back({{"lost", lost}});
    for (size_t i = 0; i < n; ++i) out->push_back(EventJson(events[i]));
    if (n == 0) return 0;
    after = events[n - 1].seq;
  }
}

// The leases, with the paths the walk found for their inodes.
int LeasesPart(int fd, const std::map<uint64_t, std::string>& paths,
               std::vector<leasefs_lease_info>* leases, OJson* out) {
  if (const int err = ListLeases(fd, leases); err != 0) return err;
  std::vector<LeaseRow> rows;
  for (const leasefs_lease_info& l : *leases) {
    const auto p = paths.find(l.ino);
    rows.push_back({l, p == paths.end() ? "" : p->second});
  }
  *out = LeasesJson(rows, Now(CLOCK_MONOTONIC));
  return 0;
}

// The pins, without rkeys: a report is made to be shown, and whoever reads an
// rkey may write the pinned range.
int PinsPart(int fd, const std::map<uint64_t, std::string>& paths,
             const std::vector<leasefs_lease_info>& leases, OJson* out) {
  PinListing listing;
  const int err = ListPins(fd, &listing);
  if (err == EOPNOTSUPP) {  // a daemon without pins
    *out = PinsJson({}, {});
    return 0;
  }
  if (err != 0) return err;
  std::vector<PinRow> rows;
  for (const leasefs_pin_record& r : listing.pins) {
    PinRow row;
    row.rec = r;
    if (const auto p = paths.find(r.ino); p != paths.end()) row.file = p->second;
    for (const leasefs_lease_info& l : leases)
      if (l.id == r.lease_id) row.lease_state = l.state;
    rows.push_back(std::move(row));
  }
  *out = PinsJson(rows, {listing.contexts, listing.refused_bad_rkey, listing.refused_fenced,
                         listing.refused_other, listing.malformed_frames});
  return 0;
}

// What the processes that hold the mount's leases (other than zombies,
// whose taker may be gone and its pid reused) and made its pin contexts are
// called now: {"PID": comm}, for the timeline's lanes.
OJson Processes(const std::vector<leasefs_lease_info>& leases, const OJson& pins) {
  std::set<int64_t> pids;
  for (const leasefs_lease_info& l : leases)
    if (l.state != LEASEFS_STATE_ZOMBIE && l.holder_pid > 0) pids.insert(l.holder_pid);
  for (const OJson& p : pins["pins"]) pids.insert(p["creator_pid"].get<int64_t>());
  OJson out = OJson::object();
  for (const int64_t pid : pids) {
    char comm[64] = {};
    const UniqueFd fd(open(fmt::format("/proc/{}/comm", pid).c_str(), O_RDONLY | O_CLOEXEC));
    const ssize_t n = fd.valid() ? read(fd.get(), comm, sizeof(comm) - 1) : -1;
    if (n <= 0) continue;
    std::string name(comm, static_cast<size_t>(n));
    if (name.back() == '\n') name.pop_back();
    out[std::to_string(pid)] = ValidUtf8(name);
  }
  return out;
}

// block_size, pool_blocks, data_start, data_blocks, free_blocks.
int Geometry(int fd, OJson* j) {
  struct statfs fs {};
  if (fstatfs(fd, &fs) != 0) return errno;
  auto info = std::make_unique<leasefs_dax_info>();
  if (ioctl(fd, LEASEFS_IOC_DAX_INFO, info.get()) != 0) return IoctlError(fd, errno);
  if (info->block_size == 0 || static_cast<uint64_t>(fs.f_bsize) != info->block_size)
    return EPROTO;
  // The data area is the pool's tail: statfs's f_blocks is the
  // superblock's data_blocks exactly, DAX_INFO's pool_bytes the whole pool
  // that pool offsets count in.
  const uint64_t pool_blocks = info->pool_bytes / info->block_size;
  if (fs.f_blocks > pool_blocks) return EPROTO;
  (*j)["block_size"] = info->block_size;
  (*j)["pool_blocks"] = pool_blocks;
  (*j)["data_start"] = pool_blocks - fs.f_blocks;
  (*j)["data_blocks"] = fs.f_blocks;
  (*j)["free_blocks"] = fs.f_bfree;
  return 0;
}

}  // namespace

std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok && n > 1) {
      // No overlong forms, no surrogates, nothing past U+10FFFF.
      uint32_t cp = c & (0x7f >> n);
      for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
      static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[n] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
    }
    if (!ok) {
      out += "\xef\xbf\xbd";  // U+FFFD for one bad byte
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

OJson DaxJson(const DaxListing& dax) {
  OJson j;
  j["records_total"] = dax.records_total;
  j["records_max"] = dax.records_max;
  j["quarantined_bytes"] = dax.quarantined_total;
  j["records"] = OJson::array();
  for (const leasefs_dax_record& r : dax.records) {
    j["records"].push_back({{"map_id", r.map_id},
                            {"ino", r.ino},
                            {"file_offset", r.file_offset},
                            {"pool_offset", r.pool_offset},
                            {"length", r.length},
                            {"quarantined", r.quarantined},
                            {"owner_pid", r.owner_pid},
                            {"write", (r.flags & LEASEFS_DAX_REC_WRITE) != 0},
                            {"leased", (r.flags & LEASEFS_DAX_REC_UNLEASED) == 0},
                            {"closed", (r.flags & LEASEFS_DAX_REC_CLOSED) != 0},
                            {"restart", (r.flags & LEASEFS_DAX_REC_RESTART) != 0},
                            {"open_file", r.open_file}});
  }
  return j;
}

int CollectSnapshot(const std::string& mount_path, Json* out) {
  const UniqueFd fd = Open(mount_path, O_RDONLY);
  if (!fd.valid()) return errno;
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return errno;
  // VERSION answers on a directory too (BMAP, ProbeLeasefs's, does not).
  leasefs_version version{};
  if (ioctl(fd.get(), LEASEFS_IOC_VERSION, &version) != 0) return errno;
  OJson j;
  const std::string root = MountRoot(mount_path, st.st_dev);
  j["mount"] = ValidUtf8(root.empty() ? mount_path : root);
  j["time"] = Now(CLOCK_REALTIME);
  if (const int err = Geometry(fd.get(), &j); err != 0) return err;
  leasefs_pin_info pin_info{};
  j["daemon_pid"] = leasefs_pin_get_info(fd.get(), &pin_info) == 0 ? pin_info.daemon_pid : 0;

  bool complete = false;
  const std::vector<Found> found = root.empty() ? std::vector<Found>{}
                                                : RegularFiles(root, &complete);
  std::map<uint64_t, std::string> paths;
  j["files_complete"] = complete;
  j["files"] = OJson::array();
  for (const Found& f : found) {
    paths.emplace(f.ino, ValidUtf8(f.path));
    j["files"].push_back(FileJson(f));
  }
  std::vector<leasefs_lease_info> leases;
  OJson part;
  if (const int err = LeasesPart(fd.get(), paths, &leases, &part); err != 0) return err;
  j["leases"] = std::move(part);
  if (const int err = PinsPart(fd.get(), paths, leases, &part); err != 0) return err;
  j["processes"] = Processes(leases, part);
  j["pins"] = std::move(part);
  DaxListing dax;
  if (const int err = ListDax(fd.get(), &dax); err != 0) return err;
  j["dax"] = DaxJson(dax);
  if (const int err = EventsJson(fd.get(), &part); err != 0) return err;
  j["events"] = std::move(part);
  *out = Json(j);
  return 0;
}

}  // namespace leasefs::leasectl
