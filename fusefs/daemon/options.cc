#include "fusefs/daemon/options.h"

#include <arpa/inet.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace leasefs::daemon {

namespace {

// The most loop threads -o threads= accepts; more only adds contention.
constexpr unsigned long kMaxThreads = 256;

std::optional<double> ParseSeconds(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

std::optional<unsigned> ParseThreads(const std::string& s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < 1 || v > kMaxThreads) return std::nullopt;
  return static_cast<unsigned>(v);
}

// Sets the atime flag `item` names (see ApplyOption). Returns false if
// `item` is not an atime option.
bool ApplyAtimeOption(std::string_view item, DaemonOptions* opts) {
  struct Flag {
    std::string_view name;
    bool DaemonOptions::*flag;
    bool value;
  };
  static constexpr Flag kFlags[] = {
      {"noatime", &DaemonOptions::noatime, true},
      {"atime", &DaemonOptions::noatime, false},
      {"strictatime", &DaemonOptions::strictatime, true},
      {"nostrictatime", &DaemonOptions::strictatime, false},
      {"nodiratime", &DaemonOptions::nodiratime, true},
      {"diratime", &DaemonOptions::nodiratime, false},
  };
  for (const Flag& f : kFlags) {
    if (item != f.name) continue;
    opts->*f.flag = f.value;
    return true;
  }
  // relatime is the rule unless strictatime or noatime are set (as in the
  // kernel since 2.6.30), so relatime and norelatime change nothing; nor
  // does lazytime, which is how leasefs stores these timestamps anyway.
  return item == "relatime" || item == "norelatime" || item == "lazytime";
}

// "A.B.C.D:PORT" (PORT 0..65535) as its two parts.
std::optional<std::pair<std::string, uint16_t>> ParseIpv4Port(const std::string& value) {
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  const std::string address = value.substr(0, colon);
  in_addr a{};
  if (inet_pton(AF_INET, address.c_str(), &a) != 1) return std::nullopt;
  const std::string port = value.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const unsigned long n = std::stoul(port);
  if (n > 65535) return std::nullopt;
  return std::make_pair(address, static_cast<uint16_t>(n));
}

Status BadValue(std::string_view item) {
  return Status::Error(EINVAL, "bad option value '" + std::string(item) + "'");
}

// Parses the value of one of leasefs's own options into *opts. Returns false
// if `key` is not one of them.
bool ApplyOwnOption(std::string_view key, const std::string& value, DaemonOptions* opts, bool* ok) {
  std::optional<double> secs;
  double* target = nullptr;
  if (key == "threads") {
    auto n = ParseThreads(value);
    *ok = n.has_value();
    if (n) opts->threads = *n;
    return true;
  }
  if (key == "write_break") {
    *ok = value == "unmap-only" || value == "xfs-faithful";
    opts->leases.every_write_breaks = value == "xfs-faithful";
    return true;
  }
  if (key == "mmap") {
    *ok = value == "shared" || value == "private-only";
    opts->shared_mmap = value != "private-only";
    return true;
  }
  if (key == "softnic") {
    opts->pins.softnic_given = true;
    if (value == "off") {
      opts->pins.softnic = false;
      *ok = true;
      return true;
    }
    auto where = ParseIpv4Port(value);
    *ok = where.has_value();
    if (where) {
      opts->pins.softnic = true;
      opts->pins.softnic_address = where->first;
      opts->pins.softnic_port = where->second;
    }
    return true;
  }
  if (key == "pinned_break") {
    using Pinned = LeaseMountOptions::Pinned;
    static constexpr std::pair<std::string_view, Pinned> kNames[] = {
        {"refuse", Pinned::kRefuse}, {"fence", Pinned::kFence}, {"wait", Pinned::kWait}};
    *ok = false;
    for (const auto& [name, p] : kNames) {
      if (value == name) {
        opts->leases.pinned_break = p;
        *ok = true;
      }
    }
    return true;
  }
  if (key == "close_with_pins") {
    using Close = PinMountOptions::Close;
    static constexpr std::pair<std::string_view, Close> kNames[] = {
        {"zombie", Close::kZombie},
        {"block-close", Close::kBlockClose},
        {"kill-on-close", Close::kKillOnClose}};
    *ok = false;
    for (const auto& [name, c] : kNames) {
      if (value == name) {
        opts->pins.close_with_pins = c;
        *ok = true;
      }
    }
    return true;
  }
  if (key == "pin_passing") {
    *ok = value == "strict" || value == "follow-fd";
    opts->pins.strict_passing = value == "strict";
    return true;
  }
  if (key == "lease_break_time") target = &opts->leases.break_time;
  if (key == "attr_timeout") target = &opts->timeouts.attr;
  if (key == "entry_timeout") {
    target = &opts->timeouts.entry;
    opts->has_entry_timeout = true;
  }
  if (key == "negative_timeout") {
    target = &opts->timeouts.negative;
    opts->has_negative_timeout = true;
  }
  if (target == nullptr) return false;
  secs = ParseSeconds(value);
  *ok = secs.has_value();
  if (secs) *target = *secs;
  return true;
}

}  // namespace

std::vector<std::string> SplitOptionList(std::string_view list) {
  std::vector<std::string> items;
  std::string cur;
  for (size_t i = 0; i < list.size(); ++i) {
    char c = list[i];
    if (c == '\\' && i + 1 < list.size()) {
      cur += c;
      cur += list[++i];
    } else if (c == ',') {
      if (!cur.empty()) items.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) items.push_back(std::move(cur));
  return items;
}

Status ApplyOption(std::string_view item, DaemonOptions* opts) {
  if (item == "remount") {
    opts->remount = true;
    return Status::Ok();
  }
  const size_t eq = item.find('=');
  const std::string_view key = item.substr(0, eq);
  const std::string value = eq == std::string_view::npos ? "" : std::string(item.substr(eq + 1));
  bool ok = true;
  if (ApplyOwnOption(key, value, opts, &ok)) return ok ? Status::Ok() : BadValue(item);
  if (item == "default_permissions" || item == "no_default_permissions") {
    opts->default_permissions = item == "default_permissions";
    return Status::Ok();
  }
  if (ApplyAtimeOption(item, opts)) return Status::Ok();
  if (item == "ro") opts->read_only = true;
  if (item == "rw") opts->read_only = false;
  if (key == "fsname") opts->has_fsname = true;
  if (key == "subtype") opts->has_subtype = true;
  opts->fuse_options.emplace_back(item);
  return Status::Ok();
}

void FinishOptions(DaemonOptions* opts) {
  if (opts->threads == 0) {
    cpu_set_t cpus;
    const int n = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    opts->threads = static_cast<unsigned>(std::clamp(n, 1, 8));
  }
  if (opts->default_permissions) return;
  if (!opts->has_entry_timeout) opts->timeouts.entry = 0;
  if (!opts->has_negative_timeout) opts->timeouts.negative = 0;
}

engine::MountOptions EngineOptions(const DaemonOptions& opts) {
  engine::MountOptions mo;
  mo.read_only = opts.read_only;
  if (opts.strictatime)
    mo.atime = engine::AtimeMode::kStrict;
  else if (opts.noatime)
    mo.atime = engine::AtimeMode::kNever;
  mo.nodiratime = opts.nodiratime;
  return mo;
}

bool IsMountPointOption(std::string_view item) {
  static constexpr std::string_view kFlags[] = {
      "nosuid", "suid", "nodev", "dev",   "noexec",  "exec",  "sync",     "async",
      "dirsync", "silent", "loud", "defaults", "nofail", "auto", "noauto", "_netdev",
  };
  for (std::string_view f : kFlags)
    if (item == f) return true;
  return item.substr(0, 2) == "x-" || item.substr(0, 8) == "comment=";
}

namespace {

bool IsAtimeOption(std::string_view item) {
  DaemonOptions scratch;
  return item != "ro" && item != "rw" && ApplyAtimeOption(item, &scratch);
}

// Whether two option sets agree on everything a remount cannot change.
bool SameFixedOptions(const DaemonOptions& a, const DaemonOptions& b) {
  const std::set<std::string> fa(a.fuse_options.begin(), a.fuse_options.end());
  const std::set<std::string> fb(b.fuse_options.begin(), b.fuse_options.end());
  const auto& pa = a.pins;
  const auto& pb = b.pins;
  return fa == fb && a.threads == b.threads && a.default_permissions == b.default_permissions &&
         a.shared_mmap == b.shared_mmap && a.timeouts.attr == b.timeouts.attr &&
         a.timeouts.entry == b.timeouts.entry && a.timeouts.negative == b.timeouts.negative &&
         a.leases.break_time == b.leases.break_time &&
         a.leases.every_write_breaks == b.leases.every_write_breaks &&
         a.leases.pinned_break == b.leases.pinned_break && pa.softnic == pb.softnic &&
         pa.softnic_address == pb.softnic_address && pa.softnic_port == pb.softnic_port &&
         pa.close_with_pins == pb.close_with_pins && pa.strict_passing == pb.strict_passing;
}

}  // namespace

Status PlanRemount(const DaemonOptions& now, const std::vector<std::string>& items, uid_t uid,
                   gid_t gid, DaemonOptions* next) {
  *next = now;
  // As mount(2) takes a remount's flags: read-write unless "ro" is named;
  // the atime rule as named, or as it is when none is named.
  next->read_only = false;
  bool atime_named = false;
  for (const std::string& item : items) {
    if (item == "remount" || IsMountPointOption(item)) continue;
    if (item == "user_id=" + std::to_string(uid) || item == "group_id=" + std::to_string(gid))
      continue;
    if (item == "ro" || item == "rw") {
      next->read_only = item == "ro";
      continue;
    }
    const bool atime = item == "relatime" || IsAtimeOption(item);
    if (atime && !atime_named) {
      next->noatime = next->strictatime = next->nodiratime = false;
      atime_named = true;
    }
    if (item == "relatime") {
      // Unlike at mount (where it is just the default), a relatime named
      // after noatime or strictatime returns to it, as MS_RELATIME does.
      next->noatime = next->strictatime = false;
      continue;
    }
    if (atime) {
      ApplyAtimeOption(item, next);
      continue;
    }
    DaemonOptions probe = *next;
    if (Status s = ApplyOption(item, &probe); !s.ok()) return s;
    // An option given at the mount names what the mount has; a softnic= the
    // same as the mount's says it again, explicitly.
    probe.pins.softnic_given = next->pins.softnic_given;
    if (!SameFixedOptions(probe, *next))
      return Status::Error(EINVAL, "option '" + item +
                                       "' cannot be changed on a mounted leasefs (remount "
                                       "changes ro/rw and the atime options): unmount and "
                                       "mount again");
  }
  return Status::Ok();
}

std::string EscapeOptionValue(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::vector<std::string> FuseArgs(const DaemonOptions& opts, std::string_view fsname) {
  std::vector<std::string> args = {"leasefs"};
  std::string list;
  for (const auto& o : opts.fuse_options) list += (list.empty() ? "" : ",") + o;
  if (!opts.has_fsname) list += (list.empty() ? "" : ",") + ("fsname=" + EscapeOptionValue(fsname));
  if (!opts.has_subtype) list += (list.empty() ? "" : ",") + std::string("subtype=leasefs");
  if (opts.default_permissions) list += ",default_permissions";
  if (opts.noatime && !opts.strictatime) list += ",noatime";
  args.push_back("-o");
  args.push_back(list);
  if (opts.debug) args.push_back("-d");
  return args;
}

}  // namespace leasefs::daemon
