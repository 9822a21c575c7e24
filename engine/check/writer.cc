#include "engine/check/writer.h"

#include <cassert>

namespace leasefs::check::internal {

namespace {

constexpr size_t kRecordHeader = sizeof(layout::JournalRecord);

constexpr size_t PaddedBytes(size_t n) { return (n + 7) / 8 * 8; }

}  // namespace

Writer::Writer(engine::Journal* journal, bool enabled)
    : journal_(journal),
      enabled_(enabled && journal != nullptr),
      tx_(journal ? journal->Begin() : engine::Tx(nullptr)) {}

void Writer::MakeRoom(size_t record_bytes) {
  assert(record_bytes <= journal_->capacity());
  if (tx_.body_bytes() + record_bytes > journal_->capacity()) Commit();
}

void Writer::Copy(void* dst, const void* src, size_t n) {
  if (!enabled_ || n == 0) return;
  MakeRoom(kRecordHeader + PaddedBytes(n));
  tx_.Copy(dst, src, n);
}

void Writer::Zero(void* dst, size_t n) {
  assert(n % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 4 == 0);
  Fill32(static_cast<uint32_t*>(dst), 0, n / 4);
}

void Writer::Fill32(uint32_t* dst, uint32_t value, size_t count) {
  if (!enabled_ || count == 0) return;
  MakeRoom(kRecordHeader + 8);
  tx_.Fill32(dst, value, count);
}

void Writer::Commit() {
  if (!enabled_ || tx_.empty()) return;
  journal_->Commit(tx_);
}

}  // namespace leasefs::check::internal
