// The outputs of `leasectl hold`, `leases` and `events`: the words for the
// lease ABI's numbers, the lease table and the event lines, as text and as
// JSON. docs/leasectl.md specifies them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "leasefs/ioctl.h"

namespace leasefs::leasectl {

// "read" or "write" (else "type N").
std::string LeaseTypeName(uint32_t type);
// LEASEFS_LEASE_EXCLUSIVE, _UNBREAKABLE, _NONBLOCK as "exclusive",
// "unbreakable", "nonblock", lowest bit first; unknown bits as "0x8" and so on.
std::vector<std::string> LeaseFlagNames(uint32_t flags);
// The type and its flags: "read", "write,unbreakable".
std::string LeaseKind(uint32_t type, uint32_t flags);
// "none", "active", "breaking", "revoked" (else "state N").
std::string LeaseStateName(uint32_t state);
// "grant", "break", "release", "revoke", "refused", "break-done" (else
// "event N").
std::string EventTypeName(uint32_t type);
// An event's `why`: for RELEASE "unlock", "close" or "exit"; for BREAK,
// REFUSED and BREAK_DONE the kind of layout change: "unmap",
// "allocating-write", "overwrite" (the daemon's numbering, 0 to 2); "" for
// the other events.
std::string EventWhy(uint32_t type, uint32_t why);

// A byte range as "FIRST..LAST", or "OFF..end" when it runs to the end of
// the file (length 0, or a length that reaches past 2^64 - 1).
std::string RangeText(uint64_t offset, uint64_t length);

// Seconds with three decimals: "1.250s".
std::string SecondsText(int64_t ns);

// CLOCK_REALTIME nanoseconds as local time of day, "HH:MM:SS.mmm"
// (`decimals` 3) or "HH:MM:SS.uuuuuu" (6).
std::string TimeOfDay(uint64_t realtime_ns, int decimals);

// A table: every column padded to its widest cell plus one space
// (left-aligned), trailing spaces removed, one "\n"-ended line per row.
std::string Columns(const std::vector<std::vector<std::string>>& lines);

// One lease as `leasectl leases` shows it.
struct LeaseRow {
  leasefs_lease_info info{};
  std::string file;  // its path, or "" when it could not be found
};

// The table: a header line and one line per lease, columns padded to their
// widest cell plus one space, trailing spaces removed; "no leases\n" when
// there are none. `now_ns` is CLOCK_MONOTONIC, to tell how long ago a break
// began and how long is left.
std::string FormatLeases(const std::vector<LeaseRow>& rows, uint64_t now_ns);
// {"monotonic_now", "leases": [{"id", "file", "ino", "offset", "length",
// "type", "flags", "state", "holder_pid", "open_file", "breaking_since",
// "break_deadline", "pins"}]}, keys in that order; "file" is null when not
// found.
nlohmann::ordered_json LeasesJson(const std::vector<LeaseRow>& rows, uint64_t now_ns);

// One event as a line (no newline) and as a JSON object.
std::string FormatEvent(const leasefs_event& e);
nlohmann::ordered_json EventJson(const leasefs_event& e);

}  // namespace leasefs::leasectl
