#include "tools/leasectl/pin_format.h"

#include <map>

#include <fmt/core.h>

#include "tools/leasectl/lease_format.h"

namespace leasefs::leasectl {

namespace {

using OrderedJson = nlohmann::ordered_json;

std::string Joined(const std::vector<std::string>& words) {
  std::string s;
  for (const std::string& w : words) s += (s.empty() ? "" : ",") + w;
  return s.empty() ? "-" : s;
}

bool HasRkey(const PinRow& r) {
  return r.show_rkey && r.rec.provider == LEASEFS_PIN_SOFTNIC && r.rec.rkey != 0;
}

// The lease's state as the lists name it; "?" (null in JSON) when the lease
// list did not have it.
std::string LeaseStateText(const PinRow& r) {
  return r.lease_state == LEASEFS_STATE_NONE ? "?" : LeaseStateName(r.lease_state);
}
OrderedJson LeaseStateJson(const PinRow& r) {
  return r.lease_state == LEASEFS_STATE_NONE ? OrderedJson() : OrderedJson(LeaseStateName(r.lease_state));
}

// The pins of one context, grouped by file in the order of each file's first
// pin.
struct Owner {
  const leasefs_pin_record* first = nullptr;  // creator and uid
  std::vector<std::vector<const PinRow*>> files;
};
std::map<uint64_t, Owner> ByOwner(const std::vector<PinRow>& rows) {
  std::map<uint64_t, Owner> owners;
  for (const PinRow& r : rows) {
    Owner& o = owners[r.rec.context];
    if (o.first == nullptr) o.first = &r.rec;
    auto f = o.files.begin();
    while (f != o.files.end() && f->front()->rec.ino != r.rec.ino) ++f;
    if (f == o.files.end())
      o.files.push_back({&r});
    else
      f->push_back(&r);
  }
  return owners;
}

}  // namespace

std::string PinProviderName(uint32_t provider) {
  switch (provider) {
    case LEASEFS_PIN_SOFTNIC:
      return "softnic";
    case LEASEFS_PIN_DECLARED:
      return "declared";
    case LEASEFS_PIN_VERBS:
      return "verbs";
    default:
      return fmt::format("provider {}", provider);
  }
}

std::vector<std::string> PinFlagNames(uint32_t flags) {
  std::vector<std::string> names;
  for (uint32_t bit = 1; bit != 0; bit <<= 1) {
    if ((flags & bit) == 0) continue;
    if (bit == LEASEFS_PIN_REC_FENCED)
      names.push_back("fenced");
    else if (bit == LEASEFS_PIN_REC_WRITE)
      names.push_back("write");
    else if (bit == LEASEFS_PIN_REC_READ)
      names.push_back("read");
    else if (bit == LEASEFS_PIN_REC_CLOSED)
      names.push_back("closed");
    else
      names.push_back(fmt::format("{:#x}", bit));
  }
  return names;
}

std::string RkeyText(uint64_t rkey) { return fmt::format("0x{:016x}", rkey); }

std::string FormatPins(const std::vector<PinRow>& rows, const PinTotals& totals) {
  std::string out;
  if (rows.empty()) {
    out = "no pins\n";
  } else {
    std::vector<std::vector<std::string>> lines;
    lines.push_back({"PIN", "CONTEXT", "PID", "UID", "PROVIDER", "INODE", "PATH", "RANGE", "LEASE",
                     "LEASE-STATE", "FLAGS", "RKEY", "OPS", "BYTES", "REFUSED"});
    for (const PinRow& r : rows) {
      const leasefs_pin_record& p = r.rec;
      lines.push_back({std::to_string(p.pin_id), std::to_string(p.context),
                       std::to_string(p.creator_pid), std::to_string(p.uid),
                       PinProviderName(p.provider), std::to_string(p.ino),
                       r.file.empty() ? "?" : r.file, RangeText(p.offset, p.length),
                       std::to_string(p.lease_id), LeaseStateText(r), Joined(PinFlagNames(p.flags)),
                       HasRkey(r) ? RkeyText(p.rkey) : "-", std::to_string(p.ops),
                       std::to_string(p.bytes), std::to_string(p.refused)});
    }
    out = Columns(lines);
  }
  out += fmt::format("contexts: {}\n", totals.contexts);
  out += fmt::format("soft NIC refusals: bad rkey {}, fenced {}, other {}; malformed frames {}\n",
                     totals.refused_bad_rkey, totals.refused_fenced, totals.refused_other,
                     totals.malformed_frames);
  return out;
}

OrderedJson PinsJson(const std::vector<PinRow>& rows, const PinTotals& totals) {
  OrderedJson pins = OrderedJson::array();
  for (const PinRow& r : rows) {
    const leasefs_pin_record& p = r.rec;
    OrderedJson j;
    j["id"] = p.pin_id;
    j["context"] = p.context;
    j["creator_pid"] = p.creator_pid;
    j["uid"] = p.uid;
    j["provider"] = PinProviderName(p.provider);
    j["ino"] = p.ino;
    j["file"] = r.file.empty() ? OrderedJson() : OrderedJson(r.file);
    j["offset"] = p.offset;
    j["length"] = p.length;
    j["lease_id"] = p.lease_id;
    j["lease_state"] = LeaseStateJson(r);
    j["open_file"] = p.open_file;
    j["flags"] = PinFlagNames(p.flags);
    j["rkey"] = HasRkey(r) ? OrderedJson(RkeyText(p.rkey)) : OrderedJson();
    j["ops"] = p.ops;
    j["bytes"] = p.bytes;
    j["refused"] = p.refused;
    pins.push_back(std::move(j));
  }
  OrderedJson out;
  out["contexts"] = totals.contexts;
  out["softnic_refused"] = {{"bad_rkey", totals.refused_bad_rkey},
                            {"fenced", totals.refused_fenced},
                            {"other", totals.refused_other},
                            {"malformed_frames", totals.malformed_frames}};
  out["pins"] = std::move(pins);
  return out;
}

std::string FormatFilePins(const std::vector<PinRow>& rows) {
  if (rows.empty()) return "no pins\n";
  std::string out;
  for (const auto& [context, owner] : ByOwner(rows)) {
    out += fmt::format("context {}: creator {} uid {}\n", context, owner.first->creator_pid,
                       owner.first->uid);
    for (const std::vector<const PinRow*>& file : owner.files) {
      const PinRow& f = *file.front();
      out += "\t" + (f.file.empty() ? fmt::format("inode {}", f.rec.ino) : f.file) + "\n";
      for (const PinRow* r : file) {
        const leasefs_pin_record& p = r->rec;
        std::string flags = Joined(PinFlagNames(p.flags));
        flags = flags == "-" ? "" : " " + flags;
        out += fmt::format("\t\tpin {} bytes {} {}{} lease {} {}\n", p.pin_id,
                           RangeText(p.offset, p.length), PinProviderName(p.provider), flags,
                           p.lease_id, LeaseStateText(*r));
      }
    }
  }
  return out;
}

OrderedJson FilePinsJson(const std::vector<PinRow>& rows) {
  OrderedJson owners = OrderedJson::array();
  for (const auto& [context, owner] : ByOwner(rows)) {
    OrderedJson files = OrderedJson::array();
    for (const std::vector<const PinRow*>& file : owner.files) {
      OrderedJson ranges = OrderedJson::array();
      for (const PinRow* r : file) {
        OrderedJson j;
        j["pin"] = r->rec.pin_id;
        j["offset"] = r->rec.offset;
        j["length"] = r->rec.length;
        j["provider"] = PinProviderName(r->rec.provider);
        j["flags"] = PinFlagNames(r->rec.flags);
        j["lease_id"] = r->rec.lease_id;
        j["lease_state"] = LeaseStateJson(*r);
        ranges.push_back(std::move(j));
      }
      const PinRow& f = *file.front();
      OrderedJson fj;
      fj["ino"] = f.rec.ino;
      fj["file"] = f.file.empty() ? OrderedJson() : OrderedJson(f.file);
      fj["ranges"] = std::move(ranges);
      files.push_back(std::move(fj));
    }
    OrderedJson o;
    o["context"] = context;
    o["creator_pid"] = owner.first->creator_pid;
    o["uid"] = owner.first->uid;
    o["files"] = std::move(files);
    owners.push_back(std::move(o));
  }
  OrderedJson out;
  out["owners"] = std::move(owners);
  return out;
}

}  // namespace leasefs::leasectl
