// Parsing of size arguments such as "512M" or "4GiB" for the command-line tools.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace leasefs::tools {

// "4096", "64K", "512M", "4G", "1T" (also "KiB", "MiB", ...; powers of 1024).
// Returns nullopt on anything else or on overflow.
std::optional<uint64_t> ParseSize(std::string_view s);

}  // namespace leasefs::tools
