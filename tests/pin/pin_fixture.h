// Shared pieces of the pin table's tests (pin_table_test.cc,
// pin_policy_test.cc): memory to pin, and a pin table over a real lease table
// and a real soft NIC on loopback, with contexts whose notices the test reads
// and pin requests for one inode.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>

#include "base/unique_fd.h"
#include "engine/filesystem.h"
#include "lease/lease_table.h"
#include "pin/pin_table.h"
#include "pin/softnic.h"

namespace leasefs::pin {

// kBytes of memory to pin, with a count of how often it was given back.
template <uint64_t kBytes>
struct PinMemory {
  std::vector<char> bytes = std::vector<char>(kBytes, 'm');
  std::atomic<int> released{0};
  PinTable::Region Region() {
    return PinTable::Region{bytes.data(), kBytes, [this] { released.fetch_add(1); }};
  }
};

// A pin table over a lease table with `opts` and a started soft NIC; its
// pin requests are for inode `ino`, [0, len), by uid 1000.
struct PinTableFixture {
  PinTableFixture(const lease::Options& opts, engine::Ino ino, uint64_t len)
      : leases(opts, nullptr), table(&leases, &nic), ino_(ino), len_(len) {
    REQUIRE(nic.Start().ok());
  }
  // A context of `uid` whose notices arrive on `notices`.
  PinTable::NewContext Context(uid_t uid = 1000) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    notices.reset(sv[1]);
    auto c = table.AddContext(::getpid(), uid, UniqueFd(sv[0]));
    REQUIRE(c.ok());
    return *c;
  }
  // A pin of the whole range through open file `of` in context `c`.
  PinTable::PinRequest Req(const PinTable::NewContext& c, lease::OpenFileId of,
                           Provider p = Provider::kSoftNic) const {
    PinTable::PinRequest r;
    r.context = c.id;
    r.token = c.token;
    r.open_file = of;
    r.ino = ino_;
    r.uid = 1000;
    r.length = len_;
    r.provider = p;
    return r;
  }
  SoftNic nic;
  lease::LeaseTable leases;
  PinTable table;
  UniqueFd notices;

 private:
  const engine::Ino ino_;
  const uint64_t len_;
};

}  // namespace leasefs::pin
