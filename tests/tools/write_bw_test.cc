// leasefs-write-bw with an anonymous buffer (a soft NIC in the server
// process, loopback TCP): server and client as real processes, their
// perftest-shaped output checked line by line, and the failures that must
// end both without a hang.
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tests/tools/write_bw_util.h"

namespace leasefs::testing {
namespace {

constexpr const char* kHeader =
    " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]";

TEST_SUITE("write_bw") {

TEST_CASE("write_bw: one size; client and server print the same perftest row") {
  const Pair p = RunPair({"-s", "65536"}, {"-s", "65536", "-n", "500"});
  INFO("server: " << p.server_out << p.server_err << "\nclient: " << p.client_out << p.client_err);
  REQUIRE(p.client_status == 0);
  REQUIRE(p.server_status == 0);
  bool ok = false;
  const auto rows = ResultRows(p.client_out, false, &ok);
  CHECK(ok);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].size == 65536);
  CHECK(rows[0].iterations == 500);
  CHECK(rows[0].avg > 0);
  CHECK(rows[0].peak >= rows[0].avg);
  CHECK(rows[0].rate > 0);
  const auto srows = ResultRows(p.server_out, false, &ok);
  CHECK(ok);
  REQUIRE(srows.size() == 1);
  CHECK(srows[0].text == rows[0].text);
  CHECK(p.server_out.find(kWaitingBanner) != std::string::npos);
  CHECK(p.client_out.find("                    RDMA_Write BW Test\n") != std::string::npos);
  CHECK(p.client_out.find(" TX depth        : 128\n") != std::string::npos);
  CHECK(p.client_out.find(" remote address: IP 127.0.0.1 PORT ") != std::string::npos);
  CHECK(p.client_err.empty());
}

TEST_CASE("write_bw: -a runs 2 B up to the server's buffer, one row per size") {
  // The server's buffer is -s 16K: 2, 4, ..., 16384 = 14 sizes.
  const Pair p = RunPair({"-s", "16K"}, {"-a", "-n", "64"});
  INFO("server: " << p.server_out << p.server_err << "\nclient: " << p.client_out << p.client_err);
  REQUIRE(p.client_status == 0);
  REQUIRE(p.server_status == 0);
  bool ok = false;
  const auto rows = ResultRows(p.client_out, false, &ok);
  CHECK(ok);
  REQUIRE(rows.size() == 14);
  for (size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i].size == (2ull << i));
    CHECK(rows[i].iterations == 64);
    CHECK(rows[i].avg > 0);
  }
  // perftest's server prints the client's last row only.
  const auto srows = ResultRows(p.server_out, false, &ok);
  REQUIRE(srows.size() == 1);
  CHECK(srows[0].text == rows.back().text);
}

TEST_CASE("write_bw: --report_gbits and -D") {
  const Pair p = RunPair({"-s", "4096", "--report_gbits"}, {"-s", "4096", "-D", "1", "--report_gbits"});
  INFO("server: " << p.server_out << p.server_err << "\nclient: " << p.client_out << p.client_err);
  REQUIRE(p.client_status == 0);
  REQUIRE(p.server_status == 0);
  bool ok = false;
  const auto rows = ResultRows(p.client_out, true, &ok);
  CHECK(ok);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].iterations > 0);
  CHECK(rows[0].peak == 0.0);  // no peak in duration mode
  CHECK(rows[0].avg > 0);
  CHECK(p.client_out.find(kHeader) == std::string::npos);
}

TEST_CASE("write_bw: a message larger than the server's buffer fails both ends") {
  const Pair p = RunPair({"-s", "4096"}, {"-s", "8192"});
  INFO("server: " << p.server_out << p.server_err << "\nclient: " << p.client_out << p.client_err);
  CHECK(p.client_status == 1);
  CHECK(p.server_status == 1);
  CHECK(p.client_err.find(" Failed to complete run_iter_bw function successfully\n") !=
        std::string::npos);
  CHECK(p.client_err.find("larger than the server's buffer (4096 bytes)") != std::string::npos);
  CHECK(p.server_err.find("the client's test failed") != std::string::npos);
}

TEST_CASE("write_bw: a client with no server says so and exits 1") {
  WriteBw client({"-p", std::to_string(FreePort()), "127.0.0.1"});
  CHECK(client.Wait(10000) == 1);
  CHECK(client.err().find(" Unable to init the socket connection\n") != std::string::npos);
  CHECK(client.err().find("Connection refused") != std::string::npos);
}

TEST_CASE("write_bw: usage errors") {
  SUBCASE("--mmap on the client") {
    WriteBw c({"--mmap", "/tmp/x", "127.0.0.1"});
    CHECK(c.Wait(10000) == 2);
    CHECK(c.err().find("--mmap and --mmap-offset are server options") != std::string::npos);
  }
  SUBCASE("a size over 8 MiB") {
    WriteBw c({"-s", "9M", "127.0.0.1"});
    CHECK(c.Wait(10000) == 2);
  }
  SUBCASE("a pattern that is no byte") {
    WriteBw c({"--pattern", "256", "127.0.0.1"});
    CHECK(c.Wait(10000) == 2);
  }
}

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
