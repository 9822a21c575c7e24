// Debian's perftest (ib_write_bw, ib_read_bw, ib_send_bw), unmodified, over
// the emulated RDMA device of leasefs-run (docs/verbs.md), with both buffers
// in leasefs files (--mmap): the server's registration is a pin of its file
// with the daemon's soft NIC. Checks perftest's own exit status and result
// table, the bytes that moved (read back through FUSE), what `leasectl pins`
// shows while it runs, and a truncate under pinned_break=fence in the
// middle of a run.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "base/unique_fd.h"
#include "tests/run/background.h"
#include "tests/run/probe.h"
#include "tests/support/mount.h"

namespace leasefs::testing {
namespace {

constexpr size_t kFileSize = 2u << 20;  // perftest's buffer is 2 x max(size, 4096) bytes

std::vector<std::string> Perftest(const std::string& tool, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {RunBin(), "/usr/bin/" + tool};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// A perftest server and its client under leasefs-run, with `args` and an
// exchange port of their own: the server's buffer in `server_file`, the
// client's in `client_file` ("": anonymous memory). The client starts once
// the server listens, or when StartClient() is called.
class PerftestPair {
 public:
  PerftestPair(const std::string& tool, std::vector<std::string> args,
               const std::string& server_file, const std::string& client_file,
               bool start_client = true)
      : tool_(tool) {
    port_ = NextPort();
    const uint16_t port = port_;
    args.push_back("-p");
    args.push_back(std::to_string(port));
    std::vector<std::string> sargs = args;
    sargs.push_back("--mmap=" + server_file);
    client_args_ = args;
    if (!client_file.empty()) client_args_.push_back("--mmap=" + client_file);
    client_args_.push_back("127.0.0.1");
    server_ = std::make_unique<Background>(Perftest(tool, sargs));
    AwaitListen(*server_, port);
    if (start_client) StartClient();
  }

  void StartClient() { client_ = std::make_unique<Background>(Perftest(tool_, client_args_)); }
  Background& server() { return *server_; }
  Background& client() { return *client_; }
  uint16_t port() const { return port_; }  // the exchange (or rdma_cm) port

 private:
  std::string tool_;
  uint16_t port_ = 0;
  std::vector<std::string> client_args_;
  std::unique_ptr<Background> server_;
  std::unique_ptr<Background> client_;  // after server_: destroyed (killed) first
};

// One run of `tool` with `size`-byte messages, both buffers in files of
// the mount. perftest fills each buffer with random bytes after registering
// it; the client's message then lands at the second half of the server's
// buffer (WRITE, SEND), or the server's second half in the client's first
// (READ): for sizes of a page or more always at the same place.
void RunOne(TestMount& m, const std::string& tool, size_t size, int iterations) {
  CAPTURE(tool);
  CAPTURE(size);
  const std::string s = m.path(tool + "-server-" + std::to_string(size));
  const std::string c = m.path(tool + "-client-" + std::to_string(size));
  MakeFile(s, kFileSize, '\0');
  MakeFile(c, kFileSize, '\0');
  PerftestPair run(tool, {"-s", std::to_string(size), "-n", std::to_string(iterations)}, s, c);
  Background& server = run.server();
  Background& client = run.client();
  const int crc = client.Wait();
  const int src = server.Wait();
  const std::string cout = client.Output();
  INFO("client: " << cout << "\nserver: " << server.Output());
  REQUIRE(crc == 0);
  REQUIRE(src == 0);
  // perftest's own table: the header, and a row for the size and count.
  CHECK(cout.find(" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]") !=
        std::string::npos);
  char row[64];
  std::snprintf(row, sizeof row, "\n %-7zu    %-10d", size, iterations);
  CHECK(cout.find(row) != std::string::npos);
  CHECK(cout.find("Device         : leasefs0") != std::string::npos);
  const size_t half = std::max<size_t>(size, 4096);
  const std::string at_server = ReadAt(s, static_cast<off_t>(half), size);
  const std::string at_client = ReadAt(c, 0, size);
  CHECK(at_server == at_client);
  // The bytes are perftest's random ones, not the zeros the files began with.
  CHECK(at_client != std::string(size, '\0'));
}

TEST_CASE("perftest: ib_write_bw, ib_read_bw and ib_send_bw over leasefs0 between leasefs files") {
  TestMount m(RunMountOptions());
  for (const char* tool : {"ib_write_bw", "ib_read_bw", "ib_send_bw"}) {
    for (size_t size : {4096u, 65536u, 1u << 20}) RunOne(m, tool, size, size >= (1u << 20) ? 200 : 1000);
  }
}

TEST_CASE("perftest: without leasefs-run, ib_write_bw finds no device and says so at once") {
  Background direct({"/usr/bin/ib_write_bw", "-p", std::to_string(NextPort()), "127.0.0.1"});
  const int rc = direct.Wait(30);
  const std::string out = direct.Output();
  INFO(out);
  CHECK(rc != 0);
  CHECK(rc != -1);  // it did not hang
  CHECK(out.find(" Did not detect devices \n If device exists, check if driver is up\n") !=
        std::string::npos);
}

// The pins of the mount as `leasectl pins` prints them.
std::string Pins(const TestMount& m) {
  const ProcessResult r = Run({LeasectlBin(), "pins", m.mnt()});
  return r.output;
}

TEST_CASE("perftest: the server's registration is a pin while ib_write_bw runs; a truncate under "
          "pinned_break=fence ends the run with perftest's remote access error") {
  MountOptions o = RunMountOptions();
  o.options = "allow_other,lease_break_time=2,pinned_break=fence";
  TestMount m(o);
  const std::string s = m.path("server");
  const std::string c = m.path("client");
  MakeFile(s, kFileSize, '\0');
  MakeFile(c, kFileSize, '\0');
  PerftestPair run("ib_write_bw", {"-s", "65536", "-D", "60"}, s, c);
  Background& server = run.server();
  Background& client = run.client();
  // Wait for the server's pin to show (registration follows the exchange).
  std::string pins;
  for (int i = 0; i < 3000; ++i) {
    pins = Pins(m);
    if (pins.find(s) != std::string::npos) break;
    REQUIRE_MESSAGE(client.running(), client.Output());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO("pins: " << pins);
  REQUIRE(pins.find(s) != std::string::npos);
  CHECK(pins.find("softnic") != std::string::npos);
  CHECK(pins.find("0..131071") != std::string::npos);  // perftest's buffer: 2 x 64 KiB
  // A third process truncates the server's file while the client writes:
  // the pinned lease is recalled, the server's shim lets the pin go (or the
  // daemon fences it at the break time), the truncate proceeds.
  REQUIRE(truncate(s.c_str(), 0) == 0);
  // The freed blocks go to a new file; nothing may write them after this.
  const std::string pattern(kFileSize, '\x5a');
  MakeFile(m.path("newcomer"), kFileSize, '\x5a');
  const int crc = client.Wait(60);
  const std::string cout = client.Output();
  INFO("client: " << cout << "\nserver: " << server.Output());
  CHECK(crc == 1);
  CHECK(cout.find(" Completion with error at client\n") != std::string::npos);
  CHECK(cout.find(" Failed status 10: wr_id 0 syndrom 0xa\n") != std::string::npos);
  CHECK(server.Wait(60) != -1);
  CHECK(ReadAt(m.path("newcomer"), 0, kFileSize) == pattern);
  CHECK(Pins(m).find(s) == std::string::npos);
  // The daemon is alive and the pool consistent.
  struct stat root {};
  CHECK(stat(m.mnt().c_str(), &root) == 0);
  CHECK(m.Unmount() == 0);
  const ProcessResult f = m.Fsck();
  CHECK_MESSAGE(f.exit_code == 0, f.output);
}


TEST_CASE("perftest: ib_write_bw -a --report_gbits: every size from 2 B to 8 MiB, in Gb/sec") {
  TestMount m(RunMountOptions());
  const std::string s = m.path("server");
  MakeFile(s, 16u << 20, '\0');  // -a: perftest's buffer is 2 x 8 MiB
  PerftestPair run("ib_write_bw", {"-a", "-n", "20", "--report_gbits"}, s, "");
  Background& server = run.server();
  Background& client = run.client();
  const int crc = client.Wait();
  const std::string cout = client.Output();
  INFO("client: " << cout << "\nserver: " << server.Output());
  REQUIRE(crc == 0);
  CHECK(server.Wait() == 0);
  CHECK(cout.find(" #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]") !=
        std::string::npos);
  for (size_t size = 2; size <= (8u << 20); size *= 2) {
    char row[64];
    std::snprintf(row, sizeof row, "\n %-7zu    %-10d", size, 20);
    CHECK_MESSAGE(cout.find(row) != std::string::npos, size);
  }
}

// perftest -R: the exchange through rdma_cm (docs/verbs-cm.md), whose
// listener is a TCP port any local user can reach. Another user's threads
// connect to it at the same time and send noise, half a request, or
// nothing; the real client then connects, and the run completes.
TEST_CASE("perftest: -R (rdma_cm): another user's stalled and malformed connections to the CM "
          "listener do not keep the real client out") {
  TestMount m(RunMountOptions());
  const std::string s = m.path("server");
  MakeFile(s, kFileSize, '\0');
  PerftestPair run("ib_write_bw", {"-R", "-s", "65536", "-n", "200"}, s, "",
                   /*start_client=*/false);
  Background& server = run.server();
  const uint16_t port = run.port();
  const pid_t hostile = fork();
  REQUIRE(hostile >= 0);
  if (hostile == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
    std::vector<std::thread> threads;
    std::vector<int> held[4];
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 8; ++i) {
          const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in a{};
          a.sin_family = AF_INET;
          a.sin_port = htons(port);
          a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            close(c);
            continue;
          }
          if ((i + t) % 3 == 0) {
            (void)!write(c, "\x4c\x46\x43\x4d\x01\x01", 6);  // a request's first bytes, then nothing
          } else if ((i + t) % 3 == 1) {
            std::string noise(300, static_cast<char>(0xa5 + i));
            (void)!write(c, noise.data(), noise.size());
          }  // else: connected, silent
          held[t].push_back(c);  // kept open while the real client runs
        }
      });
    }
    for (std::thread& th : threads) th.join();
    sleep(60);  // killed by the test before this ends
    _exit(0);
  }
  // The real client, once the hostile connections are in.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  run.StartClient();
  Background& client = run.client();
  const int crc = client.Wait(60);
  kill(hostile, SIGKILL);
  waitpid(hostile, nullptr, 0);
  const std::string cout = client.Output();
  INFO("client: " << cout << "\nserver: " << server.Output());
  CHECK(crc == 0);
  CHECK(cout.find("Data ex. method : rdma_cm") != std::string::npos);
  CHECK(server.Wait(60) == 0);
}

// Semantics-2019 §5 scenario 16, the ODP contrast, under the default
// pinned_break=refuse: a registration with on-demand paging (perftest
// --odp) pins nothing, so a truncate from a third process succeeds at once;
// the registration is invalidated (the server's shim drops its mapping of
// the file, its soft NIC's copies stop first) and the peer's next WRITE
// faults. The same run without --odp is a pin: the truncate is refused
// with ETXTBSY and the run completes.
TEST_CASE("perftest: scenario 16, ODP: the truncate goes ahead and the peer faults; a pinned "
          "registration refuses it") {
  bool odp = false;
  SUBCASE("ib_write_bw --odp") { odp = true; }
  SUBCASE("ib_write_bw, a pin") {}
  CAPTURE(odp);
  TestMount m(RunMountOptions());  // pinned_break=refuse
  const std::string s = m.path("server");
  const std::string c = m.path("client");
  MakeFile(s, kFileSize, '\0');
  MakeFile(c, kFileSize, '\0');
  std::vector<std::string> args = {"-s", "65536", "-D", odp ? "60" : "3"};
  if (odp) args.push_back("--odp");
  PerftestPair run("ib_write_bw", args, s, c);
  Background& server = run.server();
  Background& client = run.client();
  // perftest fills its buffer with random bytes right after registering it.
  const std::string zeros(4096, '\0');
  bool registered = false;
  for (int i = 0; i < 3000 && !registered; ++i) {
    registered = ReadAt(s, 65536, 4096) != zeros;
    if (!registered) {
      REQUIRE_MESSAGE(client.running(), client.Output());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  REQUIRE(registered);
  const std::string pins = Pins(m);
  INFO("pins: " << pins);
  if (odp) {
    CHECK(pins.find(s) == std::string::npos);  // ODP pins nothing
    REQUIRE(truncate(s.c_str(), 0) == 0);
    MakeFile(m.path("newcomer"), kFileSize, '\x5a');
    const int crc = client.Wait(60);
    const std::string cout = client.Output();
    INFO("client: " << cout << "\nserver: " << server.Output());
    CHECK(crc == 1);
    CHECK(cout.find(" Failed status 10: wr_id 0 syndrom 0xa\n") != std::string::npos);
    CHECK(server.Wait(60) != -1);
    CHECK(ReadAt(m.path("newcomer"), 0, kFileSize) == std::string(kFileSize, '\x5a'));
  } else {
    CHECK(pins.find(s) != std::string::npos);
    CHECK(truncate(s.c_str(), 0) == -1);
    CHECK(errno == ETXTBSY);
    CHECK(client.Wait(60) == 0);
    CHECK(server.Wait(60) == 0);
    struct stat st {};
    REQUIRE(stat(s.c_str(), &st) == 0);
    CHECK(st.st_size == static_cast<off_t>(kFileSize));
  }
  CHECK(m.Unmount() == 0);
  const ProcessResult f = m.Fsck();
  CHECK_MESSAGE(f.exit_code == 0, f.output);
}

}  // namespace
}  // namespace leasefs::testing
