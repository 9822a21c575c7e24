#include "tools/leasectl/report_render.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <map>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "tools/leasectl/snapshot.h"
#include "tools/leasectl/text.h"

namespace leasefs::leasectl {

namespace {

using Json = nlohmann::json;

// ---- reading JSON that may be anything ---------------------------------------

const Json& Get(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

uint64_t U64(const Json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) return static_cast<uint64_t>(std::max<int64_t>(v.get<int64_t>(), 0));
  if (v.is_number_float()) {
    const double d = v.get<double>();
    return d > 0 && d < 1.8e19 ? static_cast<uint64_t>(d) : 0;
  }
  return 0;
}
uint64_t U64(const Json& j, const char* key) { return U64(Get(j, key)); }

int64_t I64(const Json& j, const char* key) {
  const Json& v = Get(j, key);
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
  return static_cast<int64_t>(std::min<uint64_t>(U64(v), INT64_MAX));
}

std::string Str(const Json& j, const char* key) {
  const Json& v = Get(j, key);
  return v.is_string() ? v.get<std::string>() : "";
}

const Json& Arr(const Json& j, const char* key) {
  static const Json kEmpty = Json::array();
  const Json& v = Get(j, key);
  return v.is_array() ? v : kEmpty;
}

bool HasWord(const Json& words, std::string_view w) {
  if (!words.is_array()) return false;
  return std::any_of(words.begin(), words.end(),
                     [&](const Json& x) { return x.is_string() && x.get<std::string>() == w; });
}

std::string Words(const Json& words) {
  std::string s;
  if (!words.is_array()) return s;
  for (const Json& x : words) {
    if (!x.is_string()) continue;
    s += (s.empty() ? "" : ",") + x.get<std::string>();
  }
  return s;
}

// ---- text ------------------------------------------------------------------------

// Text for HTML and XML, in content and in quoted attributes alike: valid
// UTF-8, markup characters as references, and no control characters (XML
// forbids most of them even as references).
std::string Esc(std::string_view raw) {
  const std::string s = ValidUtf8(raw);
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t')
          out += "\xef\xbf\xbd";
        else
          out += c;
    }
  }
  return out;
}

// At most `max` code points of valid UTF-8 `s`, with "…" when cut.
std::string Clip(const std::string& s, size_t max) {
  size_t points = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) continue;
    if (points++ == max) return s.substr(0, i) + "\xe2\x80\xa6";
  }
  return s;
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos || slash + 1 == path.size() ? path : path.substr(slash + 1);
}

std::string Bytes(uint64_t b) {
  static constexpr std::array<const char*, 5> kUnits = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  size_t u = 0;
  while (v >= 1024 && u + 1 < kUnits.size()) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", b);
  return v == std::floor(v) ? fmt::format("{:.0f} {}", v, kUnits[u])
                            : fmt::format("{:.1f} {}", v, kUnits[u]);
}

// CLOCK_REALTIME nanoseconds as "2026-12-05 22:45:49.123 UTC" (UTC: the
// same page for every reader).
std::string UtcText(uint64_t ns) {
  if (ns == 0) return "unknown";
  const time_t secs = static_cast<time_t>(ns / 1'000'000'000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &t);
  return fmt::format("{}.{:03} UTC", buf, ns % 1'000'000'000 / 1'000'000);
}

std::string Seconds(int64_t ns) { return fmt::format("+{:.3f} s", static_cast<double>(ns) / 1e9); }

std::string RangeOf(uint64_t offset, uint64_t length) {
  if (length == 0 || length > UINT64_MAX - offset) return fmt::format("{}..end", offset);
  return fmt::format("{}..{}", offset, offset + length - 1);
}

// HSL to "#rrggbb", so that the SVG files need nothing past SVG 1.1.
std::string Hsl(double h, double s, double l) {
  const double c = (1 - std::fabs(2 * l - 1)) * s;
  const double hp = std::fmod(h, 360.0) / 60.0;
  const double x = c * (1 - std::fabs(std::fmod(hp, 2.0) - 1));
  double r = 0, g = 0, b = 0;
  if (hp < 1) r = c, g = x;
  else if (hp < 2) r = x, g = c;
  else if (hp < 3) g = c, b = x;
  else if (hp < 4) g = x, b = c;
  else if (hp < 5) r = x, b = c;
  else r = c, b = x;
  const double m = l - c / 2;
  auto byte = [&](double v) { return static_cast<int>(std::lround((v + m) * 255)); };
  return fmt::format("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b));
}

// File i's colour: hues a golden angle apart, so that neighbours differ.
std::string FileColour(size_t i) {
  return Hsl(std::fmod(static_cast<double>(i) * 137.508 + 200, 360.0), 0.62,
             i % 2 == 0 ? 0.48 : 0.38);
}

// ---- the model ---------------------------------------------------------------------

// Pool blocks as disjoint runs [start, end).
class BlockSet {
 public:
  void Add(uint64_t start, uint64_t end) {
    if (start >= end) return;
    auto it = runs_.upper_bound(start);
    if (it != runs_.begin()) {
      const auto prev = std::prev(it);
      if (prev->second >= start) {
        start = prev->first;
        end = std::max(end, prev->second);
        it = runs_.erase(prev);
      }
    }
    while (it != runs_.end() && it->first <= end) {
      end = std::max(end, it->second);
      it = runs_.erase(it);
    }
    runs_[start] = end;
  }
  void AddAll(const BlockSet& o) {
    for (const auto& [s, e] : o.runs_) Add(s, e);
  }
  // The blocks of this set that `o` does not have.
  BlockSet Minus(const BlockSet& o) const {
    BlockSet out;
    for (const auto& [s, e] : runs_) {
      uint64_t pos = s;
      auto it = o.runs_.upper_bound(s);
      if (it != o.runs_.begin()) --it;
      for (; it != o.runs_.end() && it->first < e && pos < e; ++it) {
        if (it->second <= pos) continue;
        if (it->first > pos) out.Add(pos, it->first);
        pos = std::max(pos, it->second);
      }
      if (pos < e) out.Add(pos, e);
    }
    return out;
  }
  uint64_t Count() const {
    uint64_t n = 0;
    for (const auto& [s, e] : runs_) n += e - s;
    return n;
  }
  const std::map<uint64_t, uint64_t>& runs() const { return runs_; }

 private:
  std::map<uint64_t, uint64_t> runs_;
};

struct Extent {
  uint64_t file_offset = 0;
  uint64_t length = 0;
  uint64_t pool_block = 0;
  uint64_t refcount = 0;
};

struct File {
  std::string path;
  uint64_t ino = 0;
  uint64_t size = 0;
  std::string error;  // its block map could not be read
  std::vector<Extent> extents;
  BlockSet blocks;
  std::string colour;
};

// The lease states the leased band tells apart, drawn in this order (the
// later on top where leases of several states cover one block).
constexpr std::array<const char*, 4> kLeaseStates = {"active", "zombie", "revoked", "breaking"};

// The event types the timeline knows, in the order of the counts.
constexpr std::array<const char*, 8> kEventTypes = {"grant",  "break",      "release", "revoke",
                                                    "refused", "break-done", "zombie",  "fence"};

struct Model {
  std::string title;
  uint64_t block_size = 4096;
  uint64_t area_start = 0;   // the drawn area: the data area, in pool blocks
  uint64_t area_blocks = 1;
  std::vector<File> files;
  std::map<uint64_t, size_t> by_ino;
  BlockSet files_band, shared, leased, pinned, fenced, quarantined;
  std::map<std::string, BlockSet> leased_by_state;
};

// The pool blocks that byte range [off, off + len) of `f` maps to (len 0:
// to the end); a block the range touches counts.
void AddFileRange(const File& f, uint64_t off, uint64_t len, uint64_t bs, BlockSet* out) {
  const uint64_t end = len == 0 || len > UINT64_MAX - off ? UINT64_MAX : off + len;
  for (const Extent& e : f.extents) {
    const uint64_t es = e.file_offset;
    const uint64_t ee = e.length > UINT64_MAX - es ? UINT64_MAX : es + e.length;
    const uint64_t s = std::max(es, off), t = std::min(ee, end);
    if (s >= t) continue;
    out->Add(e.pool_block + (s - es) / bs, e.pool_block + (t - es - 1) / bs + 1);
  }
}

File ReadFile(const Json& j, uint64_t bs) {
  File f;
  f.path = Str(j, "file");
  f.ino = U64(j, "ino");
  f.size = U64(j, "size");
  f.error = Str(j, "error");
  for (const Json& e : Arr(j, "extents")) {
    Extent x{U64(e, "file_offset"), U64(e, "length"), U64(e, "pool_offset") / bs,
             U64(e, "refcount")};
    if (x.length == 0) continue;
    f.extents.push_back(x);
    const uint64_t blocks = (x.length - 1) / bs + 1;
    f.blocks.Add(x.pool_block, x.pool_block + blocks);
  }
  return f;
}

const Json& Snapshot(const Json& run) { return Get(run, "snapshot"); }

// The run's events: its own list, else the snapshot's.
const Json& Events(const Json& run) {
  const Json& own = Get(run, "events");
  return own.is_array() ? own : Arr(Snapshot(run), "events");
}

void ReadLeases(const Json& snap, Model* m) {
  for (const Json& l : Arr(Get(snap, "leases"), "leases")) {
    const auto f = m->by_ino.find(U64(l, "ino"));
    if (f == m->by_ino.end()) continue;
    std::string state = Str(l, "state");
    if (std::find(kLeaseStates.begin(), kLeaseStates.end(), state) == kLeaseStates.end())
      state = "active";  // a state this report does not know is drawn as held
    BlockSet blocks;
    AddFileRange(m->files[f->second], U64(l, "offset"), U64(l, "length"), m->block_size, &blocks);
    m->leased_by_state[state].AddAll(blocks);
    m->leased.AddAll(blocks);
  }
}

// A pin's blocks: the daemon's DAX records for it (its inode, within its
// range, owned by the daemon), which outlive a truncate that a fence let
// through; where the snapshot has none, its file's blocks in its range.
BlockSet PinBlocks(const Json& pin, const Json& snap, const Model& m) {
  BlockSet out;
  const uint64_t ino = U64(pin, "ino"), off = U64(pin, "offset"), len = U64(pin, "length");
  const uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
  const int64_t daemon = I64(snap, "daemon_pid");
  for (const Json& r : Arr(Get(snap, "dax"), "records")) {
    if (daemon == 0 || I64(r, "owner_pid") != daemon || U64(r, "ino") != ino) continue;
    File one;
    one.extents.push_back({U64(r, "file_offset"), U64(r, "length"),
                           U64(r, "pool_offset") / m.block_size, 1});
    AddFileRange(one, off, end - off, m.block_size, &out);
  }
  if (out.Count() == 0) {
    if (const auto f = m.by_ino.find(ino); f != m.by_ino.end())
      AddFileRange(m.files[f->second], off, end - off, m.block_size, &out);
  }
  return out;
}

// Quarantined blocks: of each DAX record that says it holds some, the
// blocks no file of the snapshot holds (all of them when it says so).
void ReadQuarantine(const Json& snap, Model* m) {
  for (const Json& r : Arr(Get(snap, "dax"), "records")) {
    const uint64_t q = U64(r, "quarantined"), len = U64(r, "length");
    if (q == 0 || len == 0) continue;
    BlockSet run;
    const uint64_t first = U64(r, "pool_offset") / m->block_size;
    run.Add(first, first + (len - 1) / m->block_size + 1);
    m->quarantined.AddAll(q >= len ? run : run.Minus(m->files_band));
  }
}

// The drawn area: the snapshot's data area, else what the blocks span.
void ChooseArea(const Json& snap, Model* m) {
  m->area_start = U64(snap, "data_start");
  m->area_blocks = U64(snap, "data_blocks");
  if (m->area_blocks != 0) return;
  BlockSet all;
  for (const BlockSet* b : {&m->files_band, &m->pinned, &m->quarantined}) all.AddAll(*b);
  if (all.runs().empty()) {
    m->area_blocks = 1;
    return;
  }
  m->area_start = all.runs().begin()->first;
  m->area_blocks = std::max<uint64_t>(all.runs().rbegin()->second - m->area_start, 1);
}

Model BuildModel(const Json& run) {
  Model m;
  const Json& snap = Snapshot(run);
  m.title = Str(run, "title");
  if (m.title.empty()) m.title = Str(snap, "mount");
  if (const uint64_t bs = U64(snap, "block_size"); bs != 0) m.block_size = bs;
  for (const Json& j : Arr(snap, "files")) {
    File f = ReadFile(j, m.block_size);
    f.colour = FileColour(m.files.size());
    m.by_ino.emplace(f.ino, m.files.size());
    m.files_band.AddAll(f.blocks);
    for (const Extent& e : f.extents)
      if (e.refcount > 1) m.shared.Add(e.pool_block, e.pool_block + (e.length - 1) / m.block_size + 1);
    m.files.push_back(std::move(f));
  }
  ReadLeases(snap, &m);
  for (const Json& p : Arr(Get(snap, "pins"), "pins")) {
    const BlockSet b = PinBlocks(p, snap, m);
    m.pinned.AddAll(b);
    if (HasWord(Get(p, "flags"), "fenced")) m.fenced.AddAll(b);
  }
  ReadQuarantine(snap, &m);
  ChooseArea(snap, &m);
  return m;
}

// ---- the block map ------------------------------------------------------------------

constexpr double kWidth = 720;   // viewBox width of both pictures
constexpr double kPlotX = 140, kPlotW = kWidth - kPlotX - 10;
constexpr const char* kFont = "font-family=\"sans-serif\"";

struct Band {
  const char* id;     // data-band
  const char* name;   // shown
  const char* what;   // what it means, for the table
  const char* colour;
  const BlockSet* blocks;
};

std::vector<Band> Bands(const Model& m) {
  return {
      {"files", "files", "blocks that belong to a file (each file its colour)", "#4a6fa5",
       &m.files_band},
      {"shared", "shared", "blocks with a reference count above 1 (reflinks)", "#7b3fa0",
       &m.shared},
      {"leased", "leased", "blocks under a leased file range, by the lease's state", "#2e8b57",
       &m.leased},
      {"pinned", "pinned", "blocks a pin reaches (registered for a NIC)", "#1f6fb2", &m.pinned},
      {"fenced", "fenced", "blocks of pins a break fenced: the NIC refuses them", "#8b0000",
       &m.fenced},
      {"quarantined", "quarantined",
       "blocks no file holds that a mapping or pin may still reach: kept from reuse", "#c8961a",
       &m.quarantined},
  };
}

const char* StateColour(const std::string& s) {
  if (s == "breaking") return "#e08a00";
  if (s == "revoked") return "#c0392b";
  if (s == "zombie") return "#7f8c8d";
  return "#2e8b57";
}

double X(const Model& m, uint64_t block) {
  const uint64_t b = std::clamp(block, m.area_start, m.area_start + m.area_blocks);
  return kPlotX + static_cast<double>(b - m.area_start) * kPlotW / static_cast<double>(m.area_blocks);
}

// One rect per run (at least a sliver wide, so that one block in a large
// pool still shows), with a tooltip.
std::string Runs(const Model& m, const BlockSet& set, double y, double h, const std::string& fill,
                 const std::string& what, const std::string& extra = "") {
  std::string s;
  for (const auto& [b, e] : set.runs()) {
    if (e <= m.area_start || b >= m.area_start + m.area_blocks) continue;
    const double x0 = X(m, b), w = std::max(X(m, e) - x0, 1.2);
    s += fmt::format(
        "<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{:.1f}\" fill=\"{}\"{}>"
        "<title>{}: pool blocks {}..{} ({})</title></rect>\n",
        x0, y, w, h, fill, extra, Esc(what), b, e - 1, Plural(e - b, "block"));
  }
  return s;
}

std::string FileRuns(const Model& m, const File& f, double y, double h) {
  std::string s = Runs(m, f.blocks, y, h, f.colour, "file " + f.path,
                       fmt::format(" data-ino=\"{}\"", f.ino));
  // A name inside runs wide enough for one.
  for (const auto& [b, e] : f.blocks.runs()) {
    const double x0 = X(m, b), w = X(m, e) - x0;
    const size_t fits = static_cast<size_t>(w / 6.5);
    if (fits < 4) continue;
    s += fmt::format(
        "<text x=\"{:.2f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#fff\" {} "
        "pointer-events=\"none\">{}</text>\n",
        x0 + 3, y + h / 2 + 4, kFont, Esc(Clip(ValidUtf8(BaseName(f.path)), fits - 1)));
  }
  return s;
}

std::string BandRow(const Model& m, const Band& b, double y, bool with_counts) {
  constexpr double kH = 26;
  std::string s = fmt::format("<g data-band-row=\"{}\">\n", b.id);
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f2f2f2\"/>\n", kPlotX,
                   y, kPlotW, kH);
  s += fmt::format("<text x=\"4\" y=\"{:.1f}\" font-size=\"13\" font-weight=\"bold\" {}>{}</text>\n",
                   y + 11, kFont, b.name);
  if (with_counts) {
    s += fmt::format(
        "<text x=\"4\" y=\"{:.1f}\" font-size=\"11\" {} data-band=\"{}\" data-blocks=\"{}\">{}</text>\n",
        y + 24, kFont, b.id, b.blocks->Count(), Plural(b.blocks->Count(), "block"));
  }
  if (std::string_view(b.id) == "files") {
    for (const File& f : m.files) s += FileRuns(m, f, y, kH);
  } else if (std::string_view(b.id) == "leased") {
    for (const char* state : kLeaseStates) {
      const auto it = m.leased_by_state.find(state);
      if (it != m.leased_by_state.end())
        s += Runs(m, it->second, y, kH, StateColour(state), std::string("leased, ") + state);
    }
  } else {
    s += Runs(m, *b.blocks, y, kH, b.colour, b.name);
  }
  return s + "</g>\n";
}

std::string Axis(const Model& m, double y) {
  std::string s = fmt::format(
      "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\"/>\n", kPlotX, y, kPlotX + kPlotW, y);
  for (int i = 0; i <= 4; ++i) {
    const uint64_t block = m.area_start + m.area_blocks * static_cast<uint64_t>(i) / 4;
    const double x = X(m, block);
    const char* anchor = i == 0 ? "start" : i == 4 ? "end" : "middle";
    s += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\" stroke=\"#555\"/>\n",
                     x, y, y + 5);
    s += fmt::format(
        "<text x=\"{:.2f}\" y=\"{}\" font-size=\"11\" text-anchor=\"{}\" {}>block {}</text>\n", x,
        y + 17, anchor, kFont, block);
    s += fmt::format(
        "<text x=\"{:.2f}\" y=\"{}\" font-size=\"11\" text-anchor=\"{}\" fill=\"#555\" {}>{}</text>\n",
        x, y + 30, anchor, kFont, Bytes(block * m.block_size));
  }
  s += fmt::format(
      "<text x=\"4\" y=\"{}\" font-size=\"11\" {}>pool block</text>\n<text x=\"4\" y=\"{}\" "
      "font-size=\"11\" fill=\"#555\" {}>pool offset</text>\n",
      y + 17, kFont, y + 30, kFont);
  return s;
}

// The legend: band colours, then up to 40 files with their colours.
std::string BlocksLegend(const Model& m, double y, double* height) {
  std::string s;
  const std::vector<std::pair<std::string, std::string>> keys = {
      {"#7b3fa0", "shared"},       {StateColour("active"), "leased: active"},
      {StateColour("breaking"), "breaking"}, {StateColour("revoked"), "revoked"},
      {StateColour("zombie"), "zombie"},     {"#1f6fb2", "pinned"},
      {"#8b0000", "fenced"},       {"#c8961a", "quarantined"}};
  double x = 4;
  for (const auto& [colour, name] : keys) {
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{}\" width=\"11\" height=\"11\" fill=\"{}\"/>"
                     "<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\" {}>{}</text>\n",
                     x, y, colour, x + 14, y + 10, kFont, name);
    x += 18 + 6.2 * static_cast<double>(name.size()) + 10;
  }
  constexpr size_t kShown = 40;
  const size_t shown = std::min(m.files.size(), kShown);
  for (size_t i = 0; i < shown; ++i) {
    const File& f = m.files[i];
    const double fx = 4 + static_cast<double>(i % 2) * (kWidth / 2);
    const double fy = y + 20 + static_cast<double>(i / 2) * 16;
    s += fmt::format(
        "<g data-ino=\"{}\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"11\" height=\"11\" fill=\"{}\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" {}>{} ({})</text></g>\n",
        f.ino, fx, fy, f.colour, fx + 14, fy + 10, kFont, Esc(Clip(ValidUtf8(f.path), 48)),
        Plural(f.blocks.Count(), "block"));
  }
  double h = 20 + static_cast<double>((shown + 1) / 2) * 16;
  if (m.files.size() > shown) {
    s += fmt::format("<text x=\"4\" y=\"{:.1f}\" font-size=\"11\" {}>and {} more files</text>\n",
                     y + h + 10, kFont, m.files.size() - shown);
    h += 16;
  }
  *height = h;
  return s;
}

// The bands and their axis over m's area, from *y on.
std::string BandsView(const Model& m, const std::string& heading, bool with_counts, double* y) {
  std::string s = fmt::format("<text x=\"4\" y=\"{}\" font-size=\"13\" {}>{}</text>\n", *y + 10,
                              kFont, heading);
  *y += 22;
  for (const Band& b : Bands(m)) {
    s += BandRow(m, b, *y, with_counts);
    *y += 34;
  }
  s += Axis(m, *y);
  *y += 44;
  return s;
}

// Where the drawn blocks are, with a margin, when they fill less than a
// quarter of the area (a small run in a large pool is a sliver): the
// close-up's area. {0, 0} when none is needed.
std::pair<uint64_t, uint64_t> CloseUp(const Model& m) {
  BlockSet all;
  for (const BlockSet* b : {&m.files_band, &m.leased, &m.pinned, &m.quarantined}) all.AddAll(*b);
  if (all.runs().empty()) return {0, 0};
  const uint64_t area_end = m.area_start + m.area_blocks;
  uint64_t lo = std::max(all.runs().begin()->first, m.area_start);
  uint64_t hi = std::min(all.runs().rbegin()->second, area_end);
  if (hi <= lo || (hi - lo) * 4 >= m.area_blocks) return {0, 0};
  const uint64_t margin = std::max<uint64_t>((hi - lo) / 20, 2);
  lo = lo - m.area_start > margin ? lo - margin : m.area_start;
  hi = area_end - hi > margin ? hi + margin : area_end;
  return {lo, std::max(hi - lo, uint64_t{16})};
}

std::string BlocksSvg(const Model& m) {
  std::string body;
  double y = 8;
  body += BandsView(m,
                    fmt::format("data area: pool blocks {}..{} ({}), block size {}", m.area_start,
                                m.area_start + m.area_blocks - 1, Plural(m.area_blocks, "block"),
                                m.block_size),
                    true, &y);
  if (const auto [lo, n] = CloseUp(m); n != 0) {
    Model z = m;
    z.area_start = lo;
    z.area_blocks = n;
    body += BandsView(z, fmt::format("close-up: pool blocks {}..{}", lo, lo + n - 1), false, &y);
  }
  double legend_h = 0;
  body += BlocksLegend(m, y, &legend_h);
  y += legend_h + 4;
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {:.0f}\" width=\"100%\" "
      "role=\"img\" aria-labelledby=\"blocks-title\" class=\"blocks\">\n"
      "<title id=\"blocks-title\">Pool blocks of {}</title>\n{}</svg>\n",
      kWidth, y, Esc(m.title), body);
}

// ---- the timeline ---------------------------------------------------------------------

struct Ev {
  uint64_t seq = 0;
  uint64_t time = 0;
  std::string type;
  uint64_t lease = 0;
  int64_t lane = 0;  // the pid whose lane it is on
  int64_t holder = 0, actor = 0;
  const Json* json = nullptr;
};

struct Step {
  uint64_t n = 0;
  uint64_t time = 0;
  int64_t pid = 0;
  std::string actor, text, result;
};

struct Timeline {
  std::vector<Ev> events;
  std::vector<Step> steps;
  std::map<std::string, uint64_t> counts;  // per type
  uint64_t lost = 0;
  std::vector<int64_t> lanes;                // pids, in order of first appearance
  std::map<int64_t, std::string> names;      // pid -> actor name
  std::map<int64_t, std::string> comms;      // pid -> what the snapshot says it is called
  uint64_t t0 = 0, t1 = 1;
};

// Events on the lane of the process they are about: the holder for what
// happens to a lease, the one who acted for breaks and refusals.
int64_t LaneOf(const std::string& type, int64_t holder, int64_t actor) {
  const bool by_actor = type == "break" || type == "refused" || type == "break-done";
  const int64_t first = by_actor ? actor : holder, second = by_actor ? holder : actor;
  return first != 0 ? first : second;
}

std::string LaneName(const Timeline& t, int64_t pid) {
  if (pid == 0) return "daemon";
  if (const auto it = t.names.find(pid); it != t.names.end())
    return fmt::format("{} (pid {})", it->second, pid);
  if (const auto it = t.comms.find(pid); it != t.comms.end())
    return fmt::format("pid {} {}", pid, it->second);
  return fmt::format("pid {}", pid);
}

void AddLane(Timeline* t, int64_t pid) {
  if (std::find(t->lanes.begin(), t->lanes.end(), pid) == t->lanes.end()) t->lanes.push_back(pid);
}

Timeline BuildTimeline(const Json& run) {
  Timeline t;
  if (const Json& actors = Get(run, "actors"); actors.is_object()) {
    for (const auto& [name, pid] : actors.items())
      if (pid.is_number()) t.names[static_cast<int64_t>(U64(pid))] = name;
  }
  if (const Json& procs = Get(Snapshot(run), "processes"); procs.is_object()) {
    for (const auto& [pid, comm] : procs.items()) {
      char* end = nullptr;
      const long long n = std::strtoll(pid.c_str(), &end, 10);
      if (comm.is_string() && end != pid.c_str() && *end == '\0') t.comms[n] = comm.get<std::string>();
    }
  }
  for (const auto& name : kEventTypes) t.counts[name] = 0;
  for (const Json& e : Events(run)) {
    if (Get(e, "lost").is_number()) {
      t.lost += U64(e, "lost");
      continue;
    }
    Ev ev{U64(e, "seq"), U64(e, "time"), Str(e, "type"), U64(e, "lease_id"), 0,
          I64(e, "holder_pid"), I64(e, "actor_pid"), &e};
    if (ev.type.empty()) ev.type = "unknown";
    ev.lane = LaneOf(ev.type, ev.holder, ev.actor);
    ++t.counts[ev.type];
    AddLane(&t, ev.lane);
    t.events.push_back(std::move(ev));
  }
  for (const Json& s : Arr(run, "steps")) {
    Step st{U64(s, "n"), U64(s, "time"), I64(s, "pid"), Str(s, "actor"), Str(s, "text"),
            Str(s, "result")};
    if (st.pid == 0 && !st.actor.empty())
      for (const auto& [pid, name] : t.names)
        if (name == st.actor) st.pid = pid;
    if (st.time != 0) AddLane(&t, st.pid);
    t.steps.push_back(std::move(st));
  }
  std::vector<uint64_t> times;
  for (const Ev& e : t.events) times.push_back(e.time);
  for (const Step& s : t.steps)
    if (s.time != 0) times.push_back(s.time);
  if (!times.empty()) {
    t.t0 = *std::min_element(times.begin(), times.end());
    t.t1 = std::max(*std::max_element(times.begin(), times.end()), t.t0 + 1'000'000);
  }
  return t;
}

double TX(const Timeline& t, uint64_t ns) {
  const double span = static_cast<double>(t.t1 - t.t0);
  const double at = static_cast<double>(std::clamp(ns, t.t0, t.t1) - t.t0);
  return kPlotX + 6 + at * (kPlotW - 12) / span;
}

constexpr double kLaneTop = 30, kLaneH = 40;
double LaneY(const Timeline& t, int64_t pid) {
  const auto it = std::find(t.lanes.begin(), t.lanes.end(), pid);
  return kLaneTop + static_cast<double>(it - t.lanes.begin()) * kLaneH + kLaneH / 2;
}

// An event as one line, in the manner of `leasectl events`.
std::string EventText(const Timeline& t, const Ev& e) {
  const Json& j = *e.json;
  std::string s = fmt::format("#{} {} {}", e.seq, Seconds(static_cast<int64_t>(e.time - t.t0)), e.type);
  if (e.lease != 0) s += fmt::format(" lease {}", e.lease);
  s += fmt::format(" inode {} bytes {}", U64(j, "ino"), RangeOf(U64(j, "offset"), U64(j, "length")));
  if (const std::string kind = Str(j, "lease_type"); !kind.empty()) {
    const std::string flags = Words(Get(j, "lease_flags"));
    s += " " + kind + (flags.empty() ? "" : "," + flags);
  }
  if (e.holder != 0) s += " holder " + LaneName(t, e.holder);
  if (e.actor != 0) s += " by " + LaneName(t, e.actor);
  if (const std::string why = Str(j, "why"); !why.empty()) s += " (" + why + ")";
  if (const std::string err = Str(j, "error"); !err.empty()) s += ": " + err;
  return s;
}

const char* EventColour(const std::string& type) {
  if (type == "grant") return "#2e8b57";
  if (type == "break") return "#e08a00";
  if (type == "release") return "#4a6fa5";
  if (type == "revoke") return "#c0392b";
  if (type == "refused") return "#6d0f0f";
  if (type == "break-done") return "#8a6d00";
  if (type == "zombie") return "#7f8c8d";
  if (type == "fence") return "#8b0000";
  return "#333";
}

// A mark's shape, centred on (x, y).
std::string Shape(const std::string& type, double x, double y) {
  const std::string fill = fmt::format("fill=\"{}\"", EventColour(type));
  if (type == "grant" || type == "release")
    return fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.1f}\" r=\"5\" {}{}/>", x, y, fill,
                       type == "release" ? " fill-opacity=\"0.35\" stroke=\"#4a6fa5\"" : "");
  if (type == "break")
    return fmt::format("<path d=\"M{0:.2f} {1:.1f}l6 10h-12z\" {2}/>", x, y - 6, fill);
  if (type == "revoke")
    return fmt::format("<path d=\"M{0:.2f} {1:.1f}l10 10m0 -10l-10 10\" stroke=\"{2}\" "
                       "stroke-width=\"3\"/>",
                       x - 5, y - 5, EventColour(type));
  if (type == "fence")
    return fmt::format("<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"4\" height=\"18\" {}/>", x - 2, y - 9,
                       fill);
  if (type == "break-done")
    return fmt::format("<path d=\"M{0:.2f} {1:.1f}l6 6l-6 6l-6 -6z\" {2}/>", x, y - 6, fill);
  if (type == "refused")
    return fmt::format("<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"10\" height=\"10\" {}/>", x - 5,
                       y - 5, fill);
  if (type == "zombie")
    return fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.1f}\" r=\"5\" fill=\"none\" stroke=\"{}\" "
                       "stroke-width=\"2\"/>",
                       x, y, EventColour(type));
  return fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.1f}\" r=\"3\" {}/>", x, y, fill);
}

// Each break as an interval on its holder's lane, from the break to the
// lease's next release, revoke or fence (to the end of the log if none),
// and a dashed line from the breaker's lane.
std::string BreakIntervals(const Timeline& t) {
  std::string s;
  for (size_t i = 0; i < t.events.size(); ++i) {
    const Ev& b = t.events[i];
    if (b.type != "break") continue;
    const Ev* end = nullptr;
    for (size_t k = i + 1; k < t.events.size() && end == nullptr; ++k) {
      const Ev& e = t.events[k];
      if (e.lease == b.lease && (e.type == "release" || e.type == "revoke" || e.type == "fence"))
        end = &e;
    }
    const int64_t holder_lane = b.holder != 0 ? b.holder : b.lane;
    const double y = LaneY(t, holder_lane), x0 = TX(t, b.time);
    const double x1 = std::max(TX(t, end ? end->time : t.t1), x0 + 2);
    const std::string how = end ? "ended by " + end->type + " #" + std::to_string(end->seq)
                                : "not ended in this log";
    s += fmt::format(
        "<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"14\" fill=\"#e08a00\" "
        "fill-opacity=\"0.3\" stroke=\"#e08a00\"{} data-break-lease=\"{}\"><title>lease {} "
        "breaking from {} for {:.3f} s, {}</title></rect>\n",
        x0, y - 7, x1 - x0, end ? "" : " stroke-dasharray=\"4 3\"", b.lease, b.lease,
        Seconds(static_cast<int64_t>(b.time - t.t0)),
        static_cast<double>((end ? end->time : t.t1) - b.time) / 1e9, Esc(how));
    if (holder_lane != b.lane)
      s += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1:.1f}\" x2=\"{0:.2f}\" y2=\"{2:.1f}\" "
                       "stroke=\"#e08a00\" stroke-dasharray=\"3 3\"/>\n",
                       x0, LaneY(t, b.lane), y);
  }
  return s;
}

std::string TimeAxis(const Timeline& t, double y) {
  std::string s = fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\"/>\n",
                              kPlotX, y, kPlotX + kPlotW, y);
  for (int i = 0; i <= 4; ++i) {
    const uint64_t at = t.t0 + (t.t1 - t.t0) * static_cast<uint64_t>(i) / 4;
    const char* anchor = i == 0 ? "start" : i == 4 ? "end" : "middle";
    s += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\" stroke=\"#555\"/>"
                     "<text x=\"{0:.2f}\" y=\"{3}\" font-size=\"11\" text-anchor=\"{4}\" {5}>{6}</text>\n",
                     TX(t, at), y, y + 5, y + 17, anchor, kFont,
                     Seconds(static_cast<int64_t>(at - t.t0)));
  }
  return s + fmt::format(
                 "<text x=\"4\" y=\"{}\" font-size=\"11\" {}>time</text>\n<text x=\"{}\" "
                 "y=\"{}\" font-size=\"11\" fill=\"#555\" {}>+0 s is {}</text>\n",
                 y + 17, kFont, kPlotX, y + 31, kFont,
                 Esc(UtcText(t.events.empty() && t.steps.empty() ? 0 : t.t0)));
}

// Marks and their counts, for the legend.
std::string TimelineLegend(const Timeline& t, double y) {
  std::string s;
  double x = 4;
  for (const char* type : kEventTypes) {
    const std::string label = fmt::format("{} {}", type, t.counts.at(type));
    s += Shape(type, x + 6, y + 6) +
         fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" {} data-event-type=\"{}\" "
                     "data-count=\"{}\">{}</text>\n",
                     x + 15, y + 10, kFont, type, t.counts.at(type), label);
    x += 24 + 6.2 * static_cast<double>(label.size());
    if (x > kWidth - 90) {
      x = 4;
      y += 18;
    }
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" {}>step</text>"
                   "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"12\" height=\"10\" fill=\"#222\"/>\n",
                   x + 15, y + 10, kFont, x, y + 1);
  return s;
}

std::string TimelineSvg(const Json& run, const Timeline& t) {
  std::string body = fmt::format(
      "<text x=\"4\" y=\"18\" font-size=\"13\" {}>{} events{}, {} steps</text>\n", kFont,
      t.events.size(), t.lost ? fmt::format(" ({} lost before)", t.lost) : "", t.steps.size());
  for (size_t i = 0; i < t.lanes.size(); ++i) {
    const double y = kLaneTop + static_cast<double>(i) * kLaneH;
    body += fmt::format(
        "<rect x=\"{}\" y=\"{:.1f}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>"
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#bbb\"/>"
        "<text x=\"4\" y=\"{:.1f}\" font-size=\"12\" {} data-lane=\"{}\">{}</text>\n",
        kPlotX, y, kPlotW, kLaneH, i % 2 ? "#f7f7f7" : "#eef2f7", kPlotX, y + kLaneH / 2,
        kPlotX + kPlotW, y + kLaneH / 2, y + kLaneH / 2 + 4, kFont, t.lanes[i],
        Esc(Clip(LaneName(t, t.lanes[i]), 20)));
  }
  body += BreakIntervals(t);
  for (const Ev& e : t.events)
    body += fmt::format("<g data-event=\"{}\" data-ino=\"{}\">{}<title>{}</title></g>\n", e.type,
                        U64(*e.json, "ino"), Shape(e.type, TX(t, e.time), LaneY(t, e.lane)),
                        Esc(EventText(t, e)));
  for (const Step& s : t.steps) {
    if (s.time == 0) continue;
    const double x = TX(t, s.time), y = LaneY(t, s.pid) - kLaneH / 2 + 2;
    body += fmt::format(
        "<g data-step=\"{}\"><rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"16\" height=\"11\" "
        "fill=\"#222\"/><text x=\"{:.2f}\" y=\"{:.1f}\" font-size=\"9\" fill=\"#fff\" "
        "text-anchor=\"middle\" {}>{}</text><title>step {}: {} {} {}</title></g>\n",
        s.n, x - 8, y, x, y + 9, kFont, s.n, s.n, Esc(s.actor), Esc(s.text), Esc(s.result));
  }
  const double axis_y = kLaneTop + static_cast<double>(t.lanes.size()) * kLaneH + 4;
  body += TimeAxis(t, axis_y);
  body += TimelineLegend(t, axis_y + 40);
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {:.0f}\" width=\"100%\" "
      "role=\"img\" aria-labelledby=\"timeline-title\" class=\"timeline\">\n"
      "<title id=\"timeline-title\">Lease events of {}</title>\n{}</svg>\n",
      kWidth, axis_y + 82, Esc(Str(run, "title")), body);
}

// ---- the page ------------------------------------------------------------------------------

constexpr const char* kCsp =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src 'none'; font-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'";

constexpr const char* kStyle = R"css(
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
  padding:0 12px 24px;max-width:1100px;color:#1a1a1a;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.4em;margin:.6em 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em;
  border-bottom:1px solid #ddd}
svg{display:block;width:100%;height:auto;max-width:100%}
figure{margin:.4em 0}
.js{display:none}html[data-js] .js{display:block}
.scroll{overflow-x:auto;max-width:100%;margin:.3em 0}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e2e2e2;padding:3px 7px;text-align:left;vertical-align:top;
  white-space:nowrap}
td.name{white-space:normal;min-width:10em;max-width:28em;overflow-wrap:anywhere}
td.num,th.num{text-align:right}
.sw{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin-right:.3em;
  border-radius:2px}
ul.counts{padding-left:1.1em}
.note{color:#555;font-size:13px}
#tip{position:sticky;bottom:0;background:#fffbe6;border:1px solid #e0c060;padding:4px 8px;
  margin:0;font-size:13px}
#tip:empty{display:none}
.hlon [data-ino]:not(.hl){opacity:.25}
)css";

// Highlights a file across the bands, the legend and the tables when it is
// clicked (again: off); shows the clicked mark's tooltip text in a line at
// the bottom, for touch screens that show no tooltips.
constexpr const char* kScript = R"js(
(function () {
  document.documentElement.setAttribute('data-js', 'on');
  var on = null, tip = document.getElementById('tip');
  function mark(ino) {
    var all = document.querySelectorAll('[data-ino]');
    for (var i = 0; i < all.length; i++)
      all[i].classList.toggle('hl', ino !== null && all[i].getAttribute('data-ino') === ino);
    document.body.classList.toggle('hlon', ino !== null);
  }
  document.addEventListener('click', function (ev) {
    var t = ev.target;
    if (!t || !t.closest) return;
    var titled = t.closest('svg rect, svg g');
    var title = titled && titled.querySelector('title');
    tip.textContent = title ? title.textContent : '';
    var f = t.closest('[data-ino]');
    var ino = f ? f.getAttribute('data-ino') : null;
    on = ino === on ? null : ino;
    mark(on);
  });
})();
)js";

std::string Cell(const std::string& text, const char* cls = nullptr) {
  return cls ? fmt::format("<td class=\"{}\">{}</td>", cls, Esc(text))
             : fmt::format("<td>{}</td>", Esc(text));
}
std::string Num(uint64_t v) { return fmt::format("<td class=\"num\">{}</td>", v); }

std::string Table(const std::vector<std::string>& head, const std::string& rows,
                  const std::string& id) {
  std::string s = fmt::format("<div class=\"scroll\"><table id=\"{}\"><thead><tr>", id);
  for (const std::string& h : head) s += "<th>" + h + "</th>";
  return s + "</tr></thead><tbody>\n" + rows + "</tbody></table></div>\n";
}

std::string FileName(const Model& m, uint64_t ino) {
  const auto it = m.by_ino.find(ino);
  return it == m.by_ino.end() ? fmt::format("inode {}", ino) : m.files[it->second].path;
}

std::string BandsHtml(const Model& m) {
  std::string rows;
  for (const Band& b : Bands(m)) {
    rows += fmt::format(
        "<tr data-band=\"{}\" data-blocks=\"{}\"><td><span class=\"sw\" style=\"background:{}\">"
        "</span>{}</td>{}<td class=\"num\">{}</td><td class=\"name\">{}</td></tr>\n",
        b.id, b.blocks->Count(), b.colour, b.name, Num(b.blocks->Count()),
        Bytes(b.blocks->Count() * m.block_size), b.what);
    if (std::string_view(b.id) != "leased") continue;
    for (const char* state : kLeaseStates) {
      const auto it = m.leased_by_state.find(state);
      const uint64_t n = it == m.leased_by_state.end() ? 0 : it->second.Count();
      rows += fmt::format(
          "<tr data-band=\"leased-{}\" data-blocks=\"{}\"><td>&#160;&#160;<span class=\"sw\" "
          "style=\"background:{}\"></span>{}</td>{}<td class=\"num\">{}</td><td "
          "class=\"name\">leased, the lease {}</td></tr>\n",
          state, n, StateColour(state), state, Num(n), Bytes(n * m.block_size), state);
    }
  }
  return Table({"band", "<span class=\"num\">blocks</span>", "bytes", "what it shows"}, rows,
               "bands");
}

std::string FilesHtml(const Model& m) {
  std::string rows;
  for (const File& f : m.files) {
    BlockSet shared;
    for (const Extent& e : f.extents)
      if (e.refcount > 1) shared.Add(e.pool_block, e.pool_block + (e.length - 1) / m.block_size + 1);
    rows += fmt::format(
        "<tr data-ino=\"{}\"><td class=\"name\"><span class=\"sw\" style=\"background:{}\">"
        "</span>{}</td>{}{}{}{}{}{}</tr>\n",
        f.ino, f.colour, Esc(f.path), Num(f.ino), Num(f.size), Num(f.blocks.Count()),
        Num(f.extents.size()), Num(shared.Count()), Cell(f.error.empty() ? "" : f.error));
  }
  if (m.files.empty()) rows = "<tr><td colspan=\"7\">no files</td></tr>\n";
  return Table({"file", "inode", "size", "blocks", "runs", "shared blocks", "error"}, rows, "files");
}

std::string LeasesHtml(const Model& m, const Json& snap) {
  std::string rows;
  for (const Json& l : Arr(Get(snap, "leases"), "leases")) {
    const std::string flags = Words(Get(l, "flags"));
    rows += "<tr data-ino=\"" + std::to_string(U64(l, "ino")) + "\">" + Num(U64(l, "id")) +
            Cell(FileName(m, U64(l, "ino")), "name") +
            Cell(RangeOf(U64(l, "offset"), U64(l, "length"))) +
            Cell(Str(l, "type") + (flags.empty() ? "" : "," + flags)) + Cell(Str(l, "state")) +
            Num(U64(l, "holder_pid")) + Num(U64(l, "pins")) + "</tr>\n";
  }
  if (rows.empty()) rows = "<tr><td colspan=\"7\">no leases</td></tr>\n";
  return Table({"id", "file", "bytes", "type", "state", "holder", "pins"}, rows, "leases");
}

std::string PinsHtml(const Model& m, const Json& snap) {
  std::string rows;
  const Json& pins = Get(snap, "pins");
  for (const Json& p : Arr(pins, "pins")) {
    const std::string flags = Words(Get(p, "flags"));
    rows += "<tr data-ino=\"" + std::to_string(U64(p, "ino")) + "\">" + Num(U64(p, "id")) +
            Num(U64(p, "context")) + Num(U64(p, "creator_pid")) + Cell(Str(p, "provider")) +
            Cell(FileName(m, U64(p, "ino")), "name") +
            Cell(RangeOf(U64(p, "offset"), U64(p, "length"))) + Num(U64(p, "lease_id")) +
            Cell(Str(p, "lease_state")) + Cell(flags.empty() ? "-" : flags) + Num(U64(p, "ops")) +
            Num(U64(p, "bytes")) + Num(U64(p, "refused")) + "</tr>\n";
  }
  if (rows.empty()) rows = "<tr><td colspan=\"12\">no pins</td></tr>\n";
  const Json& refused = Get(pins, "softnic_refused");
  return Table({"pin", "context", "creator", "provider", "file", "bytes", "lease", "lease state",
                "flags", "ops", "bytes moved", "refused"},
               rows, "pins") +
         fmt::format("<p class=\"note\">contexts open: {}; the soft NIC refused: bad rkey {}, "
                     "fenced {}, other {}; malformed frames {}. Rkeys are left out: whoever reads "
                     "one may write the pinned range.</p>\n",
                     U64(pins, "contexts"), U64(refused, "bad_rkey"), U64(refused, "fenced"),
                     U64(refused, "other"), U64(refused, "malformed_frames"));
}

std::string QuarantineHtml(const Model& m, const Json& snap) {
  const Json& dax = Get(snap, "dax");
  std::string rows;
  for (const Json& r : Arr(dax, "records")) {
    std::string state = Get(r, "write").is_boolean() && Get(r, "write").get<bool>() ? "write" : "read";
    const Json& leased = Get(r, "leased");
    state += leased.is_boolean() && !leased.get<bool>() ? ",unleased" : ",leased";
    const uint64_t pool = U64(r, "pool_offset") / m.block_size, len = U64(r, "length");
    rows += "<tr data-ino=\"" + std::to_string(U64(r, "ino")) + "\">" + Num(U64(r, "map_id")) +
            Cell(FileName(m, U64(r, "ino")), "name") +
            Cell(RangeOf(U64(r, "file_offset"), len)) +
            Cell(len == 0 ? "-" : fmt::format("{}..{}", pool, pool + (len - 1) / m.block_size)) +
            Num(U64(r, "quarantined")) + Num(U64(r, "owner_pid")) + Cell(state) + "</tr>\n";
  }
  if (rows.empty()) rows = "<tr><td colspan=\"7\">no DAX records</td></tr>\n";
  const uint64_t q = U64(dax, "quarantined_bytes");
  return Table({"map", "file", "file bytes", "pool blocks", "quarantined bytes", "owner", "state"},
               rows, "dax") +
         fmt::format("<p data-quarantine-bytes=\"{}\">{} of the pool in quarantine ({}); {} of {} "
                     "DAX records in use.</p>\n",
                     q, Bytes(q), Plural(q / m.block_size, "block"), U64(dax, "records_total"),
                     U64(dax, "records_max"));
}

std::string EventCountsHtml(const Timeline& t) {
  std::string s = "<ul class=\"counts\">\n";
  // The known types in their order, then any others the log had.
  std::vector<std::pair<std::string, uint64_t>> counts;
  for (const char* type : kEventTypes) counts.emplace_back(type, t.counts.at(type));
  for (const auto& [type, n] : t.counts)
    if (std::find(kEventTypes.begin(), kEventTypes.end(), type) == kEventTypes.end())
      counts.emplace_back(type, n);
  for (const auto& [type, n] : counts) {
    s += fmt::format("<li data-event-type=\"{}\" data-count=\"{}\"><span class=\"sw\" "
                     "style=\"background:{}\"></span>{}: {}</li>\n",
                     Esc(type), n, EventColour(type), Esc(type), n);
  }
  s += fmt::format("<li data-event-type=\"lost\" data-count=\"{}\">lost before the log was read: "
                   "{}</li>\n",
                   t.lost, t.lost);
  return s + "</ul>\n";
}

std::string EventsHtml(const Model& m, const Timeline& t) {
  std::string rows;
  for (const Ev& e : t.events) {
    const Json& j = *e.json;
    const std::string kind = Str(j, "lease_type");
    const std::string flags = Words(Get(j, "lease_flags"));
    rows += fmt::format("<tr data-ino=\"{}\">", U64(j, "ino")) + Num(e.seq) +
            Cell(Seconds(static_cast<int64_t>(e.time - t.t0))) + Cell(e.type) +
            (e.lease ? Num(e.lease) : Cell("")) + Cell(FileName(m, U64(j, "ino")), "name") +
            Cell(RangeOf(U64(j, "offset"), U64(j, "length"))) +
            Cell(kind + (flags.empty() || kind.empty() ? "" : "," + flags)) +
            Cell(e.holder ? LaneName(t, e.holder) : "") + Cell(e.actor ? LaneName(t, e.actor) : "") +
            Cell(Str(j, "why")) + Cell(Str(j, "error")) + "</tr>\n";
  }
  if (rows.empty()) rows = "<tr><td colspan=\"11\">no events</td></tr>\n";
  return Table({"#", "time", "event", "lease", "file", "bytes", "lease type", "holder", "by", "why",
                "error"},
               rows, "events");
}

std::string StepsHtml(const Timeline& t) {
  if (t.steps.empty()) return "<p>No steps: this run is a snapshot of a live mount.</p>\n";
  std::string rows;
  for (const Step& s : t.steps) {
    rows += fmt::format("<tr data-step=\"{}\">", s.n) + Num(s.n) +
            Cell(s.time ? Seconds(static_cast<int64_t>(s.time - t.t0)) : "") +
            Cell(s.actor.empty() ? LaneName(t, s.pid) : s.actor) + Cell(s.text, "name") +
            Cell(s.result) + "</tr>\n";
  }
  return Table({"step", "time", "who", "what", "result"}, rows, "steps");
}

std::string HeaderHtml(const Model& m, const Json& snap) {
  return fmt::format(
      "<header><h1>{}</h1>\n<p>Mount <code>{}</code>, as it was at {}. Block size {}; the data "
      "area is pool blocks {}..{} ({}, {}); {} free.</p></header>\n",
      Esc(m.title), Esc(Str(snap, "mount")), Esc(UtcText(U64(snap, "time"))), m.block_size,
      m.area_start, m.area_start + m.area_blocks - 1, Plural(m.area_blocks, "block"),
      Bytes(m.area_blocks * m.block_size), Bytes(U64(snap, "free_blocks") * m.block_size));
}

}  // namespace

int BuildRunDocument(const std::string& mount_path, Json* out) {
  Json snap;
  if (const int err = CollectSnapshot(mount_path, &snap); err != 0) return err;
  Json run;
  run["title"] = ValidUtf8(mount_path);
  run["events"] = std::move(snap["events"]);
  snap.erase("events");
  run["snapshot"] = std::move(snap);
  *out = std::move(run);
  return 0;
}

std::string RenderBlocksSvg(const Json& run) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + BlocksSvg(BuildModel(run));
}

std::string RenderTimelineSvg(const Json& run) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + TimelineSvg(run, BuildTimeline(run));
}

std::string RenderHtml(const Json& run) {
  const Model m = BuildModel(run);
  const Timeline t = BuildTimeline(run);
  const Json& snap = Snapshot(run);
  std::string s = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n"
      "<meta name=\"referrer\" content=\"no-referrer\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>{}</title>\n<style>{}</style></head>\n<body>\n",
      kCsp, Esc(m.title), kStyle);
  s += HeaderHtml(m, snap);
  s += "<section id=\"block-map\"><h2>Blocks</h2>\n<figure>" + BlocksSvg(m) + "</figure>\n";
  s += "<p class=\"note js\">Click a file (in the picture, the legend or a table) to pick out its "
       "blocks, leases, pins and events; click again to see them all.</p>\n";
  s += BandsHtml(m);
  if (!Get(snap, "files_complete").is_boolean() || !Get(snap, "files_complete").get<bool>())
    s += "<p class=\"note\">The walk of the mount did not see every entry: files it missed are "
         "not drawn.</p>\n";
  s += "</section>\n<section id=\"timeline-section\"><h2>Timeline</h2>\n<figure>" +
       TimelineSvg(run, t) + "</figure>\n" + EventCountsHtml(t) + "</section>\n";
  s += "<section><h2>Steps</h2>\n" + StepsHtml(t) + "</section>\n";
  s += "<section><h2>Files</h2>\n" + FilesHtml(m) + "</section>\n";
  s += "<section><h2>Leases</h2>\n" + LeasesHtml(m, snap) + "</section>\n";
  s += "<section><h2>Pins</h2>\n" + PinsHtml(m, snap) + "</section>\n";
  s += "<section><h2>DAX records and quarantine</h2>\n" + QuarantineHtml(m, snap) + "</section>\n";
  s += "<section><h2>Events</h2>\n" + EventsHtml(m, t) + "</section>\n";
  s += "<p id=\"tip\" role=\"status\"></p>\n<footer class=\"note\">Made by leasectl report. Every "
       "number is in the page itself; the script only highlights.</footer>\n";
  s += fmt::format("<script>{}</script>\n</body></html>\n", kScript);
  return s;
}

}  // namespace leasefs::leasectl
