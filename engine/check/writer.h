// Writer: the only way the checker's repairs reach the pool.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/journal.h"
#include "engine/media.h"

namespace leasefs::check::internal {

// Stages repairs into journal transactions and commits them in batches, a new
// transaction whenever the journal would overflow. Each transaction is atomic;
// the checker orders its repairs so that a crash between two of them leaves
// nothing worse than leaked blocks (see check.h).
//
// Staged updates become visible only at Commit(): callers commit before they
// read back what they wrote.
//
// A disabled writer (check without repair) ignores every call.
class Writer {
 public:
  // `journal` may be null only when `enabled` is false.
  Writer(engine::Journal* journal, bool enabled);
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  bool enabled() const noexcept { return enabled_; }

  // Stages copying [src, src+n) to the pool address `dst`.
  void Copy(void* dst, const void* src, size_t n);
  template <typename T>
  void Put(T* dst, const T& value) {
    Copy(dst, &value, sizeof(T));
  }
  // Stages zeroing `n` bytes at `dst`. REQUIRES: n and dst are multiples of 4.
  void Zero(void* dst, size_t n);
  // Stages setting `count` uint32 words at `dst` to `value`.
  void Fill32(uint32_t* dst, uint32_t value, size_t count);
  // Makes every staged update durable.
  void Commit();

 private:
  // Commits first if a record of `record_bytes` would not fit.
  void MakeRoom(size_t record_bytes);

  engine::Journal* journal_;
  bool enabled_;
  engine::Tx tx_;
};

}  // namespace leasefs::check::internal
