// SimMedia: an in-memory pool that models what a crash can leave behind, so
// tests can stop the engine at every persist point and check recovery.
//
// Model: the bytes the engine sees ("volatile") and a separate durable image.
// Flush records ranges; Drain copies every flushed range into the durable
// image and counts one persist point. A crash armed at point N happens at the
// N-th Drain, before it takes effect: from then on nothing more becomes
// durable. The image a crash leaves is the durable image plus an arbitrary
// subset (chosen by a seed) of the 8-byte words that differed at the moment of
// the crash, since real pmem only guarantees 8-byte atomicity and may write a
// dirty cache line back at any time.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "engine/media.h"

namespace leasefs::engine {

class SimMedia final : public Media {
 public:
  // A zero-filled pool of `size` bytes (a multiple of 8).
  static std::unique_ptr<SimMedia> Create(size_t size);
  // A pool whose volatile and durable contents both start as `image`.
  static std::unique_ptr<SimMedia> FromImage(const std::vector<char>& image);
  ~SimMedia() override;

  void Flush(const void* p, size_t n) override;
  void Drain() override;
  size_t flush_unit() const noexcept override { return 64; }
  std::string describe() const override { return "simulated pmem"; }

  // Persist points (Drains) seen so far.
  uint64_t persist_points() const noexcept { return drains_; }
  // Crash at the n-th Drain from now (n >= 1); 0 disarms.
  void ArmCrash(uint64_t n) noexcept { crash_at_ = n ? drains_ + n : 0; }
  bool crashed() const noexcept { return crashed_; }

  // The pool a crash (or, if none happened, a crash now) leaves behind. With
  // `torn` false only what was drained survives; with it true, each 8-byte
  // word still in flight survives or not as `seed` decides.
  std::vector<char> CrashImage(uint64_t seed, bool torn) const;
  // The current volatile contents.
  std::vector<char> Snapshot() const;

 private:
  SimMedia(char* base, size_t size);

  std::vector<char> durable_;
  std::vector<char> at_crash_;                      // volatile contents when the crash happened
  std::vector<std::pair<size_t, size_t>> flushed_;  // [begin, end) not yet drained
  uint64_t drains_ = 0;
  uint64_t crash_at_ = 0;
  bool crashed_ = false;
};

}  // namespace leasefs::engine
