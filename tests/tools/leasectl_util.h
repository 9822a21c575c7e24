// Helpers of the leasectl tests: running the tool, and files made of blocks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/mount.h"

namespace leasefs::testing {

inline constexpr uint64_t kBlock = 4096;

// LEASECTL_BIN, else build/tools/leasectl.
std::string LeasectlBin();
// Runs leasectl with `args`; stdout and stderr together.
ProcessResult Leasectl(std::vector<std::string> args);

// One 4096-byte block of each letter: Blocks("ab") is 4096 'a' then 4096 'b'.
// '0' stands for a block of zero bytes.
std::string Blocks(const std::string& letters);

// Creates (mode 0644) or opens `path` and writes `data` at `offset`.
// Throws std::runtime_error on failure.
void WriteAt(const std::string& path, uint64_t offset, const std::string& data);
// The whole file. Throws std::runtime_error on failure.
std::string ReadAll(const std::string& path);
// The file's size (stat). Throws std::runtime_error on failure.
uint64_t SizeOf(const std::string& path);

}  // namespace leasefs::testing
