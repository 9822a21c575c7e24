#include "tools/leasectl/lease_format.h"

#include <time.h>

#include <algorithm>
#include <cstring>

#include <fmt/core.h>
#include "tools/leasectl/text.h"

namespace leasefs::leasectl {

namespace {

using OrderedJson = nlohmann::ordered_json;


}  // namespace

std::string Columns(const std::vector<std::vector<std::string>>& lines) {
  std::vector<size_t> width;
  for (const auto& cells : lines) {
    if (width.size() < cells.size()) width.resize(cells.size());
    for (size_t i = 0; i < cells.size(); ++i) width[i] = std::max(width[i], cells[i].size());
  }
  std::string out;
  for (const auto& cells : lines) {
    std::string line;
    for (size_t i = 0; i < cells.size(); ++i)
      line += fmt::format("{:<{}}", cells[i], i + 1 < cells.size() ? width[i] + 1 : 0);
    line.erase(line.find_last_not_of(' ') + 1);
    out += line + "\n";
  }
  return out;
}

namespace {

// How long ago a break began and how long is left, for the BREAK column.
std::string BreakText(const leasefs_lease_info& l, uint64_t now_ns) {
  if (l.breaking_since == 0) return "-";
  const std::string since =
      "since " + SecondsText(static_cast<int64_t>(now_ns) - static_cast<int64_t>(l.breaking_since));
  if (l.state != LEASEFS_STATE_BREAKING) return since;
  if (l.break_deadline == 0) return since + ", no deadline";
  const int64_t left = static_cast<int64_t>(l.break_deadline) - static_cast<int64_t>(now_ns);
  return since + ", deadline in " + SecondsText(std::max<int64_t>(left, 0));
}

}  // namespace

std::string LeaseTypeName(uint32_t type) {
  switch (type) {
    case LEASEFS_LEASE_READ:
      return "read";
    case LEASEFS_LEASE_WRITE:
      return "write";
    default:
      return fmt::format("type {}", type);
  }
}

std::vector<std::string> LeaseFlagNames(uint32_t flags) {
  std::vector<std::string> names;
  for (uint32_t bit = 1; bit != 0; bit <<= 1) {
    if ((flags & bit) == 0) continue;
    if (bit == LEASEFS_LEASE_EXCLUSIVE)
      names.push_back("exclusive");
    else if (bit == LEASEFS_LEASE_UNBREAKABLE)
      names.push_back("unbreakable");
    else if (bit == LEASEFS_LEASE_NONBLOCK)
      names.push_back("nonblock");
    else
      names.push_back(fmt::format("{:#x}", bit));
  }
  return names;
}

std::string LeaseKind(uint32_t type, uint32_t flags) {
  std::string s = LeaseTypeName(type);
  for (const std::string& f : LeaseFlagNames(flags)) s += "," + f;
  return s;
}

std::string LeaseStateName(uint32_t state) {
  switch (state) {
    case LEASEFS_STATE_NONE:
      return "none";
    case LEASEFS_STATE_ACTIVE:
      return "active";
    case LEASEFS_STATE_BREAKING:
      return "breaking";
    case LEASEFS_STATE_REVOKED:
      return "revoked";
    case LEASEFS_STATE_ZOMBIE:
      return "zombie";
    default:
      return fmt::format("state {}", state);
  }
}

std::string EventTypeName(uint32_t type) {
  switch (type) {
    case LEASEFS_EVENT_GRANT:
      return "grant";
    case LEASEFS_EVENT_BREAK:
      return "break";
    case LEASEFS_EVENT_RELEASE:
      return "release";
    case LEASEFS_EVENT_REVOKE:
      return "revoke";
    case LEASEFS_EVENT_REFUSED:
      return "refused";
    case LEASEFS_EVENT_BREAK_DONE:
      return "break-done";
    case LEASEFS_EVENT_ZOMBIE:
      return "zombie";
    case LEASEFS_EVENT_FENCE:
      return "fence";
    default:
      return fmt::format("event {}", type);
  }
}

std::string EventWhy(uint32_t type, uint32_t why) {
  if (type == LEASEFS_EVENT_RELEASE || type == LEASEFS_EVENT_ZOMBIE) {
    switch (why) {
      case LEASEFS_WHY_UNLOCK:
        return "unlock";
      case LEASEFS_WHY_CLOSE:
        return "close";
      case LEASEFS_WHY_EXIT:
        return "exit";
      default:
        return fmt::format("why {}", why);
    }
  }
  if (type == LEASEFS_EVENT_BREAK || type == LEASEFS_EVENT_REFUSED ||
      type == LEASEFS_EVENT_BREAK_DONE) {
    switch (why) {
      case LEASEFS_CHANGE_UNMAP:
        return "unmap";
      case LEASEFS_CHANGE_ALLOCATING_WRITE:
        return "allocating-write";
      case LEASEFS_CHANGE_OVERWRITE:
        return "overwrite";
      default:
        return fmt::format("change {}", why);
    }
  }
  return "";
}

std::string RangeText(uint64_t offset, uint64_t length) {
  if (length == 0 || length > UINT64_MAX - offset) return fmt::format("{}..end", offset);
  return fmt::format("{}..{}", offset, offset + length - 1);
}

std::string SecondsText(int64_t ns) {
  return fmt::format("{:.3f}s", static_cast<double>(ns) / static_cast<double>(kNsPerSec));
}

std::string TimeOfDay(uint64_t realtime_ns, int decimals) {
  const time_t secs = static_cast<time_t>(realtime_ns / kNsPerSec);
  tm local{};
  localtime_r(&secs, &local);
  char hms[16];
  std::strftime(hms, sizeof(hms), "%H:%M:%S", &local);
  const uint64_t frac = realtime_ns % kNsPerSec;
  if (decimals == 3) return fmt::format("{}.{:03}", hms, frac / 1'000'000);
  return fmt::format("{}.{:06}", hms, frac / 1'000);
}

std::string FormatLeases(const std::vector<LeaseRow>& rows, uint64_t now_ns) {
  if (rows.empty()) return "no leases\n";
  std::vector<std::vector<std::string>> lines;
  lines.push_back({"ID", "FILE", "RANGE", "TYPE", "STATE", "PID", "OPEN-FILE", "BREAK"});
  for (const LeaseRow& r : rows) {
    const leasefs_lease_info& l = r.info;
    lines.push_back({std::to_string(l.id), r.file.empty() ? fmt::format("inode {}", l.ino) : r.file,
                     RangeText(l.offset, l.length), LeaseKind(l.type, l.flags),
                     LeaseStateName(l.state), std::to_string(l.holder_pid),
                     std::to_string(l.open_file), BreakText(l, now_ns)});
  }
  return Columns(lines);
}

OrderedJson LeasesJson(const std::vector<LeaseRow>& rows, uint64_t now_ns) {
  OrderedJson leases = OrderedJson::array();
  for (const LeaseRow& r : rows) {
    const leasefs_lease_info& l = r.info;
    OrderedJson j;
    j["id"] = l.id;
    j["file"] = r.file.empty() ? OrderedJson() : OrderedJson(r.file);
    j["ino"] = l.ino;
    j["offset"] = l.offset;
    j["length"] = l.length;
    j["type"] = LeaseTypeName(l.type);
    j["flags"] = LeaseFlagNames(l.flags);
    j["state"] = LeaseStateName(l.state);
    j["holder_pid"] = l.holder_pid;
    j["open_file"] = l.open_file;
    j["breaking_since"] = l.breaking_since;
    j["break_deadline"] = l.break_deadline;
    j["pins"] = l.pins;
    leases.push_back(std::move(j));
  }
  OrderedJson out;
  out["monotonic_now"] = now_ns;
  out["leases"] = std::move(leases);
  return out;
}

std::string FormatEvent(const leasefs_event& e) {
  std::string s = fmt::format("{} #{} {}", TimeOfDay(e.time, 6), e.seq, EventTypeName(e.type));
  if (e.lease_id != 0) s += fmt::format(" lease {}", e.lease_id);
  s += fmt::format(" inode {} bytes {}", e.ino, RangeText(e.offset, e.length));
  if (e.lease_id != 0) s += " " + LeaseKind(e.lease_type & 0xff, e.lease_type >> 8);
  if (e.holder_pid != 0) s += fmt::format(" holder {}", e.holder_pid);
  if (e.actor_pid != 0) s += fmt::format(" by {}", e.actor_pid);
  if (const std::string why = EventWhy(e.type, e.why); !why.empty()) s += " (" + why + ")";
  if (e.err != 0) s += fmt::format(": {}", std::strerror(e.err));
  return s;
}

OrderedJson EventJson(const leasefs_event& e) {
  OrderedJson j;
  j["seq"] = e.seq;
  j["time"] = e.time;
  j["type"] = EventTypeName(e.type);
  j["why"] = EventWhy(e.type, e.why);
  j["lease_id"] = e.lease_id;
  j["ino"] = e.ino;
  j["offset"] = e.offset;
  j["length"] = e.length;
  j["lease_type"] = e.lease_id != 0 ? OrderedJson(LeaseTypeName(e.lease_type & 0xff)) : OrderedJson();
  j["lease_flags"] = LeaseFlagNames(e.lease_type >> 8);
  j["holder_pid"] = e.holder_pid;
  j["actor_pid"] = e.actor_pid;
  j["err"] = e.err;
  j["error"] = e.err != 0 ? std::string(std::strerror(e.err)) : std::string();
  return j;
}

}  // namespace leasefs::leasectl
