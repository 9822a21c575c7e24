// leasefs-run against a real daemon, with real programs: a C probe
// (dax_probe.c) that maps files with plain mmap(2), fio's mmap and libpmem
// engines, and python3's mmap module, each run under leasefs-run. The test
// process plays "another process": it reads and writes the file through
// FUSE and truncates it while the probe holds its mapping.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "base/unique_fd.h"
#include "tests/run/asan_order.h"
#include "tests/run/probe.h"
#include "tests/support/mount.h"

namespace leasefs::testing {
namespace {

constexpr size_t KiB = 1024;

std::string ReadAt(const std::string& path, size_t off, size_t len) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.valid());
  std::string s(len, '\0');
  const ssize_t n = pread(fd.get(), s.data(), len, static_cast<off_t>(off));
  REQUIRE(n >= 0);
  s.resize(static_cast<size_t>(n));
  return s;
}

TEST_CASE("leasefs-run: stores through the DAX mapping and FUSE writes see each other at once") {
  TestMount m(RunMountOptions());
  const std::string f = m.path("coherence");
  MakeFile(f, 16 * KiB, '.');
  DaxProbe probe({"coherence", f, m.pool()});
  REQUIRE(probe.Line() == "stored");
  CHECK(ReadAt(f, 0, 9) == "dax-store");
  {
    UniqueFd fd(open(f.c_str(), O_WRONLY | O_CLOEXEC));
    REQUIRE(pwrite(fd.get(), "fuse-write", 10, 4096) == 10);
  }
  probe.Go();
  CHECK(probe.Line() == "seen");
  CHECK(probe.Wait() == 0);
  CHECK(ReadAt(f, 0, 9) == "dax-store");
}

TEST_CASE("leasefs-run: a truncate by another process breaks the lease; the program goes on") {
  TestMount m(RunMountOptions());
  const std::string f = m.path("break");
  MakeFile(f, 16 * KiB, '.');
  DaxProbe probe({"break", f, m.pool()});
  REQUIRE(probe.Line() == "mapped");
  // Waits until the shim's watcher has dropped the DAX mapping and released.
  REQUIRE(truncate(f.c_str(), 8 * KiB) == 0);
  CHECK(ReadAt(f, 0, 16 * KiB) == std::string(8 * KiB, 'A'));
  probe.Go();
  CHECK(probe.Line() == "ok");
  CHECK(probe.Wait() == 0);
}

TEST_CASE("leasefs-run: MAP_PRIVATE maps the pool copy-on-write") {
  TestMount m(RunMountOptions());
  const std::string f = m.path("private");
  MakeFile(f, 8 * KiB, 'p');
  DaxProbe probe({"private", f, m.pool()});
  CHECK(probe.Line() == "ok");
  CHECK(probe.Wait() == 0);
  CHECK(ReadAt(f, 0, 8 * KiB) == std::string(8 * KiB, 'p'));
}

TEST_CASE("leasefs-run: a fork's child stores through the inherited DAX mapping") {
  TestMount m(RunMountOptions());
  const std::string f = m.path("fork");
  MakeFile(f, 8 * KiB, 'f');
  DaxProbe probe({"fork", f, m.pool()});
  CHECK(probe.Line() == "ok");
  CHECK(probe.Wait() == 0);
  CHECK(ReadAt(f, 100, 10) == "from-child");
}

TEST_CASE("leasefs-run: a file of another filesystem is mapped as itself") {
  TestMount m(RunMountOptions());
  char tmpl[] = "/tmp/leasefs-run-plain-XXXXXX";
  const int fd = mkstemp(tmpl);
  REQUIRE(fd >= 0);
  close(fd);
  MakeFile(tmpl, 4 * KiB, 'q');
  DaxProbe probe({"plain", tmpl, m.pool()});
  CHECK(probe.Line() == "ok");
  CHECK(probe.Wait() == 0);
  CHECK(ReadAt(tmpl, 0, 1) == "z");
  unlink(tmpl);
}

// fio under leasefs-run: randrw with crc32c verification on a leasefs file;
// its JSON must report err=0. Returns "" or why the engine is missing.
std::string RunFio(const TestMount& m, const std::string& engine) {
  const std::string f = m.path("fio-" + engine);
  const ProcessResult r = Run({RunBin(), "--verbose", "/usr/bin/fio", "--output-format=json",
                               "--name=dax", "--filename=" + f, "--size=2M", "--bs=4k",
                               "--rw=randrw", "--ioengine=" + engine, "--verify=crc32c",
                               "--do_verify=1", "--randseed=9"});
  if (r.output.find("engine " + engine + " not loadable") != std::string::npos ||
      r.output.find("Invalid I/O engine") != std::string::npos)
    return "fio has no " + engine + " engine";
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const size_t json_at = r.output.find("{\n");
  REQUIRE(json_at != std::string::npos);
  const size_t json_end = r.output.rfind("}\n");
  REQUIRE(json_end != std::string::npos);
  const auto j = nlohmann::json::parse(r.output.substr(json_at, json_end + 1 - json_at));
  CHECK(j["jobs"][0]["error"].get<int>() == 0);
  // The shim made a writable DAX mapping of the file (not the kernel's).
  CHECK(r.output.find("DAX writable shared map") != std::string::npos);
  return "";
}

TEST_CASE("leasefs-run: fio --ioengine=mmap randrw verifies") {
  TestMount m(RunMountOptions());
  CHECK(RunFio(m, "mmap") == "");
}

TEST_CASE("leasefs-run: fio --ioengine=libpmem randrw verifies") {
  TestMount m(RunMountOptions());
  if (const std::string why = RunFio(m, "libpmem"); !why.empty()) {
    MESSAGE("skipped: " << why);
  }
}

TEST_CASE("leasefs-run: python3's mmap module writes a leasefs file through DAX") {
  TestMount m(RunMountOptions());
  const std::string f = m.path("py");
  MakeFile(f, 8 * KiB, '-');
  const std::string script = fmt::format(
      "import mmap\n"
      "with open('{0}', 'r+b') as f:\n"
      "    m = mmap.mmap(f.fileno(), 0)\n"
      "    m[4096:4101] = b'hello'\n"
      "    m.flush()\n"
      "    maps = open('/proc/self/maps').read()\n"
      "    print('pool-backed' if '{1}' in maps else 'not-dax')\n"
      "    assert m[0:1] == b'-'\n"
      "    m.close()\n",
      f, m.pool());
  const ProcessResult r = Run({RunBin(), "/usr/bin/python3", "-c", script});
  CAPTURE(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output == "pool-backed\n");
  CHECK(ReadAt(f, 4096, 5) == "hello");
}

}  // namespace
}  // namespace leasefs::testing
