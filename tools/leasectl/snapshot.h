// A snapshot of a live mount for `leasectl report` (and for `leasectl
// scenario run --json`, which embeds it): the pool's geometry, every regular
// file with its block map, the leases, the pins, the DAX records and the
// quarantine, and the event log, as one JSON document. docs/leasectl.md
// ("report") specifies its shape; each part has the shape of the subcommand
// that lists it alone (bmap, leases, pins, dax, events --json).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "tools/leasectl/mount_view.h"

namespace leasefs::leasectl {

// Entries the snapshot's walk of the mount looks at, at most: a larger tree
// gives "files_complete": false.
inline constexpr size_t kSnapshotWalkBudget = 100000;

// Gathers the snapshot of the mount that `mount_path` (any file or directory
// on it) belongs to into *out. Returns 0 or an errno value: what opening
// `mount_path` gives, ENOTTY (not leasefs), or the first ioctl that failed
// (BMAP of a file that cannot be read or went away meanwhile does not fail
// the snapshot: that file is listed with "extents": null and "error").
// Lists the caller may not see (another user's pins) are what the daemon
// shows the caller.
int CollectSnapshot(const std::string& mount_path, nlohmann::json* out);

// `s` with each byte that does not start a valid UTF-8 sequence replaced by
// U+FFFD: file names are bytes, and JSON and HTML want text.
std::string ValidUtf8(std::string_view s);

// The DAX records as `leasectl dax --json` prints them: {"records_total",
// "records_max", "quarantined_bytes", "records": [{"map_id", "ino",
// "file_offset", "pool_offset", "length", "quarantined", "owner_pid",
// "write", "leased", "closed", "restart", "open_file"}]}.
nlohmann::ordered_json DaxJson(const DaxListing& dax);

}  // namespace leasefs::leasectl
