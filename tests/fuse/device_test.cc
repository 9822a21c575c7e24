// A pool on a block device, as /dev/pmem0 is (libpmem2 does not map block
// devices; leasefs maps them itself and persists with msync). A loop device
// stands in for the pmem namespace.
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include <doctest/doctest.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

// A loop device over a sparse file, detached and deleted at the end.
class LoopDevice {
 public:
  explicit LoopDevice(uint64_t bytes) {
    char tmpl[] = "/tmp/leasefs-loop-XXXXXX";
    const int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, static_cast<off_t>(bytes)) == 0);
    close(fd);
    backing_ = tmpl;
    ProcessResult r = Run({"/sbin/losetup", "--find", "--show", backing_});
    if (r.exit_code == 0) device_ = r.output.substr(0, r.output.find('\n'));
    output_ = r.output;
  }
  ~LoopDevice() {
    if (!device_.empty()) Run({"/sbin/losetup", "-d", device_});
    unlink(backing_.c_str());
  }
  const std::string& device() const { return device_; }
  const std::string& output() const { return output_; }  // what losetup printed

 private:
  std::string backing_;
  std::string device_;
  std::string output_;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_SUITE("fuse.device") {
  TEST_CASE("Device: a pool on a block device formats, mounts, persists and checks clean") {
    // meson runs this binary only where losetup and /dev/loop-control exist
    // (tests/fuse/meson.build); then a loop device that cannot be set up is
    // a failure, not a skip.
    LoopDevice loop(32 << 20);
    REQUIRE_MESSAGE(!loop.device().empty(), "losetup --find --show failed: " << loop.output());
    MountOptions o;
    o.pool_path = loop.device();
    TestMount m(o);
    CHECK(m.DaemonLog().find("block device mapping (msync)") != std::string::npos);
    const std::string data = Pattern(3 << 20, 7);
    REQUIRE(WriteFile(m.path("data"), data) == "");
    REQUIRE(WriteFile(m.path("small"), "hello") == "");
    REQUIRE(m.Unmount() == 0);
    ProcessResult fsck = m.Fsck();
    CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
    std::string out;
    REQUIRE_MESSAGE(m.Mount(&out), out);
    CHECK(Slurp(m.path("data")) == data);
    CHECK(Slurp(m.path("small")) == "hello");
  }

  TEST_CASE("Device: mkfs.leasefs checks its options against the device's size, not --size") {
    // --size makes or resizes a regular file; a device keeps its own size,
    // and the inode table is what that size gives.
    LoopDevice loop(32 << 20);
    REQUIRE_MESSAGE(!loop.device().empty(), "losetup --find --show failed: " << loop.output());
    // A 4 MiB pool could not hold 20000 inodes (5 MiB of table); the 32 MiB
    // device can.
    ProcessResult r = Run({MkfsBin(), "--force", "-s", "4M", "-N", "20000", loop.device()});
    CHECK(r.exit_code == 0);
    CHECK(r.output.find(": 32 MiB, ") != std::string::npos);
    CHECK(r.output.find(" 20015 inodes (20015 initialized), ") != std::string::npos);
    // A 256 MiB pool would have 16384 slots; the device's table has 2048.
    r = Run({MkfsBin(), "--force", "-s", "256M", "--initial-inodes", "3000", loop.device()});
    CHECK(r.exit_code == 1);
    CHECK(r.output ==
          "mkfs.leasefs: --initial-inodes 3000 is more than the inode table's 2048 slots\n");
  }
}

}  // namespace
}  // namespace leasefs::testing
