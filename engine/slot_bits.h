// Blocks of 64 slots (directory blocks, xattr leaves): which slots are used
// and where entries start, as two 64-bit masks, and the search for a free
// run of k slots; and the name index's hash. Shared by Directory and
// XattrSet, which lay their entries out the same way.
#pragma once

#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace leasefs::engine {

inline constexpr uint64_t kAllSlots = ~uint64_t{0};

// The slots of one block. Slot 0 is the block's header, used from the start.
struct SlotBits {
  uint64_t used = 1;
  uint64_t starts = 0;  // slots where an entry starts
};

// Bit i set iff slots i .. i+k-1 are all free in `used`.
inline uint64_t RunStarts(uint64_t used, uint32_t k) {
  const uint64_t free = ~used;
  uint64_t m = free;
  for (uint32_t i = 1; i < k; ++i) m &= free >> i;
  return m;
}

// The mask of `slots` slots from `slot`.
inline uint64_t SlotMask(uint32_t slot, uint32_t slots) {
  return (slots >= 64 ? kAllSlots : ((uint64_t{1} << slots) - 1)) << slot;
}

// Heterogeneous lookup of names by std::string_view in an unordered map
// keyed by std::string.
struct NameHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return XXH3_64bits(s.data(), s.size()); }
};
struct NameEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
};

}  // namespace leasefs::engine
