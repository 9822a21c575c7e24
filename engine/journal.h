// Journal: makes a set of metadata updates atomic across a crash (redo log).
//
// Commit protocol (see docs/pool_format.md "Journal"):
//   1. write the records to the journal body and the header (magic, seq,
//      checksums of header and body); flush both; drain.   <- commit point
//   2. apply each record at its home location; flush; drain.
//   3. zero the header magic (one 8-byte store); flush; drain.
// A crash before the drain of step 1 leaves either no valid header or a header
// whose body checksum fails: the transaction never happened. A crash after it
// leaves a valid header; Recover() applies the records again (they are plain
// copies, so applying twice is harmless) and then does step 3.
//
// Thread safety: none. The engine serialises Commit and Recover under its
// writer lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/result.h"
#include "engine/layout.h"
#include "engine/media.h"

namespace leasefs::engine {

// Updates staged for one transaction. Nothing reaches the pool until
// Journal::Commit.
class Tx {
 public:
  explicit Tx(char* pool_base) : base_(pool_base) {}

  // Stages a copy of [src, src+n) to the pool address `dst`.
  void Copy(void* dst, const void* src, size_t n);
  template <typename T>
  void Put(T* dst, const T& value) {
    Copy(dst, &value, sizeof(T));
  }
  // Stages setting `count` uint32 words at `dst` to `value`.
  void Fill32(uint32_t* dst, uint32_t value, size_t count);

  bool empty() const noexcept { return records_ == 0; }
  // Bytes the journal body needs for this transaction.
  size_t body_bytes() const noexcept { return body_.size() * 8; }
  uint32_t record_count() const noexcept { return records_; }

 private:
  friend class Journal;
  char* base_;
  std::vector<uint64_t> body_;  // records in on-media form
  uint32_t records_ = 0;
  size_t last_copy_ = SIZE_MAX;  // word index of the last kRecCopy record
};

class Journal {
 public:
  // Attaches to the journal region described by `sb`; `media` must outlive it.
  Journal(Media& media, const layout::Superblock& sb);

  // Applies a committed transaction left by a crash, if there is one.
  // Returns true when one was replayed.
  // Errors: EUCLEAN when a transaction passes its checksums but a record
  // points outside the metadata and data regions (the pool is corrupt; nothing
  // is applied).
  Result<bool> Recover();

  Tx Begin() const { return Tx(media_.base()); }
  // Largest body a transaction may have.
  size_t capacity() const noexcept { return capacity_; }
  // Makes every update of `tx` durable and visible, atomically.
  // REQUIRES: tx.body_bytes() <= capacity().
  void Commit(Tx& tx);

  uint64_t last_seq() const noexcept { return seq_; }
  uint64_t commits() const noexcept { return commits_; }

  // Checks a committed transaction's records without applying them.
  // Exposed for fsck. Errors: as Recover().
  Status ValidateRecords(const char* body, uint64_t bytes, uint32_t count) const;
  // True if the header holds a committed transaction (magic and both
  // checksums good).
  bool HasCommitted() const;

 private:
  void Apply(const char* body, uint64_t bytes);
  void Invalidate();

  Media& media_;
  layout::JournalHeader* header_;
  char* body_;
  size_t capacity_;
  uint64_t meta_begin_;  // pool bytes records may touch: [meta_begin_, meta_end_)
  uint64_t meta_end_;
  uint64_t seq_ = 0;
  uint64_t commits_ = 0;
};

}  // namespace leasefs::engine
