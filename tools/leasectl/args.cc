#include "tools/leasectl/args.h"

#include <cstdint>
#include <string>

#include "tools/common/size_arg.h"

namespace leasefs::leasectl {

std::optional<uint64_t> ParseOffset(std::string_view s) {
  std::optional<uint64_t> v = tools::ParseSize(s);
  if (!v || *v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return v;
}

std::optional<CloneRangeArg> ParseCloneRange(std::string_view s) {
  const size_t c1 = s.find(':');
  if (c1 == std::string_view::npos) return std::nullopt;
  const size_t c2 = s.find(':', c1 + 1);
  const std::string_view off = s.substr(0, c1);
  const std::string_view len =
      c2 == std::string_view::npos ? s.substr(c1 + 1) : s.substr(c1 + 1, c2 - c1 - 1);
  const std::optional<uint64_t> o = ParseOffset(off);
  const std::optional<uint64_t> l = ParseOffset(len);
  if (!o || !l) return std::nullopt;
  CloneRangeArg r{*o, *l, *o};
  if (c2 != std::string_view::npos) {
    const std::optional<uint64_t> d = ParseOffset(s.substr(c2 + 1));
    if (!d) return std::nullopt;
    r.dest_offset = *d;
  }
  return r;
}

std::optional<LeaseRangeArg> ParseLeaseRange(std::string_view s) {
  const size_t colon = s.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::optional<uint64_t> o = ParseOffset(s.substr(0, colon));
  const std::optional<uint64_t> l = ParseOffset(s.substr(colon + 1));
  if (!o || !l) return std::nullopt;
  return LeaseRangeArg{*o, *l};
}

CLI::Validator OffsetValidator() {
  return CLI::Validator(
      [](std::string& s) {
        return ParseOffset(s) ? std::string() : "'" + s + "' is not a size (4096, 64K, 1M, 2G)";
      },
      "SIZE");
}

CLI::Validator CloneRangeValidator() {
  return CLI::Validator(
      [](std::string& s) {
        return ParseCloneRange(s) ? std::string() : "'" + s + "' is not OFF:LEN[:DSTOFF]";
      },
      "OFF:LEN[:DSTOFF]");
}

CLI::Validator LeaseRangeValidator() {
  return CLI::Validator(
      [](std::string& s) {
        return ParseLeaseRange(s) ? std::string() : "'" + s + "' is not OFF:LEN";
      },
      "OFF:LEN");
}

}  // namespace leasefs::leasectl
