#include "engine/journal.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <utility>

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr size_t Words(size_t bytes) { return (bytes + 7) / 8; }

uint64_t HeaderChecksum(const JournalHeader& h) {
  return XXH64(&h, offsetof(JournalHeader, header_xxh64), 0);
}

}  // namespace

void Tx::Copy(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  const uint64_t dest = static_cast<uint64_t>(static_cast<char*>(dst) - base_);
  // Extend the previous copy when this one continues it and it ends on a word
  // boundary (payloads are padded to 8 bytes).
  if (last_copy_ != SIZE_MAX && last_copy_ + 2 <= body_.size()) {
    auto* rec = reinterpret_cast<JournalRecord*>(&body_[last_copy_]);
    if (rec->length % 8 == 0 && rec->dest + rec->length == dest &&
        uint64_t{rec->length} + n < UINT32_MAX &&
        body_.size() == last_copy_ + 2 + rec->length / 8) {
      const size_t at = body_.size();
      body_.resize(at + Words(n), 0);
      rec = reinterpret_cast<JournalRecord*>(&body_[last_copy_]);  // after resize
      rec->length += static_cast<uint32_t>(n);
      std::memcpy(&body_[at], src, n);
      return;
    }
  }
  assert(n < UINT32_MAX);
  const size_t at = body_.size();
  body_.resize(at + 2 + Words(n), 0);
  JournalRecord rec{kRecCopy, 0, static_cast<uint32_t>(n), dest};
  std::memcpy(&body_[at], &rec, sizeof(rec));
  std::memcpy(&body_[at + 2], src, n);
  last_copy_ = at;
  ++records_;
}

void Tx::Fill32(uint32_t* dst, uint32_t value, size_t count) {
  if (count == 0) return;
  assert(count < UINT32_MAX);
  const uint64_t dest = static_cast<uint64_t>(reinterpret_cast<char*>(dst) - base_);
  const size_t at = body_.size();
  body_.resize(at + 3, 0);
  JournalRecord rec{kRecFill32, 0, static_cast<uint32_t>(count), dest};
  std::memcpy(&body_[at], &rec, sizeof(rec));
  std::memcpy(&body_[at + 2], &value, sizeof(value));
  last_copy_ = SIZE_MAX;
  ++records_;
}

Journal::Journal(Media& media, const Superblock& sb)
    : media_(media),
      header_(reinterpret_cast<JournalHeader*>(media.base() + sb.journal_start * kBlockSize)),
      body_(media.base() + (sb.journal_start + 1) * kBlockSize),
      capacity_((sb.journal_blocks - 1) * kBlockSize),
      meta_begin_(sb.inode_start * kBlockSize),
      meta_end_(sb.pool_bytes),
      seq_(header_->seq) {}

bool Journal::HasCommitted() const {
  const JournalHeader h = *header_;
  if (std::memcmp(h.magic, kJournalMagic, sizeof(kJournalMagic)) != 0) return false;
  if (HeaderChecksum(h) != h.header_xxh64) return false;
  if (h.body_bytes > capacity_ || h.body_bytes % 8 != 0) return false;
  return XXH64(body_, h.body_bytes, h.seq) == h.body_xxh64;
}

Status Journal::ValidateRecords(const char* body, uint64_t bytes, uint32_t count) const {
  uint64_t off = 0;
  for (uint32_t i = 0; i < count; ++i) {
    if (bytes - off < sizeof(JournalRecord))
      return Status::Corruption("journal record runs past the body");
    JournalRecord rec;
    std::memcpy(&rec, body + off, sizeof(rec));
    uint64_t span = 0, payload = 0;
    if (rec.type == kRecCopy) {
      span = rec.length;
      payload = Words(rec.length) * 8;
    } else if (rec.type == kRecFill32) {
      span = uint64_t{rec.length} * 4;
      payload = 8;
    } else {
      return Status::Corruption("journal record of unknown type " + std::to_string(rec.type));
    }
    if (rec.length == 0 || rec.dest < meta_begin_ || rec.dest > meta_end_ ||
        span > meta_end_ - rec.dest)
      return Status::Corruption("journal record outside the metadata regions");
    off += sizeof(rec);
    if (bytes - off < payload) return Status::Corruption("journal payload runs past the body");
    off += payload;
  }
  if (off != bytes) return Status::Corruption("journal body length mismatch");
  return Status::Ok();
}

Result<bool> Journal::Recover() {
  if (!HasCommitted()) return false;  // nothing, or a commit that never finished
  const JournalHeader h = *header_;
  LFS_RETURN_IF_ERROR(ValidateRecords(body_, h.body_bytes, h.record_count));
  Apply(body_, h.body_bytes);
  seq_ = h.seq;
  Invalidate();
  return true;
}

void Journal::Commit(Tx& tx) {
  if (tx.empty()) return;
  const size_t bytes = tx.body_bytes();
  assert(bytes <= capacity_);
  const char* body = reinterpret_cast<const char*>(tx.body_.data());

  // Step 1: the body, a drain, then the header and the drain that commits.
  // The first drain makes durable, before the header is even stored, the
  // body and every block written in place for this transaction (fresh
  // leaves, value, directory and extent blocks): a cache may write the
  // header's line back at any moment once it is stored, and a flush is
  // ordered before later stores only by a drain. (If the header lands
  // without all of the body anyway, the body checksum fails and recovery
  // treats the transaction as never written.)
  media_.CopyFlush(body_, body, bytes);
  media_.Drain();
  JournalHeader h{};
  std::memcpy(h.magic, kJournalMagic, sizeof(kJournalMagic));
  h.seq = ++seq_;
  h.body_bytes = bytes;
  h.body_xxh64 = XXH64(body, bytes, h.seq);
  h.record_count = tx.records_;
  h.header_xxh64 = HeaderChecksum(h);
  media_.CopyFlush(header_, &h, sizeof(h));
  media_.Drain();

  // Step 2 and 3.
  Apply(body, bytes);
  Invalidate();
  ++commits_;
  tx.body_.clear();
  tx.records_ = 0;
  tx.last_copy_ = SIZE_MAX;
}

void Journal::Apply(const char* body, uint64_t bytes) {
  const size_t unit = media_.flush_unit();
  std::vector<std::pair<uint64_t, uint64_t>> dirty;
  for (uint64_t off = 0; off < bytes;) {
    JournalRecord rec;
    std::memcpy(&rec, body + off, sizeof(rec));
    off += sizeof(rec);
    char* dst = media_.base() + rec.dest;
    uint64_t span;
    if (rec.type == kRecCopy) {
      std::memcpy(dst, body + off, rec.length);
      span = rec.length;
      off += Words(rec.length) * 8;
    } else {
      uint32_t value;
      std::memcpy(&value, body + off, sizeof(value));
      if (value == 0) {
        std::memset(dst, 0, uint64_t{rec.length} * 4);
      } else {
        for (uint32_t i = 0; i < rec.length; ++i) std::memcpy(dst + 4 * i, &value, 4);
      }
      span = uint64_t{rec.length} * 4;
      off += 8;
    }
    dirty.emplace_back(rec.dest / unit * unit, (rec.dest + span + unit - 1) / unit * unit);
  }
  // Flush each touched range once: msync-based media pay per call.
  std::sort(dirty.begin(), dirty.end());
  uint64_t b = 0, e = 0;
  for (auto [db, de] : dirty) {
    if (e != 0 && db <= e) {
      e = std::max(e, de);
      continue;
    }
    if (e != 0) media_.Flush(media_.base() + b, e - b);
    b = db;
    e = de;
  }
  if (e != 0) media_.Flush(media_.base() + b, std::min<uint64_t>(e, media_.size()) - b);
  media_.Drain();
}

void Journal::Invalidate() {
  // One aligned 8-byte store: the header is either committed or not.
  uint64_t zero = 0;
  std::memcpy(header_->magic, &zero, sizeof(zero));
  media_.Flush(header_, sizeof(uint64_t));
  media_.Drain();
}

}  // namespace leasefs::engine
