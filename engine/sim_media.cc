#include "engine/sim_media.h"

#include <cstdlib>
#include <cstring>
#include <random>

namespace leasefs::engine {

std::unique_ptr<SimMedia> SimMedia::Create(size_t size) {
  size = (size + 7) & ~size_t{7};
  char* mem = static_cast<char*>(std::aligned_alloc(4096, (size + 4095) & ~size_t{4095}));
  std::memset(mem, 0, size);
  auto m = std::unique_ptr<SimMedia>(new SimMedia(mem, size));
  m->durable_.assign(size, 0);
  return m;
}

std::unique_ptr<SimMedia> SimMedia::FromImage(const std::vector<char>& image) {
  auto m = Create(image.size());
  std::memcpy(m->base(), image.data(), image.size());
  m->durable_ = image;
  m->durable_.resize(m->size(), 0);
  return m;
}

SimMedia::SimMedia(char* base, size_t size) : Media(base, size) {}

SimMedia::~SimMedia() { std::free(base()); }

void SimMedia::Flush(const void* p, size_t n) {
  if (crashed_ || n == 0) return;
  const size_t begin = static_cast<size_t>(static_cast<const char*>(p) - base());
  flushed_.emplace_back(begin & ~size_t{63}, (begin + n + 63) & ~size_t{63});
}

void SimMedia::Drain() {
  if (crashed_) return;
  ++drains_;
  if (drains_ == crash_at_) {
    crashed_ = true;
    at_crash_ = Snapshot();
    flushed_.clear();
    return;
  }
  for (auto [b, e] : flushed_) {
    e = std::min(e, size());
    std::memcpy(durable_.data() + b, base() + b, e - b);
  }
  flushed_.clear();
}

std::vector<char> SimMedia::Snapshot() const { return std::vector<char>(base(), base() + size()); }

std::vector<char> SimMedia::CrashImage(uint64_t seed, bool torn) const {
  std::vector<char> image = durable_;
  if (!torn) return image;
  const std::vector<char> live = crashed_ ? at_crash_ : Snapshot();
  std::mt19937_64 rng(seed);
  for (size_t off = 0; off < image.size(); off += 8) {
    if (std::memcmp(image.data() + off, live.data() + off, 8) == 0) continue;
    if (rng() & 1) std::memcpy(image.data() + off, live.data() + off, 8);
  }
  return image;
}

}  // namespace leasefs::engine
