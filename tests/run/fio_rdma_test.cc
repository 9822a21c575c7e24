// Debian's fio, unmodified, with its `rdma` engine between two fio
// processes under leasefs-run: the engine connects through rdma_cm, which
// leasefs-run serves for the emulated device (tools/run/verbs_cm.cc,
// docs/verbs-cm.md), and moves data with leasefs0's verbs (docs/verbs.md).
// The server's I/O buffers are in a leasefs file (mem=mmapshared:FILE): a
// DAX mapping under leasefs-run, whose registration is a pin.
//
// What fio's rdma engine does (fio 3.33, engines/rdma.c): the server (a
// read job) registers its buffers and sends their addresses; the client (a
// write job) WRITEs or READs them, or SENDs into the server's posted
// receives. fio's verify options do not apply (the client never reads back
// what it wrote), so the test checks the bytes itself: with a server of
// iodepth 1 every operation goes to the server's one buffer, at offset 0 of
// its file (the engine asks for no alignment).
#define DOCTEST_CONFIG_IMPLEMENT
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "base/unique_fd.h"
#include "tests/run/background.h"
#include "tests/run/probe.h"
#include "tests/support/mount.h"
#include "tests/support/needs.h"

namespace leasefs::testing {
namespace {

std::string FioBin() { return "/usr/bin/fio"; }

// `size` bytes of a pattern that differs from its neighbours' offsets.
std::string Bytes(size_t size, unsigned seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 7 + seed) % 251);
  return s;
}

void WriteFile(const std::string& path, const std::string& data) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  REQUIRE(fd.valid());
  REQUIRE(write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
}

// The client's buffer pattern (fio's buffer_pattern), and what bs bytes of
// it look like.
constexpr char kPatternArg[] = "0x1122334455667788";
std::string Pattern(size_t bs) {
  const std::string unit = "\x11\x22\x33\x44\x55\x66\x77\x88";
  std::string s;
  while (s.size() < bs) s += unit;
  return s.substr(0, bs);
}

struct Job {
  std::string verb;  // write, read, send
  size_t bs = 0;
  size_t size = 0;      // what the client moves
  int client_depth = 1;
};

// fio's command line under leasefs-run for one side of `job`.
std::vector<std::string> FioArgs(const Job& job, uint16_t port, bool server,
                                 const std::string& mem_file, const std::string& json,
                                 const std::vector<std::string>& more = {}) {
  std::vector<std::string> a = {RunBin(), FioBin(), "--name=" + std::string(server ? "server" : "client"),
                                "--ioengine=rdma", "--port=" + std::to_string(port),
                                "--verb=" + job.verb, "--bs=" + std::to_string(job.bs),
                                "--size=" + std::to_string(job.size),
                                "--output-format=json", "--output=" + json,
                                // Jobs as threads of fio's process: a forked job
                                // leaves fio's process group, and a kill of fio
                                // would leave it running.
                                "--thread"};
  if (server) {
    a.insert(a.end(), {"--rw=read", "--iodepth=1"});
  } else {
    a.insert(a.end(), {"--rw=write", "--hostname=127.0.0.1",
                       "--iodepth=" + std::to_string(job.client_depth),
                       std::string("--buffer_pattern=") + kPatternArg, "--scramble_buffers=0"});
  }
  if (!mem_file.empty()) a.push_back("--mem=mmapshared:" + mem_file);
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// The io_bytes fio reports for its one job in direction `dir`.
uint64_t IoBytes(const std::string& json_path, const char* dir) {
  std::ifstream f(json_path);
  REQUIRE(f.good());
  std::stringstream text;
  text << f.rdbuf();
  // With --thread, the engine's "fio: waiting for connection" goes to the
  // --output file too, before the JSON.
  const std::string all = text.str();
  const size_t start = all.find("\n{\n");
  const std::string json = all.rfind("{\n", 0) == 0 || start == std::string::npos
                               ? all
                               : all.substr(start + 1);
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  REQUIRE_MESSAGE(!j.is_discarded(), all);
  REQUIRE(j["jobs"].size() == 1);
  REQUIRE(j["jobs"][0]["error"].get<int>() == 0);
  return j["jobs"][0][dir]["io_bytes"].get<uint64_t>();
}

// One server and one client run of `job`. The server's buffer is in a
// leasefs file that starts as server_start; the client's in a leasefs file
// too when `client_file` (for READ: where the bytes arrive).
struct Result {
  std::string server_file, client_file;
  uint64_t server_bytes = 0, client_bytes = 0;
};

Result RunJob(TestMount& m, const Job& job, const std::string& server_start) {
  CAPTURE(job.verb);
  CAPTURE(job.bs);
  const std::string tag = job.verb + "-" + std::to_string(job.bs);
  Result r;
  r.server_file = m.path("server-" + tag);
  r.client_file = m.path("client-" + tag);
  WriteFile(r.server_file, server_start);
  WriteFile(r.client_file, std::string(job.bs * job.client_depth, '\0'));
  const std::string sjson = "/tmp/leasefs-fio-rdma-server-" + std::to_string(getpid()) + ".json";
  const std::string cjson = "/tmp/leasefs-fio-rdma-client-" + std::to_string(getpid()) + ".json";
  const uint16_t port = NextPort();
  Background server(FioArgs(job, port, true, r.server_file, sjson));
  AwaitListen(server, port);
  Background client(FioArgs(job, port, false, r.client_file, cjson));
  const int crc = client.Wait();
  const int src = server.Wait();
  INFO("client: " << client.Output() << "\nserver: " << server.Output());
  REQUIRE(crc == 0);
  REQUIRE(src == 0);
  r.client_bytes = IoBytes(cjson, "write");
  r.server_bytes = IoBytes(sjson, "read");
  unlink(sjson.c_str());
  unlink(cjson.c_str());
  return r;
}

TEST_CASE("fio rdma: verb=write, the client's RDMA WRITEs land in the server's leasefs file") {
  TestMount m(RunMountOptions());
  for (size_t bs : {4096u, 65536u, 1u << 20}) {
    const Job job{"write", bs, bs * 32, 4};
    const std::string before(bs, '\x5a');
    const Result r = RunJob(m, job, before);
    CHECK(r.client_bytes == job.size);
    CHECK(r.server_bytes == 0);  // the server only waits for the client's last message
    CHECK(ReadAt(r.server_file, 0, bs) == Pattern(bs));
  }
}

TEST_CASE("fio rdma: verb=read, the client's RDMA READs fetch the server's leasefs file") {
  TestMount m(RunMountOptions());
  for (size_t bs : {4096u, 65536u, 1u << 20}) {
    const Job job{"read", bs, bs * 32, 1};
    const std::string server_bytes = Bytes(bs, static_cast<unsigned>(bs % 97));
    const Result r = RunJob(m, job, server_bytes);
    CHECK(r.client_bytes == job.size);
    CHECK(r.server_bytes == 0);
    // The server's buffer is as it was; the client's (its first, its only
    // one at iodepth 1) holds what it read, not its own pattern.
    CHECK(ReadAt(r.server_file, 0, bs) == server_bytes);
    CHECK(ReadAt(r.client_file, 0, bs) == server_bytes);
  }
}

TEST_CASE("fio rdma: verb=send, the client's SENDs fill the server's posted receives") {
  TestMount m(RunMountOptions());
  for (size_t bs : {4096u, 65536u, 1u << 20}) {
    const Job job{"send", bs, bs * 32, 1};
    const Result r = RunJob(m, job, std::string(bs, '\x5a'));
    CHECK(r.client_bytes == job.size);
    CHECK(r.server_bytes == job.size);
    CHECK(ReadAt(r.server_file, 0, bs) == Pattern(bs));
  }
}

TEST_CASE("fio rdma: the server's buffer is a pin while the client runs") {
  TestMount m(RunMountOptions());
  const size_t bs = 65536;
  const Job job{"write", bs, bs * 1024, 1};
  const std::string s = m.path("server-pinned");
  WriteFile(s, std::string(bs, '\0'));
  const uint16_t port = NextPort();
  const std::string sjson = "/tmp/leasefs-fio-rdma-pin-s-" + std::to_string(getpid()) + ".json";
  const std::string cjson = "/tmp/leasefs-fio-rdma-pin-c-" + std::to_string(getpid()) + ".json";
  Background server(FioArgs(job, port, true, s, sjson));
  AwaitListen(server, port);
  // After its first block the client thinks for an hour: the server, whose
  // run ends only at the client's last message, keeps its registration
  // until the test ends both. No race: the pin exists from before the
  // client's first WRITE until then.
  Background client(FioArgs(job, port, false, "", cjson,
                            {"--thinktime=3600s", "--thinktime_blocks=1"}));
  std::string pins;
  for (int i = 0; i < 6000; ++i) {
    pins = Run({LeasectlBin(), "pins", m.mnt()}).output;
    if (pins.find(s) != std::string::npos) break;
    REQUIRE_MESSAGE(client.running(), client.Output());
    REQUIRE_MESSAGE(server.running(), server.Output());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO("pins: " << pins << "\nserver: " << server.Output() << "\nclient: " << client.Output());
  REQUIRE(pins.find(s) != std::string::npos);
  CHECK(pins.find("softnic") != std::string::npos);
  CHECK(pins.find("0..65535") != std::string::npos);  // the server's one 64 KiB buffer
  client.Kill();
  server.Kill();
  // The pins of a process end with it.
  for (int i = 0; i < 3000 && Run({LeasectlBin(), "pins", m.mnt()}).output.find(s) !=
                                  std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(Run({LeasectlBin(), "pins", m.mnt()}).output.find(s) == std::string::npos);
  unlink(sjson.c_str());
  unlink(cjson.c_str());
}

}  // namespace
}  // namespace leasefs::testing

// meson's "skipped" (77) without FUSE, without fio, or with a fio that lacks
// the rdma engine (it is an optional part of fio's build).
int main(int argc, char** argv) {
  using namespace leasefs::testing;
  if (!CanMountFuse()) {
    std::fprintf(stderr, "skipped: needs root and /dev/fuse\n");
    return 77;
  }
  if (const std::string missing = UnmetNeeds(); !missing.empty()) {
    std::fprintf(stderr, "skipped: %s\n", missing.c_str());
    return 77;
  }
  const ProcessResult help = Run({FioBin(), "--enghelp=rdma"});
  if (help.exit_code != 0 || help.output.find("verb") == std::string::npos) {
    std::fprintf(stderr, "skipped: %s has no rdma engine\n", FioBin().c_str());
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
