// `leasectl report`: a run document (a snapshot of a mount and its lease
// history) drawn as a block map and a timeline, in one self-contained HTML
// file or as two SVG files. docs/leasectl.md ("report") specifies the run
// document, the snapshot inside it, the bands, the marks and the data
// attributes that carry the numbers.
//
// The Render functions are pure: JSON in, text out. They accept any JSON:
// what is missing or of the wrong type counts as absent (0, "", []), so a
// hand-written or damaged run document gives a report, never an exception.
// Every string from the document is escaped (file names are hostile).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace leasefs::leasectl {

// The run document of the live mount that `mount_path` belongs to:
// {"title": mount_path, "snapshot": CollectSnapshot's document without its
// "events", "events": the snapshot's events}. Returns 0 or CollectSnapshot's
// errno value.
int BuildRunDocument(const std::string& mount_path, nlohmann::json* out);

// The HTML page: both pictures inline, the band and event counts, and tables
// of files, leases, pins, the quarantine, the events and the steps. No
// external resource; a CSP that forbids every fetch; readable without
// JavaScript.
std::string RenderHtml(const nlohmann::json& run);

// The block map and the timeline as standalone SVG documents (an XML
// declaration, then the same <svg> the HTML page holds).
std::string RenderBlocksSvg(const nlohmann::json& run);
std::string RenderTimelineSvg(const nlohmann::json& run);

}  // namespace leasefs::leasectl
