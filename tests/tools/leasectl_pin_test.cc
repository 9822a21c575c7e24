// leasectl hold --pin, pins and file_pins against a real leasefs daemon: a
// pin made by one process and watched from others (root, and uid 65534, who
// sees none of root's pins and no rkey), a peer that uses the rkey and one
// that guesses, the pin's end when its holder is killed, and the notices of
// a fence.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/unique_fd.h"
#include "lease/client/lease.h"
#include "lease/client/leasefs_pin.h"
#include "pin/softnic_peer.h"
#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

using Json = nlohmann::json;

MountOptions Options() {
  MountOptions o;
  o.pool_size = "64M";
  o.options = "allow_other,lease_break_time=20";
  return o;
}

// What `hold --pin` printed when it started.
struct Held {
  uint64_t lease = 0;
  uint64_t pin = 0;
  uint64_t context = 0;
  uint64_t rkey = 0;
  std::string address;
  int port = 0;
  std::string lease_line, pin_line;
};

Held Start(Background& hold) {
  Held h;
  h.lease_line = hold.Line();
  h.pin_line = hold.Line();
  unsigned long long lease = 0, pin = 0, ctx = 0, rkey = 0;
  char addr[64] = {};
  int port = 0;
  CHECK(std::sscanf(h.lease_line.c_str(), "lease %llu granted:", &lease) == 1);
  const char* at = std::strstr(h.pin_line.c_str(), " context ");
  if (std::sscanf(h.pin_line.c_str(), "pin %llu registered:", &pin) == 1 && at != nullptr) {
    const int n = std::sscanf(at, " context %llu rkey 0x%llx at %63[0-9.]:%d", &ctx, &rkey, addr,
                              &port);
    if (n < 1) std::sscanf(at, " context %llu", &ctx);
  }
  h.lease = lease;
  h.pin = pin;
  h.context = ctx;
  h.rkey = rkey;
  h.address = addr;
  h.port = port;
  return h;
}

Json JsonOf(const std::vector<std::string>& args) {
  const ProcessResult r = Leasectl(args);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  return Json::parse(r.output);
}

// `pins --json` once `hold --pin` made one pin; throws otherwise (for the
// cases that count their failed assertions).
Json PinnedJson(const Held& h, const std::string& mnt) {
  if (h.pin == 0) throw std::runtime_error("hold --pin: " + h.lease_line + " / " + h.pin_line);
  const ProcessResult r = Leasectl({"pins", "--json", mnt});
  if (r.exit_code != 0) throw std::runtime_error("pins: " + r.output);
  Json j = Json::parse(r.output);
  if (j["pins"].size() != 1) throw std::runtime_error("pins: " + r.output);
  return j;
}

// Waits up to 5 s for `leasectl pins` to list nothing.
bool PinsGone(const std::string& mnt) {
  for (int i = 0; i < 500; ++i) {
    if (JsonOf({"pins", "--json", mnt})["pins"].empty()) return true;
    usleep(10000);
  }
  return false;
}

uint64_t Ino(const std::string& path) {
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

TEST_SUITE("leasectl") {
  TEST_CASE("hold --pin: pins and file_pins from other processes show exactly that pin") {
    TestMount m(Options());
    const std::string f = m.path("f"), g = m.path("g");
    WriteAt(f, 0, Blocks("abcdefgh"));
    WriteAt(g, 0, Blocks("z"));
    REQUIRE(chmod(f.c_str(), 0644) == 0);
    Background hold({"hold", "--pin", "--range", "4K:16K", f});
    const Held h = Start(hold);
    CHECK(h.lease_line == fmt::format("lease {} granted: {} bytes 4096..20479 write,exclusive",
                                      h.lease, f));
    REQUIRE(h.pin != 0);
    CHECK(h.context != 0);
    CHECK(h.rkey != 0);
    CHECK(h.address == "127.0.0.1");
    CHECK(h.port > 0);
    CHECK(h.pin_line == fmt::format("pin {} registered: {} bytes 4096..20479 softnic context {} "
                                    "rkey 0x{:016x} at 127.0.0.1:{}",
                                    h.pin, f, h.context, h.rkey, h.port));

    // A peer with the rkey writes one block at the pin's offset 4096 (the
    // file's 8192); one that guesses is refused and counted.
    auto peer = pin::SoftNicPeer::Connect(h.address, static_cast<uint16_t>(h.port));
    REQUIRE(peer.ok());
    const std::string block = Blocks("W");
    auto done = peer->Write(h.rkey, 4096, block.data(), static_cast<uint32_t>(block.size()));
    REQUIRE(done.ok());
    CHECK(done->ok());
    auto refused = peer->Write(h.rkey ^ 0x5a5a, 0, block.data(), 4096);
    REQUIRE(refused.ok());
    CHECK(!refused->ok());
    CHECK(ReadAll(f) == Blocks("abWdefgh"));

    const Json j = JsonOf({"pins", "--json", m.mnt()});
    CHECK(j["contexts"] == 1);
    CHECK(j["softnic_refused"] ==
          Json{{"bad_rkey", 1}, {"fenced", 0}, {"other", 0}, {"malformed_frames", 0}});
    REQUIRE(j["pins"].size() == 1);
    const Json& p = j["pins"][0];
    CHECK(p["id"] == h.pin);
    CHECK(p["context"] == h.context);
    CHECK(p["creator_pid"] == hold.pid() + 0);
    CHECK(p["uid"] == 0);
    CHECK(p["provider"] == "softnic");
    CHECK(p["ino"] == Ino(f));
    CHECK(p["file"] == f);
    CHECK(p["offset"] == 4096);
    CHECK(p["length"] == 16384);
    CHECK(p["lease_id"] == h.lease);
    CHECK(p["lease_state"] == "active");
    // What peers may do: "write" and "read" (the ABI's REC_WRITE and
    // REC_READ), checked on their own below; the other views must agree.
    std::string flags;
    for (const Json& word : p["flags"]) {
      CHECK((word == "write" || word == "read"));
      flags += (flags.empty() ? " " : ",") + word.get<std::string>();
    }
    CHECK(p["rkey"] == fmt::format("0x{:016x}", h.rkey));
    CHECK(p["ops"] == 1);
    CHECK(p["bytes"] == 4096);
    CHECK(p["refused"] == 0);  // the guess named no rkey of this pin

    // The lease list agrees: one pin counted on that lease.
    const Json leases = JsonOf({"leases", "--json", m.mnt()});
    REQUIRE(leases["leases"].size() == 1);
    CHECK(leases["leases"][0]["id"] == h.lease);
    CHECK(leases["leases"][0]["pins"] == 1);
    CHECK(leases["leases"][0]["state"] == "active");

    // The file's own pins, and another file's (none).
    CHECK(JsonOf({"pins", "--json", f})["pins"].size() == 1);
    CHECK(JsonOf({"pins", "--json", g})["pins"].empty());

    const std::string view = fmt::format(
        "context {}: creator {} uid 0\n\t{}\n\t\tpin {} bytes 4096..20479 softnic{} lease {} "
        "active\n",
        h.context, hold.pid(), f, h.pin, flags, h.lease);
    CHECK(Leasectl({"file_pins", m.mnt()}).output == view);
    CHECK(Leasectl({"file_pins", "--pid", std::to_string(hold.pid()), m.mnt()}).output == view);
    CHECK(Leasectl({"file_pins", "--pid", "1", m.mnt()}).output == "no pins\n");
    const Json fp = JsonOf({"file_pins", "--json", m.mnt()});
    REQUIRE(fp["owners"].size() == 1);
    CHECK(fp["owners"][0]["context"] == h.context);
    CHECK(fp["owners"][0]["creator_pid"] == hold.pid() + 0);
    REQUIRE(fp["owners"][0]["files"].size() == 1);
    CHECK(fp["owners"][0]["files"][0]["file"] == f);
    CHECK(fp["owners"][0]["files"][0]["ranges"] ==
          Json::array({Json{{"pin", h.pin},
                            {"offset", 4096},
                            {"length", 16384},
                            {"provider", "softnic"},
                            {"flags", p["flags"]},
                            {"lease_id", h.lease},
                            {"lease_state", "active"}}}));

    SUBCASE("uid 65534 sees none of root's pins, and no rkey anywhere") {
      const std::string mnt = m.mnt(), rkey_hex = fmt::format("{:016x}", h.rkey);
      const int rc = RunAs(65534, 65534, {}, [&]() {
        const ProcessResult json = Leasectl({"pins", "--json", mnt});
        if (json.exit_code != 0) return 2;
        const Json mine = Json::parse(json.output);
        if (!mine["pins"].empty()) return 3;
        if (mine["softnic_refused"]["bad_rkey"] != 1) return 5;  // everybody's refusals
        const ProcessResult text = Leasectl({"pins", mnt});
        // (How many contexts it counts is checked on its own below.)
        if (text.output != fmt::format("no pins\ncontexts: {}\nsoft NIC refusals: bad rkey 1, "
                                       "fenced 0, other 0; malformed frames 0\n",
                                       mine["contexts"].get<uint64_t>()))
          return 6;
        const ProcessResult owners = Leasectl({"file_pins", mnt});
        if (owners.output != "no pins\n") return 7;
        if ((json.output + text.output + owners.output).find(rkey_hex) != std::string::npos)
          return 8;
        return 0;
      });
      CHECK(rc == 0);
    }

    SUBCASE("SIGKILL of the holder: the pin and its lease are gone") {
      hold.Kill();
      CHECK(PinsGone(m.mnt()));
      CHECK(Leasectl({"pins", m.mnt()}).output ==
            "no pins\ncontexts: 0\nsoft NIC refusals: bad rkey 1, fenced 0, other 0; malformed "
            "frames 0\n");
      CHECK(Leasectl({"file_pins", m.mnt()}).output == "no pins\n");
      CHECK(Leasectl({"leases", m.mnt()}).output == "no leases\n");
      auto late = peer->Write(h.rkey, 0, block.data(), 4096);
      CHECK((!late.ok() || !late->ok()));
    }

    SUBCASE("SIGTERM: the pin is unregistered, then the lease released") {
      REQUIRE(kill(hold.pid(), SIGTERM) == 0);
      CHECK(hold.Line() == fmt::format("pin {} unregistered", h.pin));
      CHECK(hold.Line() == fmt::format("lease {} released", h.lease));
      CHECK(hold.Wait() == 128 + SIGTERM);
      CHECK(JsonOf({"pins", "--json", m.mnt()})["pins"].empty());
      CHECK(Leasectl({"leases", m.mnt()}).output == "no leases\n");
    }
  }

  // PIN_LIST as include/leasefs/ioctl.h gives it: a soft NIC pin's record
  // carries REC_WRITE and REC_READ, and a user other than root counts only
  // its own contexts.
  TEST_CASE("pins: a soft NIC pin is flagged write and read") {
    TestMount m(Options());
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("ab"));
    Background hold({"hold", "--pin", f});
    const Json j = PinnedJson(Start(hold), m.mnt());
    CHECK(j["pins"][0]["flags"] == Json::array({"write", "read"}));
  }

  TEST_CASE("pins: uid 65534 counts no context of root's") {
    TestMount m(Options());
    const std::string f = m.path("f"), mnt = m.mnt();
    WriteAt(f, 0, Blocks("ab"));
    Background hold({"hold", "--pin", f});
    if (PinnedJson(Start(hold), mnt)["contexts"] != 1) throw std::runtime_error("contexts");
    const int rc = RunAs(65534, 65534, {}, [&]() {
      const ProcessResult r = Leasectl({"pins", "--json", mnt});
      if (r.exit_code != 0 || !Json::parse(r.output)["pins"].empty()) return 2;
      return Json::parse(r.output)["contexts"] == 0 ? 0 : 3;
    });
    if (rc != 0 && rc != 3) throw std::runtime_error("leasectl as 65534: " + std::to_string(rc));
    CHECK(rc == 0);
  }

  TEST_CASE("pins: a closed file's pin keeps a zombie lease; its path is found by the walk") {
    TestMount m(Options());
    REQUIRE(mkdir(m.path("d").c_str(), 0755) == 0);
    REQUIRE(mkdir(m.path("d/e").c_str(), 0755) == 0);
    const std::string f = m.path("d/e/f");
    WriteAt(f, 0, Blocks("abc"));
    for (int i = 0; i < 50; ++i) WriteAt(m.path(fmt::format("d/other{}", i)), 0, "x");
    // The sequence of semantics-2019 §5 scenario 3 in this process: open,
    // lease, pin, close; the context stays open.
    UniqueFd fd(open(f.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd.valid());
    auto lease = client::Lease::Take(fd.get(), {0, 0}, client::Type::kWrite, client::kExclusive);
    REQUIRE(lease.ok());
    leasefs_pin_context ctx{};
    REQUIRE(leasefs_pin_context_open(fd.get(), &ctx) == 0);
    uint64_t pin = 0;
    REQUIRE(leasefs_pin_register(fd.get(), &ctx, 4096, 8192, LEASEFS_PIN_DECLARED, 0, &pin,
                                 nullptr) == 0);
    const uint64_t lease_id = lease->Detach();
    fd.reset();

    const Json j = JsonOf({"pins", "--json", m.mnt()});
    REQUIRE(j["pins"].size() == 1);
    const Json& p = j["pins"][0];
    CHECK(p["id"] == pin);
    CHECK(p["file"] == f);  // nobody has it open: the walk met it
    CHECK(p["ino"] == Ino(f));
    CHECK(p["lease_id"] == lease_id);
    CHECK(p["lease_state"] == "zombie");
    CHECK(p["flags"] == Json::array({"closed"}));
    CHECK(p["creator_pid"] == getpid());
    const Json leases = JsonOf({"leases", "--json", m.mnt()});
    REQUIRE(leases["leases"].size() == 1);
    CHECK(leases["leases"][0]["state"] == "zombie");
    CHECK(leases["leases"][0]["pins"] == 1);
    CHECK(Leasectl({"file_pins", m.path("d")}).output ==
          fmt::format("context {}: creator {} uid 0\n\t{}\n\t\tpin {} bytes 4096..12287 "
                      "declared closed lease {} zombie\n",
                      ctx.id, getpid(), f, pin, lease_id));

    leasefs_pin_context_close(&ctx);  // its pins go, and the zombie with them
    CHECK(PinsGone(m.mnt()));
    CHECK(Leasectl({"leases", m.mnt()}).output == "no leases\n");
  }

  TEST_CASE("hold --pin=declared: no rkey; a shared lease cannot pin (EPERM, lease released)") {
    TestMount m(Options());
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("ab"));
    {
      Background hold({"hold", "--pin=declared", f});
      const Held h = Start(hold);
      CHECK(h.lease_line == fmt::format("lease {} granted: {} bytes 0..end write,exclusive",
                                        h.lease, f));
      CHECK(h.pin_line == fmt::format("pin {} registered: {} bytes 0..8191 declared context {}",
                                      h.pin, f, h.context));
      const Json j = JsonOf({"pins", "--json", m.mnt()});
      REQUIRE(j["pins"].size() == 1);
      CHECK(j["pins"][0]["provider"] == "declared");
      CHECK(j["pins"][0]["rkey"].is_null());
      CHECK(j["pins"][0]["flags"] == Json::array());
      CHECK(j["pins"][0]["offset"] == 0);
      CHECK(j["pins"][0]["length"] == 8192);
      REQUIRE(kill(hold.pid(), SIGINT) == 0);
      CHECK(hold.Line() == fmt::format("pin {} unregistered", h.pin));
      CHECK(hold.Line() == fmt::format("lease {} released", h.lease));
      CHECK(hold.Wait() == 128 + SIGINT);
    }
    const ProcessResult shared = Leasectl({"hold", "--shared", "--pin", f});
    CHECK(shared.exit_code == 1);
    CHECK(shared.output.find(fmt::format(
              "leasectl: hold: {}: Operation not permitted (registering the range: a pin needs "
              "an exclusive lease of this process: --exclusive, or --write --unbreakable; "
              "filling holes needs --write)\n",
              f)) != std::string::npos);
    CHECK(shared.output.find(" released\n") != std::string::npos);
    CHECK(JsonOf({"pins", "--json", m.mnt()})["pins"].empty());
    CHECK(Leasectl({"leases", m.mnt()}).output == "no leases\n");
  }

  TEST_CASE("hold --pin --ignore-breaks under pinned_break=fence: the fence is a line") {
    MountOptions o = Options();
    o.options = "allow_other,lease_break_time=1,pinned_break=fence";
    TestMount m(o);
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("abcd"));
    Background hold({"hold", "--pin", "--ignore-breaks", f});
    const Held h = Start(hold);
    REQUIRE(h.pin != 0);
    const pid_t breaker = fork();
    REQUIRE(breaker >= 0);
    if (breaker == 0) _exit(truncate(f.c_str(), 0) == 0 ? 0 : errno);
    std::vector<std::string> lines;
    for (std::string l = hold.Line(); l != "EOF" && l != "TIMEOUT"; l = hold.Line())
      lines.push_back(l);
    CHECK(hold.Wait() == 1);
    int status = 0;
    REQUIRE(waitpid(breaker, &status, 0) == breaker);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0].find(fmt::format("lease {} breaking: deadline in ", h.lease)) == 0);
    CHECK(lines[1] == fmt::format("pin {} fenced: rkey 0x{:016x}", h.pin, h.rkey));
    CHECK(lines[2] == fmt::format("lease {} revoked", h.lease));
    CHECK(lines[3] == fmt::format("pin {} unregistered", h.pin));
    CHECK(SizeOf(f) == 0);
    CHECK(JsonOf({"pins", "--json", m.mnt()})["pins"].empty());
  }
}

}  // namespace
}  // namespace leasefs::testing
