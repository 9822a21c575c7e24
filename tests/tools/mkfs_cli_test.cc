// mkfs.leasefs as a real child: the exit status its EXIT STATUS section
// documents for every usage error (CLI11's own codes are 105 and up), and
// option values that no pool can have, each refused with one line before
// anything is created, resized or written. Pool files in /dev/shm, removed
// at the end. The binary comes from MKFS_LEASEFS_BIN.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "tests/support/mount.h"
#include "tests/support/pool_file.h"

namespace leasefs::testing {
namespace {

ProcessResult Mkfs(std::vector<std::string> args) {
  args.insert(args.begin(), MkfsBin());
  return Run(args);
}

TEST_SUITE("mkfs_cli") {
  TEST_CASE("mkfs.leasefs: every usage error exits 1, as EXIT STATUS says; --help exits 0") {
    PoolFile pool("mkfs-cli");
    const ProcessResult help = Mkfs({"--help"});
    CHECK(help.exit_code == 0);
    CHECK(help.output.find("EXIT STATUS\n  0 formatted; 1 bad arguments or POOL cannot be "
                           "formatted.") != std::string::npos);
    const std::vector<std::vector<std::string>> usage = {
        {},                                                   // no POOL (CLI11: 106)
        {"--bogus", pool.path()},                             // unknown option (109)
        {"-s", "8M", pool.path(), "extra"},                   // an extra argument (109)
        {"-N", "many", "-s", "8M", pool.path()},              // not a number (105)
        {"-N", "-5", "-s", "8M", pool.path()},                // negative (it was 2^64 - 5)
        {"-N", "100", "-i", "4K", "-s", "8M", pool.path()},   // -N excludes -i (108)
        {"--initial-inodes", "-3", "-s", "8M", pool.path()},  // (formatted a pool no mount took)
        {"-s"},                                               // an option without its value
    };
    for (const std::vector<std::string>& args : usage) {
      CAPTURE(args.size() > 0 ? args[0] : "(none)");
      const ProcessResult r = Mkfs(args);
      CHECK_FALSE(r.signaled());
      CHECK(r.exit_code == 1);
      CHECK(r.output.find("Run with --help for more information.") != std::string::npos);
    }
    struct stat st {};
    CHECK(stat(pool.path().c_str(), &st) == -1);  // nothing was created
  }

  TEST_CASE("mkfs.leasefs: values no pool can have are refused with one line, losing nothing") {
    PoolFile pool("mkfs-cli");
    REQUIRE(Mkfs({"-q", "-s", "8M", pool.path()}).exit_code == 0);
    const std::string before = pool.Bytes();
    REQUIRE(before.size() == 8 << 20);
    struct Case {
      std::vector<std::string> args;
      std::string line;
    };
    const std::vector<Case> cases = {
        // -N 0 would have been the default table, silently.
        {{"-N", "0"}, "inode count must be between 15 and 2^32-1"},
        {{"-N", "14"}, "inode count must be between 15 and 2^32-1"},
        {{"-N", "4294967296"}, "inode count must be between 15 and 2^32-1"},
        {{"-N", "18446744073709551615"}, "inode count must be between 15 and 2^32-1"},
        {{"-N", "18446744073709551616"}, "inode count must be between 15 and 2^32-1"},
        // A table of 2^32 slots is 1 TiB: more than the pool holds. With
        // --size the pool file would have been cut to 4 MiB before this.
        {{"-N", "4294967295", "-s", "4M"}, "pool too small for its journal and inode table"},
        {{"-i", "1000"}, "bytes per inode must be between 1 KiB and 1 GiB"},
        {{"-i", "2G"}, "bytes per inode must be between 1 KiB and 1 GiB"},
        {{"-i", "0"}, "cannot parse bytes per inode '0'"},
        // --initial-inodes 0 would have been the default; past the table it
        // was clamped, and near 2^64 it made a pool no mount accepts.
        {{"--initial-inodes", "0"}, "--initial-inodes must be at least 1"},
        {{"-N", "100", "--initial-inodes", "113"},
         "--initial-inodes 113 is more than the inode table's 112 slots"},
        {{"--initial-inodes", "18446744073709551615"},
         "--initial-inodes 18446744073709551615 is more than the inode table's 512 slots"},
        {{"--initial-data", "1T"},
         "--initial-data 1099511627776 is more than the pool's 8388608 bytes"},
        {{"--initial-data", "16777216T"}, "cannot parse initial data size '16777216T'"},
        {{"-s", "16777216T"}, "cannot parse size '16777216T'"},
        {{"-J", "18446744073709551615"}, "journal size must be between 64 KiB and 4 GiB"},
        // (With --size the pool file was cut to 4 MiB before this too.)
        {{"-L", std::string(64, 'x'), "-s", "4M"}, "label longer than 63 bytes"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.line);
      std::vector<std::string> args = {"--force"};
      args.insert(args.end(), c.args.begin(), c.args.end());
      args.push_back(pool.path());
      const ProcessResult r = Mkfs(args);
      CHECK_FALSE(r.signaled());
      CHECK(r.exit_code == 1);
      CHECK(r.output == "mkfs.leasefs: " + c.line + "\n");
      CHECK(pool.Bytes() == before);
    }
  }

  TEST_CASE("mkfs.leasefs: any ratio from 1 KiB to 1 GiB, a power of two or not, as mke2fs -i") {
    PoolFile pool("mkfs-cli");
    // 8 MiB / 3000 = 2796 inodes, rounded up to a block of 16 slots: 2800
    // slots, slot 0 unused, all initialized (-i fixes the table).
    const ProcessResult r = Mkfs({"-i", "3000", "-s", "8M", pool.path()});
    CHECK(r.exit_code == 0);
    CHECK(r.output.find(": 8 MiB, ") != std::string::npos);
    CHECK(r.output.find(" 2799 inodes (2799 initialized), ") != std::string::npos);
    // Up to the table is fine: --initial-inodes rounds up to a block.
    const ProcessResult whole =
        Mkfs({"--force", "-N", "100", "--initial-inodes", "112", "-s", "8M", pool.path()});
    CHECK(whole.exit_code == 0);
    CHECK(whole.output.find(" 111 inodes (111 initialized), ") != std::string::npos);
  }
}

}  // namespace
}  // namespace leasefs::testing
