#include "tools/leasectl/top_format.h"

#include <algorithm>
#include <utility>

#include <fmt/core.h>

namespace leasefs::leasectl {

namespace {

using Cells = std::vector<std::string>;

// The lines of Columns(`rows`): the first styled as column names, row i + 1
// as styles[i].
std::vector<TopLine> Table(const std::vector<Cells>& rows, const std::vector<TopStyle>& styles) {
  const std::string text = Columns(rows);
  std::vector<TopLine> out;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    const TopStyle style = out.empty() ? TopStyle::kColumns : styles[out.size() - 1];
    out.push_back({text.substr(start, nl - start), style});
  }
  return out;
}

void Section(std::vector<TopLine>* out, const char* title, std::vector<TopLine> body) {
  out->push_back({});
  out->push_back({title, TopStyle::kTitle});
  for (TopLine& l : body) out->push_back(std::move(l));
}

std::string FileText(const std::string& file, uint64_t ino) {
  return file.empty() ? fmt::format("inode {}", ino) : file;
}

// What `leasectl leases` says of a break's deadline, for breaking leases.
std::string Countdown(const leasefs_lease_info& l, uint64_t now_ns) {
  if (l.state != LEASEFS_STATE_BREAKING) return "-";
  if (l.break_deadline == 0) return "no deadline";
  const int64_t left = static_cast<int64_t>(l.break_deadline) - static_cast<int64_t>(now_ns);
  return "deadline in " + SecondsText(std::max<int64_t>(left, 0));
}

std::string Counts(const TopData& d) {
  const auto breaking = std::count_if(d.leases.begin(), d.leases.end(), [](const LeaseRow& r) {
    return r.info.state == LEASEFS_STATE_BREAKING;
  });
  std::string s = fmt::format("leases {}", d.leases.size());
  if (breaking > 0) s += fmt::format(" ({} breaking)", breaking);
  const PinTotals& t = d.pin_totals;
  s += d.have_pins ? fmt::format("  pins {}  contexts {}", d.pins.size(), t.contexts)
                   : "  pins -  contexts -";
  s += d.have_dax ? fmt::format("  DAX records {}  quarantined {} bytes", d.dax_records,
                                d.quarantined_bytes)
                  : "  DAX records -  quarantined -";
  s += d.have_pins ? fmt::format("  soft NIC refusals {}",
                                 t.refused_bad_rkey + t.refused_fenced + t.refused_other)
                   : "  soft NIC refusals -";
  return s;
}

std::vector<TopLine> Leases(const TopData& d, uint64_t now_ns) {
  if (d.leases.empty()) return {{"no leases"}};
  std::vector<Cells> rows{{"ID", "FILE", "RANGE", "KIND", "STATE", "PID", "PINS", "BREAK"}};
  std::vector<TopStyle> styles;
  for (const LeaseRow& r : d.leases) {
    const leasefs_lease_info& l = r.info;
    rows.push_back({std::to_string(l.id), FileText(r.file, l.ino), RangeText(l.offset, l.length),
                    LeaseKind(l.type, l.flags), LeaseStateName(l.state),
                    std::to_string(l.holder_pid), std::to_string(l.pins), Countdown(l, now_ns)});
    styles.push_back(l.state == LEASEFS_STATE_BREAKING  ? TopStyle::kBreaking
                     : l.state == LEASEFS_STATE_REVOKED ? TopStyle::kAlarm
                                                        : TopStyle::kPlain);
  }
  return Table(rows, styles);
}

std::string FlagsText(uint32_t flags) {
  std::string s;
  for (const std::string& w : PinFlagNames(flags)) s += (s.empty() ? "" : ",") + w;
  return s.empty() ? "-" : s;
}

std::vector<TopLine> Pins(const TopData& d) {
  if (!d.have_pins) return {{"this daemon has no pins"}};
  if (d.pins.empty()) return {{"no pins"}};
  std::vector<Cells> rows{
      {"PIN", "PID", "LEASE", "FILE", "RANGE", "PROVIDER", "FLAGS", "OPS", "BYTES"}};
  std::vector<TopStyle> styles;
  for (const PinRow& r : d.pins) {
    const leasefs_pin_record& p = r.rec;
    rows.push_back({std::to_string(p.pin_id), std::to_string(p.creator_pid),
                    std::to_string(p.lease_id), FileText(r.file, p.ino),
                    RangeText(p.offset, p.length), PinProviderName(p.provider), FlagsText(p.flags),
                    std::to_string(p.ops), std::to_string(p.bytes)});
    styles.push_back((p.flags & LEASEFS_PIN_REC_FENCED) ? TopStyle::kAlarm : TopStyle::kPlain);
  }
  return Table(rows, styles);
}

// As `leasectl dax` says it.
std::string DaxState(uint32_t flags) {
  std::string s = (flags & LEASEFS_DAX_REC_WRITE) ? "write" : "read";
  s += (flags & LEASEFS_DAX_REC_UNLEASED) ? ",unleased" : ",leased";
  if (flags & LEASEFS_DAX_REC_CLOSED) s += ",closed";
  if (flags & LEASEFS_DAX_REC_RESTART) s += ",restart";
  return s;
}

std::vector<TopLine> Quarantine(const TopData& d) {
  if (!d.have_dax) return {{"this daemon has no DAX list"}};
  if (d.quarantined.empty() && d.quarantined_bytes == 0)
    return {{fmt::format("nothing quarantined (DAX records: {})", d.dax_records)}};
  std::vector<TopLine> out;
  if (!d.quarantined.empty()) {
    std::vector<Cells> rows{{"MAP", "INODE", "FILE-RANGE", "QUARANTINED", "PID", "STATE"}};
    for (const leasefs_dax_record& r : d.quarantined) {
      rows.push_back({std::to_string(r.map_id), std::to_string(r.ino),
                      RangeText(r.file_offset, r.length), std::to_string(r.quarantined),
                      std::to_string(r.owner_pid), DaxState(r.flags)});
    }
    out = Table(rows, std::vector<TopStyle>(d.quarantined.size(), TopStyle::kBreaking));
  }
  out.push_back({fmt::format("in all {} bytes quarantined (DAX records: {})", d.quarantined_bytes,
                             d.dax_records)});
  return out;
}

// The last `n` events, or "no events".
std::vector<TopLine> Events(const TopData& d, size_t n) {
  if (d.events.empty()) return {{"no events"}};
  std::vector<TopLine> out;
  for (size_t i = d.events.size() - std::min(n, d.events.size()); i < d.events.size(); ++i)
    out.push_back({FormatEvent(d.events[i])});
  return out;
}

}  // namespace

std::vector<TopLine> FormatTop(const TopData& data, const TopView& view) {
  std::string banner = data.mount + "  " + TimeOfDay(view.realtime_ns, 3);
  if (!view.status.empty()) banner += "  " + view.status;
  std::vector<TopLine> out{{banner, TopStyle::kBanner}, {Counts(data)}};
  Section(&out, "LEASES", Leases(data, view.monotonic_ns));
  Section(&out, "PINS", Pins(data));
  Section(&out, "QUARANTINE", Quarantine(data));
  // The events take what is left below the other sections: an empty line,
  // the title, and at least one line.
  size_t events = view.max_events;
  if (view.height != 0)
    events = std::min(events, view.height - std::min(view.height, out.size() + 2));
  if (events > 0) Section(&out, "EVENTS", Events(data, events));
  if (view.height != 0 && out.size() > view.height) {
    const size_t hidden = out.size() - (view.height - 1);
    out.resize(view.height - 1);
    out.push_back({fmt::format("({} more lines: the terminal is too small)", hidden)});
  }
  for (TopLine& l : out) l.text = FitLine(l.text, view.width);
  return out;
}

namespace {

// The length of the UTF-8 sequence at the start of `s` and its code point;
// 0 when it is not valid UTF-8 (a stray or missing continuation byte, an
// overlong form, a surrogate, past U+10FFFF).
size_t DecodeUtf8(std::string_view s, uint32_t* cp) {
  const auto b = static_cast<unsigned char>(s[0]);
  size_t n = 0;
  uint32_t min = 0;
  if (b < 0x80) {
    *cp = b;
    return 1;
  } else if ((b & 0xe0) == 0xc0) {
    n = 2, min = 0x80, *cp = b & 0x1f;
  } else if ((b & 0xf0) == 0xe0) {
    n = 3, min = 0x800, *cp = b & 0x0f;
  } else if ((b & 0xf8) == 0xf0) {
    n = 4, min = 0x10000, *cp = b & 0x07;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if ((c & 0xc0) != 0x80) return 0;
    *cp = (*cp << 6) | (c & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff)) return 0;
  return n;
}

bool IsControl(uint32_t cp) { return cp < 0x20 || (cp >= 0x7f && cp < 0xa0); }

}  // namespace

std::string FitLine(std::string_view line, size_t width) {
  std::string out;
  size_t columns = 0;
  while (!line.empty() && (width == 0 || columns < width)) {
    uint32_t cp = 0;
    const size_t n = DecodeUtf8(line, &cp);
    if (n == 0 || IsControl(cp))
      out += '?';
    else
      out.append(line.substr(0, n));
    line.remove_prefix(n == 0 ? 1 : n);
    ++columns;
  }
  return out;
}

}  // namespace leasefs::leasectl
