#include "tools/leasectl/top_watch.h"

#include <fcntl.h>
#include <time.h>

#include <cerrno>
#include <memory>
#include <set>
#include <utility>

#include <sys/ioctl.h>
#include <sys/stat.h>

#include "base/unique_fd.h"
#include "lease/client/leasefs_lease.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/mount_view.h"
#include "tools/leasectl/text.h"

namespace leasefs::leasectl {

namespace {

// Events kept between looks: more than any terminal shows.
constexpr size_t kKeptEvents = 512;
// How long a walk's answer for an inode (found or not) is trusted.
constexpr uint64_t kWalkKeepNs = 10 * kNsPerSec;

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

int TopWatcher::Look(TopData* out) {
  const UniqueFd fd = Open(path_, O_RDONLY);
  if (!fd.valid()) return errno;
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return errno;
  if (st.st_dev != dev_) return kUnmounted;
  *out = TopData{};
  out->mount = path_;
  std::vector<leasefs_lease_info> leases;
  if (const int err = ListLeases(fd.get(), &leases); err != 0) return err;
  for (const leasefs_lease_info& l : leases) out->leases.push_back({l, ""});
  if (const int err = LookPins(fd.get(), leases, out); err != 0) return err;
  if (const int err = LookDax(fd.get(), out); err != 0) return err;
  if (const int err = ReadEvents(fd.get()); err != 0) return err;
  out->events.assign(events_.begin(), events_.end());
  FindFiles(out);
  return 0;
}

int TopWatcher::LookPins(int fd, const std::vector<leasefs_lease_info>& leases, TopData* out) {
  PinListing listing;
  const int err = ListPins(fd, &listing);
  if (err == EOPNOTSUPP || err == ENOTTY) return 0;  // a daemon without pins
  if (err != 0) return err;
  out->have_pins = true;
  out->pin_totals = {listing.contexts, listing.refused_bad_rkey, listing.refused_fenced,
                     listing.refused_other, listing.malformed_frames};
  std::map<uint64_t, uint32_t> states;
  for (const leasefs_lease_info& l : leases) states.emplace(l.id, l.state);
  for (const leasefs_pin_record& p : listing.pins) {
    const auto s = states.find(p.lease_id);
    out->pins.push_back({p, "", s == states.end() ? LEASEFS_STATE_NONE : s->second, false});
  }
  return 0;
}

int TopWatcher::LookDax(int fd, TopData* out) {
  auto page = std::make_unique<leasefs_dax_list>();
  uint64_t after = 0;
  for (;;) {
    *page = leasefs_dax_list{};
    page->after = after;
    if (ioctl(fd, LEASEFS_IOC_DAX_LIST, page.get()) != 0) {
      const int err = errno;
      if (err == ENOTTY || err == EOPNOTSUPP) return 0;  // a daemon without DAX
      return err;
    }
    for (uint32_t i = 0; i < page->count; ++i) {
      if (page->records[i].quarantined > 0) out->quarantined.push_back(page->records[i]);
    }
    if (!(page->flags & LEASEFS_LIST_MORE)) break;
    if (page->count == 0 || page->records[page->count - 1].map_id <= after) return EPROTO;
    after = page->records[page->count - 1].map_id;
  }
  out->have_dax = true;
  out->dax_records = page->records_total;
  out->quarantined_bytes = page->quarantined_total;
  return 0;
}

int TopWatcher::ReadEvents(int fd) {
  auto page = std::make_unique<leasefs_event[]>(LEASEFS_EVENTS_MAX);
  // The daemon keeps 4096 events: 32 pages; more pages means events come
  // faster than they are read, and the next look goes on.
  for (int pages = 0; pages < 64; ++pages) {
    size_t n = 0;
    uint64_t lost = 0;
    const int rc = leasefs_read_events(fd, after_, 0, page.get(), LEASEFS_EVENTS_MAX, &n, &lost);
    if (rc == -EBUSY || rc == -EINTR) return 0;  // the next look asks again
    if (rc != 0) return -rc;
    for (size_t i = 0; i < n; ++i) events_.push_back(page[i]);
    while (events_.size() > kKeptEvents) events_.pop_front();
    after_ = n > 0 ? page[n - 1].seq : after_ + lost;
    if (n < LEASEFS_EVENTS_MAX) break;
  }
  return 0;
}

void TopWatcher::FindFiles(TopData* out) {
  std::map<pid_t, std::map<uint64_t, std::string>> open_files;
  auto open_in = [&](pid_t pid, uint64_t ino) -> std::string {
    if (pid <= 0) return "";
    auto it = open_files.find(pid);
    if (it == open_files.end()) it = open_files.emplace(pid, OpenFilesOf(pid, dev_)).first;
    const auto f = it->second.find(ino);
    return f == it->second.end() ? "" : f->second;
  };
  std::map<uint64_t, pid_t> holders;  // by lease id
  for (LeaseRow& r : out->leases) {
    r.file = open_in(r.info.holder_pid, r.info.ino);
    holders.emplace(r.info.id, r.info.holder_pid);
  }
  for (PinRow& r : out->pins) {
    if (const auto h = holders.find(r.rec.lease_id); h != holders.end())
      r.file = open_in(h->second, r.rec.ino);
    if (r.file.empty()) r.file = open_in(r.rec.creator_pid, r.rec.ino);
  }
  // The rest by a walk of the mount, at most one per inode every
  // kWalkKeepNs: a large tree is not read twice a second.
  const uint64_t now = MonotonicNs();
  std::set<uint64_t> missing;
  auto want = [&](const std::string& file, uint64_t ino) {
    const auto w = walked_.find(ino);
    if (file.empty() && (w == walked_.end() || now - w->second.at_ns >= kWalkKeepNs))
      missing.insert(ino);
  };
  for (const LeaseRow& r : out->leases) want(r.file, r.info.ino);
  for (const PinRow& r : out->pins) want(r.file, r.rec.ino);
  if (!missing.empty()) {
    const std::map<uint64_t, std::string> found =
        FindInodes(MountRoot(path_, dev_), missing, kWalkBudget);
    for (const uint64_t ino : missing) {
      const auto f = found.find(ino);
      walked_[ino] = {f == found.end() ? "" : f->second, now};
    }
  }
  auto walked = [&](std::string* file, uint64_t ino) {
    if (const auto w = walked_.find(ino); file->empty() && w != walked_.end())
      *file = w->second.path;
  };
  for (LeaseRow& r : out->leases) walked(&r.file, r.info.ino);
  for (PinRow& r : out->pins) walked(&r.file, r.rec.ino);
}

std::string LostText(int err) {
  switch (err) {
    case kUnmounted:
      return "the mount went away (unmounted)";
    case ENOTCONN:
    case ECONNABORTED:
      return "the mount went away (its daemon is gone: " + ErrorText(err) + ")";
    case ENODEV:
    case ENOENT:
    case ESTALE:
      return "the mount went away (" + ErrorText(err) + ")";
    default:
      return ErrorText(err);
  }
}

}  // namespace leasefs::leasectl
