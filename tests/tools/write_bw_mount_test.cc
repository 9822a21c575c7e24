// leasefs-write-bw --mmap against a real leasefs daemon: the server leases
// and pins a range of a file with the daemon's soft NIC, the client's bytes
// land in the file's blocks (read back through the FUSE path), and the pin
// and lease are gone when the server exits. A break of the lease under
// pinned_break=fence ends the client with a completion error, not a hang.
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "base/unique_fd.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "tests/tools/leasectl_util.h"
#include "tests/tools/write_bw_util.h"

namespace leasefs::testing {
namespace {

constexpr uint64_t kFileBytes = 1u << 20;
constexpr uint64_t kOffset = 64u << 10;

MountOptions Options(const std::string& extra = {}) {
  MountOptions o;
  o.pool_size = "64M";
  o.options = "allow_other" + extra;
  return o;
}

// Pins and leases left on the mount (through a descriptor of its root).
struct Leftovers {
  uint32_t pins = 0;
  size_t leases = 0;
};
Leftovers Remaining(const TestMount& m) {
  Leftovers l;
  const UniqueFd root(open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(root.valid());
  leasefs_pin_list pl{};
  REQUIRE(leasefs_pin_list_page(root.get(), 0, &pl) == 0);
  l.pins = pl.count;
  leasefs_lease_info leases[16];
  int more = 0;
  REQUIRE(leasefs_list_leases(root.get(), 0, leases, 16, &l.leases, &more) == 0);
  return l;
}

TEST_CASE("write_bw --mmap: the client's pattern lands in the file's pinned range") {
  TestMount m(Options());
  const std::string f = m.path("f");
  WriteAt(f, 0, std::string(kFileBytes, 'x'));
  const Pair p = RunPair({"--mmap", f, "--mmap-offset", std::to_string(kOffset)},
                         {"-s", "65536", "-n", "100", "--pattern", "0xab"});
  INFO("server: " << p.server_out << p.server_err << "\nclient: " << p.client_out << p.client_err);
  REQUIRE(p.client_status == 0);
  REQUIRE(p.server_status == 0);
  CHECK(p.server_out.find(" Buffer          : " + f + " at 65536, 983040[B] (leasefs pin ") !=
        std::string::npos);
  CHECK(p.client_out.find(" Buffer          : leasefs pin of the server, 983040[B]\n") !=
        std::string::npos);
  bool ok = false;
  const auto rows = ResultRows(p.client_out, false, &ok);
  CHECK(ok);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].iterations == 100);

  // 100 messages of 64 KiB over 15 slots: every byte of the range written.
  const std::string data = ReadAll(f);
  REQUIRE(data.size() == kFileBytes);
  CHECK(data.substr(0, kOffset) == std::string(kOffset, 'x'));
  CHECK(data.substr(kOffset) == std::string(kFileBytes - kOffset, '\xab'));
  const Leftovers l = Remaining(m);
  CHECK(l.pins == 0);
  CHECK(l.leases == 0);
}

TEST_CASE("write_bw --mmap: an offset that is not block-aligned is refused before waiting") {
  TestMount m(Options());
  const std::string f = m.path("f");
  WriteAt(f, 0, std::string(kFileBytes, 'x'));
  WriteBw server({"--mmap", f, "--mmap-offset", "1000", "-p", std::to_string(FreePort())});
  CHECK(server.Wait(10000) == 1);
  CHECK(server.err().find("--mmap-offset must be a multiple of 4096") != std::string::npos);
  CHECK(server.out().find(kWaitingBanner) == std::string::npos);
}

TEST_CASE("write_bw --mmap: a break under pinned_break=fence ends the client with an error") {
  TestMount m(Options(",pinned_break=fence,lease_break_time=5"));
  const std::string f = m.path("f");
  WriteAt(f, 0, std::string(kFileBytes, 'x'));
  const std::string port = std::to_string(FreePort());
  WriteBw server({"--mmap", f, "-p", port});
  REQUIRE(server.WaitFor(kWaitingBanner));
  WriteBw client({"-s", "65536", "-D", "20", "-p", port, "127.0.0.1"});
  REQUIRE(client.WaitFor(" #bytes "));
  // Another process's truncate breaks the server's lease: the server unpins
  // and releases, the truncate proceeds, the client's next WRITE fails.
  const UniqueFd fd(open(f.c_str(), O_RDWR | O_CLOEXEC));
  REQUIRE(fd.valid());
  CHECK(ftruncate(fd.get(), 4096) == 0);
  const int client_status = client.Wait(30000);
  const int server_status = server.Wait(30000);
  INFO("server: " << server.out() << server.err() << "\nclient: " << client.out() << client.err());
  CHECK(client_status == 1);
  CHECK(server_status == 1);
  CHECK(server.out().find(" Lease break on the buffer: unpinning and releasing it\n") !=
        std::string::npos);
  const bool access_error =
      client.err().find(" Completion with error at client\n Failed status 10: wr_id ") !=
      std::string::npos;
  const bool fenced = client.err().find(" Region fenced by the server: rkey 0x") != std::string::npos;
  CHECK((access_error || fenced));
  CHECK(client.err().find(" Failed to complete run_iter_bw function successfully\n") !=
        std::string::npos);
  CHECK(SizeOf(f) == 4096);
  const Leftovers l = Remaining(m);
  CHECK(l.pins == 0);
  CHECK(l.leases == 0);
}

}  // namespace
}  // namespace leasefs::testing
