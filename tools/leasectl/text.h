// Small pieces of wording and units that several leasectl commands share.
#pragma once

#include <cstdint>
#include <string>

namespace leasefs::leasectl {

inline constexpr uint64_t kNsPerSec = 1'000'000'000;

// "1 block", "3 blocks".
std::string Plural(uint64_t n, const char* one);

}  // namespace leasefs::leasectl
