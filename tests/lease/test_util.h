// Helpers shared by the lease table's tests.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <thread>

#include "engine/filesystem.h"
#include "lease/lease_table.h"
#include "leasefs/ioctl.h"

namespace leasefs::lease::test {

constexpr engine::Ino kIno = 10;
constexpr uint32_t R = LEASEFS_LEASE_READ;
constexpr uint32_t W = LEASEFS_LEASE_WRITE;
constexpr uint32_t X = LEASEFS_LEASE_EXCLUSIVE;
constexpr uint32_t U = LEASEFS_LEASE_UNBREAKABLE;
constexpr uint32_t NB = LEASEFS_LEASE_NONBLOCK;

// A holder on open file `of` of kIno; no process (tid 0) unless given.
inline Holder H(OpenFileId of, bool may_unbreak = true, uid_t uid = 1000, pid_t tid = 0) {
  return Holder{of, kIno, tid, uid, may_unbreak};
}

inline LeaseRequest Req(uint32_t type, uint64_t offset, uint64_t length, uint32_t flags = 0) {
  LeaseRequest r;
  r.type = type;
  r.offset = offset;
  r.length = length;
  r.flags = flags;
  return r;
}

inline LeaseRequest Unlock(uint64_t offset, uint64_t length) {
  return Req(LEASEFS_LEASE_UNLOCK, offset, length);
}

// Whoever changes a layout through open file `of` (0: none, e.g. by path).
inline engine::Cred By(OpenFileId of) {
  engine::Cred c(1000, 1000, ::getpid());
  c.set_open_file(of);
  return c;
}

inline engine::LayoutChange Change(engine::LayoutChangeKind kind, uint64_t offset,
                                   uint64_t length, engine::Ino ino = kIno) {
  engine::LayoutChange c;
  c.ino = ino;
  c.kind = kind;
  c.offset = offset;
  c.length = length;
  return c;
}

inline engine::LayoutChange Unmap(uint64_t offset, uint64_t length) {
  return Change(engine::LayoutChangeKind::kUnmap, offset, length);
}

// A truncate from `old_size` to `new_size`: the bytes between change.
inline engine::LayoutChange Truncate(uint64_t old_size, uint64_t new_size) {
  const uint64_t lo = old_size < new_size ? old_size : new_size;
  const uint64_t hi = old_size < new_size ? new_size : old_size;
  engine::LayoutChange c = Unmap(lo, hi - lo);
  c.size_changes = true;
  c.old_size = old_size;
  c.new_size = new_size;
  return c;
}

template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}
inline int Err(const Status& s) { return s.err(); }

inline Options Opts(std::chrono::milliseconds break_time = std::chrono::milliseconds(200)) {
  Options o;
  o.break_time = break_time;
  return o;
}

inline double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Polls until `pred` holds or `limit` passes.
template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

}  // namespace leasefs::lease::test
