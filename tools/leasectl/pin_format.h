// The outputs of `leasectl pins` and `leasectl file_pins`: the words for the
// pin ABI's numbers, the pin table, and the file_pins view in the shape of
// the proposed /proc/<pid>/file_pins, as text and as JSON. docs/leasectl.md
// specifies them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "leasefs/ioctl.h"

namespace leasefs::leasectl {

// "softnic", "declared", "verbs" (else "provider N").
std::string PinProviderName(uint32_t provider);
// LEASEFS_PIN_REC_* as "fenced", "write", "read", "closed", lowest bit
// first; unknown bits as "0x10" and so on.
std::vector<std::string> PinFlagNames(uint32_t flags);
// An rkey as "0x" and 16 hex digits.
std::string RkeyText(uint64_t rkey);

// One pin as the listings show it.
struct PinRow {
  leasefs_pin_record rec{};
  std::string file;          // its path, or "" when it could not be found
  uint32_t lease_state = 0;  // LEASEFS_STATE_* of rec.lease_id in the lease
                             // list; NONE when the list does not have it
  bool show_rkey = false;    // the viewer is root or the context's user
};

// The mount-wide counts that come with the pins.
struct PinTotals {
  uint64_t contexts = 0;
  uint64_t refused_bad_rkey = 0;
  uint64_t refused_fenced = 0;
  uint64_t refused_other = 0;
  uint64_t malformed_frames = 0;
};

// `leasectl pins`: a header line and one line per pin, columns padded as in
// `leases`, or "no pins"; then the contexts and the soft NIC's refusals.
std::string FormatPins(const std::vector<PinRow>& rows, const PinTotals& totals);
// {"contexts", "softnic_refused": {"bad_rkey", "fenced", "other",
// "malformed_frames"}, "pins": [{"id", "context", "creator_pid", "uid",
// "provider", "ino", "file", "offset", "length", "lease_id", "lease_state",
// "open_file", "flags", "rkey", "ops", "bytes", "refused"}]}, keys in that
// order; "file" null when not found, "lease_state" null when the lease is not
// listed, "rkey" null unless shown and the pin has one.
nlohmann::ordered_json PinsJson(const std::vector<PinRow>& rows, const PinTotals& totals);

// `leasectl file_pins`: one block per pin context, in context id order: the
// owner line, then each pinned data file (tab indent) in the order of its
// first pin, then that file's pinned ranges (two tabs); "no pins" when there
// are none.
std::string FormatFilePins(const std::vector<PinRow>& rows);
// {"owners": [{"context", "creator_pid", "uid", "files": [{"ino", "file",
// "ranges": [{"pin", "offset", "length", "provider", "flags", "lease_id",
// "lease_state"}]}]}]}, in the order of the text.
nlohmann::ordered_json FilePinsJson(const std::vector<PinRow>& rows);

}  // namespace leasefs::leasectl
