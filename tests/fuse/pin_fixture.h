// Shared pieces of the pin tests on a mount (pins_test.cc,
// pin_policies_test.cc, verbs_pins_test.cc): the mount they run on, and the
// lease, pin, block-map and DAX-record look-ups they check with. Every
// look-up REQUIREs its ioctl to succeed.
#pragma once

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {

inline constexpr uint64_t B = 4096;  // one block
inline constexpr uint32_t kRW = LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ;

// "OK" for 0, else the errno's name; rc may be -errno or errno.
inline std::string Errno(int rc) { return rc == 0 ? "OK" : ErrnoName(rc < 0 ? -rc : rc); }

// A fresh pool mounted with a 1 s lease break time and the -o options
// `extra` ("pinned_break=fence", say) besides.
struct Mounted {
  explicit Mounted(const std::string& extra = "") : m([&] {
      MountOptions o;
      o.options = "allow_other,lease_break_time=1" + (extra.empty() ? "" : "," + extra);
      return o;
    }()) {}
  TestMount m;
};

// Polls `pred` every 10 ms for up to `ms`; its last answer.
inline bool Eventually(const std::function<bool()>& pred, int ms = 5000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// leasefs_set_lease for the caller itself (no holder process, no wait).
inline int Lease(int fd, uint64_t off, uint64_t len, uint32_t type, uint32_t flags = 0) {
  return leasefs_set_lease(fd, off, len, type, flags, 0, 0, nullptr);
}

// Every pin the caller may see, page by page; *head gets the last page's
// header (its counts) when given.
inline std::vector<leasefs_pin_record> Pins(int fd, leasefs_pin_list* head = nullptr) {
  std::vector<leasefs_pin_record> out;
  auto page = std::make_unique<leasefs_pin_list>();
  uint64_t after = 0;
  for (;;) {
    REQUIRE(leasefs_pin_list_page(fd, after, page.get()) == 0);
    for (uint32_t i = 0; i < page->count; ++i) out.push_back(page->pins[i]);
    if (head != nullptr) *head = *page;
    if (!(page->flags & LEASEFS_LIST_MORE)) break;
    after = out.back().pin_id;
  }
  return out;
}

// A file of written bytes (blocks of its own, as a pin under an EXCLUSIVE
// lease needs), mode 0666, open read-write.
inline int MakeFile(const std::string& path, const std::string& data) {
  REQUIRE(WriteFile(path, data, 0666) == "");
  REQUIRE(chmod(path.c_str(), 0666) == 0);
  const int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  return fd;
}

// The pool offsets of a file's blocks, from BMAP.
inline std::set<uint64_t> PoolBlocks(int fd) {
  std::set<uint64_t> out;
  auto b = std::make_unique<leasefs_bmap>();
  *b = leasefs_bmap{};
  for (;;) {
    REQUIRE(ioctl(fd, LEASEFS_IOC_BMAP, b.get()) == 0);
    for (uint32_t i = 0; i < b->count; ++i) {
      for (uint64_t o = 0; o < b->extents[i].length; o += B) {
        out.insert(b->extents[i].pool_offset + o);
      }
    }
    if (!(b->flags & LEASEFS_BMAP_MORE)) break;
    b->start = b->next;
  }
  return out;
}

// The owners of the mount's DAX records, one entry per record; *l gets the
// whole list (its quarantine totals).
inline std::multiset<pid_t> RecordOwners(int fd, leasefs_dax_list* l) {
  *l = leasefs_dax_list{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_DAX_LIST, l) == 0);
  std::multiset<pid_t> out;
  for (uint32_t i = 0; i < l->count; ++i) out.insert(l->records[i].owner_pid);
  return out;
}

}  // namespace leasefs::testing
