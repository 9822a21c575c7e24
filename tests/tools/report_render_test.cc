// leasectl report's pictures and page from fixed run documents: the band
// counts and event counts the output carries in its data attributes, the
// escaping of hostile names, an empty mount, a run without steps, and
// documents that are not what they should be.
#include "tools/leasectl/report_render.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "tests/tools/leasectl_util.h"

namespace leasefs::leasectl {
namespace {

using Json = nlohmann::json;
constexpr uint64_t B = 4096;
constexpr uint64_t T0 = 1'700'000'000'000'000'000;  // CLOCK_REALTIME ns

Json Extent(uint64_t file_offset, uint64_t length, uint64_t pool_block, uint64_t refcount) {
  return {{"file_offset", file_offset}, {"length", length}, {"pool_offset", pool_block * B},
          {"refcount", refcount}, {"flags", Json::array()}};
}

Json Lease(uint64_t id, uint64_t ino, uint64_t off, uint64_t len, const char* state) {
  return {{"id", id}, {"ino", ino}, {"offset", off}, {"length", len}, {"type", "write"},
          {"flags", {"exclusive"}}, {"state", state}, {"holder_pid", 100}, {"pins", 0}};
}

Json Record(int owner, uint64_t ino, uint64_t file_offset, uint64_t pool_block, uint64_t length,
            uint64_t quarantined) {
  return {{"map_id", pool_block}, {"ino", ino}, {"file_offset", file_offset},
          {"pool_offset", pool_block * B}, {"length", length}, {"quarantined", quarantined},
          {"owner_pid", owner}, {"write", true}, {"leased", true}};
}

Json Event(uint64_t seq, const char* type, uint64_t lease, int holder, int actor) {
  return {{"seq", seq}, {"time", T0 + seq * 1'000'000}, {"type", type}, {"why", ""},
          {"lease_id", lease}, {"ino", 10}, {"offset", 0}, {"length", 0},
          {"lease_type", lease ? Json("write") : Json()}, {"lease_flags", Json::array()},
          {"holder_pid", holder}, {"actor_pid", actor}, {"err", 0}, {"error", ""}};
}

// Three files (a, a hostile name sharing two of a's blocks, c), four leases,
// a pin and a fenced pin of a truncated file, a DAX record quarantining part
// of its run, and one event of each type. The counts the bands must show
// are worked out in the comments.
Json FixedRun() {
  Json snap;
  snap["mount"] = "/mnt";
  snap["time"] = T0 + 50'000'000;
  snap["block_size"] = B;
  snap["pool_blocks"] = 1000;
  snap["data_start"] = 100;
  snap["data_blocks"] = 900;
  snap["free_blocks"] = 800;
  snap["daemon_pid"] = 50;
  snap["files_complete"] = true;
  snap["processes"] = {{"103", "trunc<x>"}, {"100", "not P"}};
  snap["files"] = {
      // 200, 201 (shared), 300
      {{"file", "/mnt/a"}, {"ino", 10}, {"size", 3 * B},
       {"extents", {Extent(0, 2 * B, 200, 2), Extent(2 * B, B, 300, 1)}}},
      // 200, 201 (shared), 400..403
      {{"file", "/mnt/<script>alert(1)</script>"}, {"ino", 11}, {"size", 6 * B},
       {"extents", {Extent(0, 2 * B, 200, 2), Extent(2 * B, 4 * B, 400, 1)}}},
      // 500..503
      {{"file", "/mnt/c"}, {"ino", 12}, {"size", 4 * B}, {"extents", {Extent(0, 4 * B, 500, 1)}}},
  };
  snap["leases"] = {{"monotonic_now", 1},
                    {"leases",
                     {Lease(1, 10, 0, 0, "active"),          // 200, 201, 300
                      Lease(2, 12, B, 2 * B, "zombie"),      // 501, 502
                      Lease(3, 11, 0, 100, "breaking"),      // 200 (a byte range touches it)
                      Lease(4, 99, 0, 0, "revoked")}}};      // no such file: none
  snap["pins"] = {
      {"contexts", 2},
      {"softnic_refused", {{"bad_rkey", 1}, {"fenced", 3}, {"other", 0}, {"malformed_frames", 0}}},
      {"pins",
       {{{"id", 7}, {"context", 1}, {"creator_pid", 100}, {"provider", "softnic"}, {"ino", 12},
         {"offset", B}, {"length", 2 * B}, {"lease_id", 2}, {"lease_state", "zombie"},
         {"flags", {"write", "read"}}},
        // Its file was truncated: the blocks are the daemon's record's.
        {{"id", 8}, {"context", 2}, {"creator_pid", 103}, {"provider", "softnic"}, {"ino", 13},
         {"offset", 0}, {"length", 4 * B}, {"lease_id", 4}, {"lease_state", "revoked"},
         {"flags", {"fenced", "write", "read"}}}}}};
  snap["dax"] = {{"records_total", 3},
                 {"records_max", 128},
                 {"quarantined_bytes", 6 * B},
                 {"records",
                  {Record(50, 12, B, 501, 2 * B, 0),       // pin 7: 501, 502
                   Record(50, 13, 0, 600, 4 * B, 4 * B),   // pin 8: 600..603, all quarantined
                   // 402..405, of which 404 and 405 no file holds
                   Record(77, 11, 4 * B, 402, 4 * B, 2 * B)}}};
  Json run;
  run["title"] = "scenario <i>10</i>";
  run["snapshot"] = snap;
  run["events"] = {{{"lost", 3}},
                   Event(1, "grant", 1, 100, 100),
                   Event(2, "grant", 2, 101, 101),
                   Event(3, "break", 1, 100, 102),
                   Event(4, "release", 1, 100, 100),
                   Event(5, "break-done", 0, 0, 102),
                   Event(6, "break", 4, 103, 102),
                   Event(7, "fence", 4, 103, 0),
                   Event(8, "revoke", 4, 103, 0),
                   Event(9, "refused", 2, 101, 102),
                   Event(10, "zombie", 2, 101, 101)};
  run["actors"] = {{"P", 100}, {"Q", 102}};
  run["steps"] = {{{"n", 1}, {"actor", "P"}, {"time", T0 + 1'000'000},
                   {"text", "<b>takes</b> the lease"}, {"result", "OK"}},
                  {{"n", 2}, {"actor", "Q"}, {"time", T0 + 3'000'000}, {"text", "truncate"},
                   {"result", "OK"}}};
  return run;
}

// Every value a data attribute pair shows, by name: {"files": {11}}. More
// than one value for a name is a disagreement the tests catch.
std::map<std::string, std::set<uint64_t>> Pairs(const std::string& text, const std::string& key,
                                                const std::string& value) {
  std::map<std::string, std::set<uint64_t>> out;
  const std::regex re(key + "=\"([^\"]*)\" " + value + "=\"([0-9]+)\"");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it)
    out[(*it)[1]].insert(std::stoull((*it)[2]));
  return out;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

using Counts = std::map<std::string, std::set<uint64_t>>;

const Counts kFixedBands = {
    {"files", {11}},          {"shared", {2}},        {"leased", {5}},
    {"leased-active", {3}},   {"leased-breaking", {1}}, {"leased-revoked", {0}},
    {"leased-zombie", {2}},   {"pinned", {6}},        {"fenced", {4}},
    {"quarantined", {6}},
};
const Counts kFixedEvents = {
    {"grant", {2}},   {"break", {2}},   {"release", {1}}, {"revoke", {1}},   {"refused", {1}},
    {"break-done", {1}}, {"zombie", {1}}, {"fence", {1}},  {"lost", {3}},
};

TEST_SUITE("leasectl") {
  TEST_CASE("report: the page's band and event counts are those of the run document") {
    const std::string html = RenderHtml(FixedRun());
    CHECK(Pairs(html, "data-band", "data-blocks") == kFixedBands);
    CHECK(Pairs(html, "data-event-type", "data-count") == kFixedEvents);
    CHECK(html.find("data-quarantine-bytes=\"24576\"") != std::string::npos);
    // Each break is an interval: lease 1's ended by its release, lease 4's by its fence.
    CHECK(Count(html, "data-break-lease=\"1\"") == 1);
    CHECK(Count(html, "data-break-lease=\"4\"") == 1);
    CHECK(html.find("ended by release #4") != std::string::npos);
    CHECK(html.find("ended by fence #7") != std::string::npos);
    // Lanes: named from "actors", else by pid and the snapshot's name for it.
    CHECK(html.find(">P (pid 100)<") != std::string::npos);
    CHECK(html.find(">Q (pid 102)<") != std::string::npos);
    CHECK(html.find(">pid 103 trunc&lt;x&gt;<") != std::string::npos);
    CHECK(html.find(">pid 101<") != std::string::npos);
    CHECK(Count(html, "<g data-step=") == 2);
  }

  TEST_CASE("report: the SVG files carry the same counts and are standalone") {
    const Json run = FixedRun();
    const std::string blocks = RenderBlocksSvg(run), timeline = RenderTimelineSvg(run);
    for (const std::string* svg : {&blocks, &timeline}) {
      CHECK(svg->rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=", 0) == 0);
      CHECK(svg->substr(svg->size() - 7) == "</svg>\n");
    }
    Counts bands = kFixedBands;
    for (const char* state : {"active", "breaking", "revoked", "zombie"})
      bands.erase(std::string("leased-") + state);  // the picture shows them as colours
    CHECK(Pairs(blocks, "data-band", "data-blocks") == bands);
    Counts events = kFixedEvents;
    events.erase("lost");
    CHECK(Pairs(timeline, "data-event-type", "data-count") == events);
  }

  TEST_CASE("report: hostile strings are text, in the page and in the pictures") {
    Json run = FixedRun();
    run["snapshot"]["files"][2]["file"] = std::string("/mnt/bad\xff\x01\"'&name");
    const std::string html = RenderHtml(run);
    CHECK(Count(html, "<script") == 1);  // the page's own
    CHECK(html.find("alert(1)</script>") == std::string::npos);
    CHECK(html.find("/mnt/&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
    CHECK(html.find("<i>") == std::string::npos);
    CHECK(html.find("<title>scenario &lt;i&gt;10&lt;/i&gt;</title>") != std::string::npos);
    CHECK(html.find("&lt;b&gt;takes&lt;/b&gt; the lease") != std::string::npos);
    // A byte that is not UTF-8 and a control character become U+FFFD.
    CHECK(html.find("/mnt/bad\xef\xbf\xbd\xef\xbf\xbd&quot;&#39;&amp;name") != std::string::npos);
    CHECK(html.find('\xff') == std::string::npos);
    CHECK(html.find('\x01') == std::string::npos);
    const std::string svg = RenderBlocksSvg(run);
    CHECK(svg.find("<script") == std::string::npos);
    CHECK(svg.find("&lt;script&gt;") != std::string::npos);
  }

  TEST_CASE("report: nothing is fetched: one CSP that forbids it, no URL but SVG's namespace") {
    const std::string html = RenderHtml(FixedRun());
    CHECK(html.find("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                    "style-src 'unsafe-inline'; script-src 'unsafe-inline';") !=
          std::string::npos);
    CHECK(Count(html, "http://") == Count(html, "xmlns=\"http://www.w3.org/2000/svg\""));
    CHECK(html.find("https:") == std::string::npos);
    CHECK(html.find("src=") == std::string::npos);
    CHECK(html.find("href=") == std::string::npos);
    CHECK(html.find("url(") == std::string::npos);
    CHECK(html.find("@import") == std::string::npos);
  }

  TEST_CASE("report: an empty mount: every band and every count 0") {
    Json run;
    run["title"] = "/mnt";
    run["snapshot"] = {{"mount", "/mnt"}, {"block_size", B}, {"pool_blocks", 1000},
                       {"data_start", 100}, {"data_blocks", 900}, {"files", Json::array()},
                       {"leases", {{"leases", Json::array()}}},
                       {"pins", {{"pins", Json::array()}}},
                       {"dax", {{"records", Json::array()}, {"quarantined_bytes", 0}}},
                       {"events", Json::array()}};
    const std::string html = RenderHtml(run);
    Counts zero_bands, zero_events;
    for (const auto& [band, n] : kFixedBands) zero_bands[band] = {0};
    for (const auto& [type, n] : kFixedEvents) zero_events[type] = {0};
    CHECK(Pairs(html, "data-band", "data-blocks") == zero_bands);
    CHECK(Pairs(html, "data-event-type", "data-count") == zero_events);
    CHECK(html.find("<td colspan=\"7\">no files</td>") != std::string::npos);
    CHECK(html.find("no events") != std::string::npos);
    CHECK(html.find("No steps") != std::string::npos);
    CHECK(html.find("data area is pool blocks 100..999 (900 blocks") != std::string::npos);
  }

  TEST_CASE("report: events with no steps, read from the snapshot when the run has none") {
    Json run = FixedRun();
    run.erase("steps");
    run.erase("actors");
    run["snapshot"]["events"] = run["events"];
    run.erase("events");
    const std::string html = RenderHtml(run);
    CHECK(Pairs(html, "data-event-type", "data-count") == kFixedEvents);
    CHECK(html.find("data-step") == std::string::npos);
    CHECK(html.find("No steps") != std::string::npos);
    CHECK(html.find(">pid 100 not P<") != std::string::npos);
  }

  TEST_CASE("report: a document of the wrong shape gives a page of zeros, not an exception") {
    for (const Json& run : {Json(42), Json::object(), Json{{"snapshot", "x"}},
                            Json{{"snapshot", {{"files", {1, {{"extents", "no"}}}},
                                               {"block_size", "big"}, {"data_blocks", -5}}},
                                 {"events", {1, {{"type", 7}, {"time", "now"}}}},
                                 {"steps", {{{"n", "one"}}}}}}) {
      std::string html;
      CHECK_NOTHROW(html = RenderHtml(run));
      CHECK_NOTHROW(RenderBlocksSvg(run));
      CHECK_NOTHROW(RenderTimelineSvg(run));
      CHECK(Pairs(html, "data-band", "data-blocks")["files"] == std::set<uint64_t>{0});
    }
  }
  TEST_CASE("report: the command: its outputs from --from, its usage and its errors") {
    const std::string dir = "/dev/shm/leasectl-report-" + std::to_string(getpid());
    const std::string run = dir + "-run.json", page = dir + ".html", svg = dir;
    std::ofstream(run) << FixedRun().dump();
    std::ofstream(dir + "-bad.json") << "{\"title\": 1";
    std::ofstream(dir + "-nosnap.json") << "{\"title\": \"x\"}";
    using testing::Leasectl;
    const auto ok = Leasectl({"report", "--html", page, "--svg", svg, "--title", "<T>", "--from", run});
    CHECK(ok.exit_code == 0);
    CHECK(ok.output.empty());
    const std::string html = testing::ReadAll(page);
    CHECK(html.find("<title>&lt;T&gt;</title>") != std::string::npos);
    CHECK(Pairs(html, "data-band", "data-blocks") == kFixedBands);
    Json titled = FixedRun();
    titled["title"] = "<T>";
    CHECK(testing::ReadAll(svg + "-blocks.svg") == RenderBlocksSvg(titled));
    CHECK(testing::ReadAll(svg + "-timeline.svg") == RenderTimelineSvg(titled));

    const auto none = Leasectl({"report", "--from", run});
    CHECK(none.exit_code == 2);
    CHECK(none.output.find("at least one output is needed") != std::string::npos);
    CHECK(Leasectl({"report", "--html", page}).exit_code == 2);
    CHECK(Leasectl({"report", "--html", page, "--from", run, "/mnt"}).exit_code == 2);
    const auto bad = Leasectl({"report", "--html", page, "--from", dir + "-bad.json"});
    CHECK(bad.exit_code == 1);
    CHECK(bad.output == "leasectl: report: " + dir + "-bad.json: not a run document (not JSON)\n");
    const auto nosnap = Leasectl({"report", "--html", page, "--from", dir + "-nosnap.json"});
    CHECK(nosnap.output ==
          "leasectl: report: " + dir + "-nosnap.json: not a run document (no \"snapshot\" object)\n");
    const auto missing = Leasectl({"report", "--html", page, "--from", dir + "-none.json"});
    CHECK(missing.output ==
          "leasectl: report: " + dir + "-none.json: No such file or directory\n");
    CHECK(Leasectl({"report", "--html", page, "/dev/shm"}).output ==
          "leasectl: report: /dev/shm: not a leasefs file\n");
    for (const std::string& f : {run, page, svg + "-blocks.svg", svg + "-timeline.svg",
                                dir + "-bad.json", dir + "-nosnap.json"})
      std::remove(f.c_str());
  }
}

}  // namespace
}  // namespace leasefs::leasectl
