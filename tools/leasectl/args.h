// Parsing of leasectl's arguments: byte offsets and lengths, and reflink's
// --range OFF:LEN[:DSTOFF], and hold's --range OFF:LEN.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include <CLI/CLI.hpp>

namespace leasefs::leasectl {

// A byte count as tools/common/size_arg.h reads it ("4096", "64K", "1G"),
// at most INT64_MAX (what off_t and the kernel's loff_t can hold). nullopt
// otherwise.
std::optional<uint64_t> ParseOffset(std::string_view s);

// reflink --range: OFF:LEN[:DSTOFF], each part a ParseOffset; DSTOFF
// defaults to OFF. LEN 0 means "to the end of the source".
struct CloneRangeArg {
  uint64_t src_offset = 0;
  uint64_t length = 0;
  uint64_t dest_offset = 0;
  bool operator==(const CloneRangeArg&) const = default;
};
std::optional<CloneRangeArg> ParseCloneRange(std::string_view s);

// hold --range: OFF:LEN, each part a ParseOffset; LEN 0 means "to the end
// of the file, whatever its size".
struct LeaseRangeArg {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const LeaseRangeArg&) const = default;
};
std::optional<LeaseRangeArg> ParseLeaseRange(std::string_view s);

// CLI11 validators for the forms above; CLI11 turns a rejection into a
// usage error that names the argument.
CLI::Validator OffsetValidator();
CLI::Validator CloneRangeValidator();
CLI::Validator LeaseRangeValidator();

}  // namespace leasefs::leasectl
