// leasectl run as a child process where no leasefs is needed: --help, usage
// errors (exit 2), and files on other filesystems (exit 1).
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>

#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

// A file in /dev/shm (tmpfs, which answers leasefs's ioctls with ENOTTY),
// removed at the end of the test.
class ShmFile {
 public:
  ShmFile() {
    char t[] = "/dev/shm/leasectl-test-XXXXXX";
    const int fd = mkstemp(t);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "data", 4) == 4);
    close(fd);
    path_ = t;
  }
  ~ShmFile() { unlink(path_.c_str()); }
  ShmFile(const ShmFile&) = delete;
  ShmFile& operator=(const ShmFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

void CheckUsage(const std::vector<std::string>& args, const std::string& line,
                const std::string& help_cmd) {
  const ProcessResult r = Leasectl(args);
  CHECK(r.exit_code == 2);
  CHECK(r.output == line + "\nRun '" + help_cmd + " --help' for more information.\n");
}

TEST_SUITE("leasectl") {
  TEST_CASE("leasectl --help: man page, then the subcommands with their summaries") {
    const ProcessResult r = Leasectl({"--help"});
    CHECK(r.exit_code == 0);
    CHECK(StartsWith(r.output,
                     "leasectl - control the blocks and layout leases of leasefs files\n\n"
                     "SYNOPSIS\n"));
    CHECK(r.output.find("\nDESCRIPTION\n") != std::string::npos);
    CHECK(r.output.find("\nEXIT STATUS\n  0 done; 1 an operation failed; 2 usage error.\n") !=
          std::string::npos);
    CHECK(
        r.output.find("Subcommands:\n"
                      "  fallocate                   change which bytes of a file have blocks\n"
                      "  reflink                     share a file's blocks with another file\n"
                      "  defrag                      move a file's blocks together\n"
                      "  bmap                        print where a file's blocks are in the pool\n"
                      "  hold                        hold a layout lease on a file, like flock(1)\n"
                      "  leases                      list every layout lease of a leasefs mount\n"
                      "  events                      print what happens to the layout leases of a "
                      "mount\n") != std::string::npos);
  }

  TEST_CASE("leasectl SUBCOMMAND --help: the subcommand's man page") {
    for (const char* sub : {"fallocate", "reflink", "defrag", "bmap", "hold", "leases", "events",
                            "pins", "file_pins"}) {
      CAPTURE(sub);
      const ProcessResult r = Leasectl({sub, "--help"});
      CHECK(r.exit_code == 0);
      CHECK(StartsWith(r.output, std::string("leasectl ") + sub + " - "));
      CHECK(r.output.find("\n\nSYNOPSIS\n  leasectl " + std::string(sub)) != std::string::npos);
      CHECK(r.output.find("\n\nDESCRIPTION\n") != std::string::npos);
      CHECK(r.output.find("\n\nEXIT STATUS\n  0 ") != std::string::npos);
      CHECK(r.output.find("Usage: leasectl " + std::string(sub)) != std::string::npos);
    }
  }

  TEST_CASE("Usage errors exit 2 with one line and a pointer to --help") {
    SUBCASE("no subcommand") { CheckUsage({}, "leasectl: A subcommand is required", "leasectl"); }
    SUBCASE("unknown subcommand") {
      CheckUsage({"frobnicate", "x"}, "leasectl: unknown subcommand 'frobnicate'", "leasectl");
    }
    SUBCASE("fallocate without a mode") {
      CheckUsage({"fallocate", "0", "4096", "f"},
                 "leasectl: fallocate: give exactly one of --collapse, --insert, --unshare, "
                 "--punch, --zero, --alloc",
                 "leasectl fallocate");
    }
    SUBCASE("fallocate with two modes") {
      CheckUsage({"fallocate", "--punch", "--zero", "0", "4096", "f"},
                 "leasectl: fallocate: give exactly one of --collapse, --insert, --unshare, "
                 "--punch, --zero, --alloc",
                 "leasectl fallocate");
    }
    SUBCASE("fallocate --keep-size with a mode that cannot take it") {
      for (const char* mode : {"--collapse", "--insert", "--unshare"}) {
        CAPTURE(mode);
        CheckUsage({"fallocate", mode, "--keep-size", "0", "4096", "f"},
                   "leasectl: fallocate: --keep-size goes with --punch, --zero and --alloc",
                   "leasectl fallocate");
      }
    }
    SUBCASE("fallocate with a size that does not parse") {
      CheckUsage({"fallocate", "--punch", "12Q", "4096", "f"},
                 "leasectl: fallocate: OFF: '12Q' is not a size (4096, 64K, 1M, 2G)",
                 "leasectl fallocate");
      CheckUsage({"fallocate", "--punch", "0", "9223372036854775808", "f"},
                 "leasectl: fallocate: LEN: '9223372036854775808' is not a size (4096, 64K, 1M, "
                 "2G)",
                 "leasectl fallocate");
    }
    SUBCASE("fallocate without FILE") {
      CheckUsage({"fallocate", "--punch", "0", "4096"}, "leasectl: fallocate: FILE is required",
                 "leasectl fallocate");
    }
    SUBCASE("reflink with a bad --range") {
      CheckUsage({"reflink", "--range", "4096", "a", "b"},
                 "leasectl: reflink: --range: '4096' is not OFF:LEN[:DSTOFF]", "leasectl reflink");
    }
    SUBCASE("defrag without files") {
      CheckUsage({"defrag"}, "leasectl: defrag: FILE is required", "leasectl defrag");
    }
    SUBCASE("hold with two kinds of lease, or a bad --range") {
      CheckUsage({"hold", "--shared", "--write", "f"}, "leasectl: hold: --shared excludes --write",
                 "leasectl hold");
      CheckUsage({"hold", "--exclusive", "--unbreakable", "f"},
                 "leasectl: hold: --exclusive excludes --unbreakable", "leasectl hold");
      CheckUsage({"hold", "--range", "12", "f"}, "leasectl: hold: --range: '12' is not OFF:LEN",
                 "leasectl hold");
      CheckUsage({"hold"}, "leasectl: hold: FILE is required", "leasectl hold");
      CheckUsage({"hold", "--pin=rdma", "f"},
                 "leasectl: hold: --pin: rdma not in {softnic,declared}", "leasectl hold");
    }
    SUBCASE("file_pins without MOUNT, or with a bad --pid") {
      CheckUsage({"file_pins"}, "leasectl: file_pins: MOUNT is required", "leasectl file_pins");
      CheckUsage({"file_pins", "--pid", "0", "m"},
                 "leasectl: file_pins: --pid: '0' is not a process id", "leasectl file_pins");
    }
    SUBCASE("leases and events without PATH") {
      CheckUsage({"leases"}, "leasectl: leases: PATH is required", "leasectl leases");
      CheckUsage({"events", "--follow"}, "leasectl: events: PATH is required", "leasectl events");
    }
    SUBCASE("bmap with two files") {
      CheckUsage({"bmap", "a", "b"}, "leasectl: bmap: The following argument was not expected: b",
                 "leasectl bmap");
    }
  }

  TEST_CASE("A file on another filesystem is not a leasefs file (exit 1)") {
    ShmFile f;
    const std::string& p = f.path();
    SUBCASE("bmap") {
      const ProcessResult r = Leasectl({"bmap", p});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: bmap: " + p + ": not a leasefs file\n");
    }
    SUBCASE("bmap --json") {
      const ProcessResult r = Leasectl({"bmap", "--json", p});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: bmap: " + p + ": not a leasefs file\n");
    }
    SUBCASE("defrag") {
      const ProcessResult r = Leasectl({"defrag", p});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: defrag: " + p + ": not a leasefs file\n");
    }
    SUBCASE("fallocate through the ioctls") {
      for (const char* mode : {"--collapse", "--insert", "--unshare"}) {
        CAPTURE(mode);
        const ProcessResult r = Leasectl({"fallocate", mode, "0", "4096", p});
        CHECK(r.exit_code == 1);
        CHECK(r.output == "leasectl: fallocate: " + p + ": not a leasefs file\n");
      }
    }
    SUBCASE("hold, leases, events, pins and file_pins") {
      for (const char* sub : {"hold", "leases", "events", "pins", "file_pins"}) {
        CAPTURE(sub);
        const ProcessResult r = Leasectl({sub, p});
        CHECK(r.exit_code == 1);
        CHECK(r.output == "leasectl: " + std::string(sub) + ": " + p + ": not a leasefs file\n");
      }
    }
    SUBCASE("reflink of the whole file onto itself leaves it as it was") {
      const ProcessResult r = Leasectl({"reflink", p, p});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: reflink: " + p + ": SRC and DST are the same file\n");
      CHECK(ReadAll(p) == "data");
    }
    SUBCASE("reflink into it leaves it as it was") {
      ShmFile dst;
      const ProcessResult r = Leasectl({"reflink", p, dst.path()});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: reflink: " + dst.path() + ": not a leasefs file\n");
      CHECK(ReadAll(dst.path()) == "data");
    }
  }

  TEST_CASE("Files that cannot be opened are named with the reason (exit 1)") {
    const std::string missing = "/dev/shm/leasectl-test-does-not-exist";
    SUBCASE("bmap") {
      const ProcessResult r = Leasectl({"bmap", missing});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: bmap: " + missing + ": No such file or directory\n");
    }
    SUBCASE("reflink from a missing SRC creates no DST") {
      const std::string dst = missing + "-dst";
      const ProcessResult r = Leasectl({"reflink", missing, dst});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: reflink: " + missing + ": No such file or directory\n");
      CHECK(access(dst.c_str(), F_OK) != 0);
    }
    SUBCASE("defrag goes on with the next file, and fails") {
      ShmFile f;
      const ProcessResult r = Leasectl({"defrag", missing, f.path()});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: defrag: " + missing + ": No such file or directory\n" +
                            "leasectl: defrag: " + f.path() + ": not a leasefs file\n");
    }
    SUBCASE("hold on a directory") {
      const ProcessResult r = Leasectl({"hold", "/dev/shm"});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: hold: /dev/shm: Is a directory\n");
    }
    SUBCASE("fallocate on a directory") {
      const ProcessResult r = Leasectl({"fallocate", "--punch", "0", "4096", "/dev/shm"});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: fallocate: /dev/shm: Is a directory\n");
    }
  }

  TEST_CASE("top: its man page, its usage errors, a path not on leasefs (exit 1, no frame)") {
    const ProcessResult help = Leasectl({"top", "--help"});
    CHECK(help.exit_code == 0);
    CHECK(StartsWith(help.output, "leasectl top - watch a leasefs mount live"));
    CHECK(
        help.output.find("\n\nSYNOPSIS\n  leasectl top [--interval SECONDS] [--once] [--no-color] "
                         "PATH\n") != std::string::npos);
    CheckUsage({"top"}, "leasectl: top: PATH is required", "leasectl top");
    CheckUsage({"top", "--interval", "0", "/"},
               "leasectl: top: --interval: '0' is not a number of seconds from 0.1 to 3600",
               "leasectl top");
    CheckUsage({"top", "--interval", "nan", "/"},
               "leasectl: top: --interval: 'nan' is not a number of seconds from 0.1 to 3600",
               "leasectl top");
    ShmFile f;
    for (const char* once : {"--once", "--no-color"}) {
      const ProcessResult r = Leasectl({"top", once, f.path()});
      CHECK(r.exit_code == 1);
      CHECK(r.output == "leasectl: top: " + f.path() + ": not a leasefs file\n");
    }
    const ProcessResult missing = Leasectl({"top", "/nonexistent/top"});
    CHECK(missing.exit_code == 1);
    CHECK(missing.output == "leasectl: top: /nonexistent/top: No such file or directory\n");
  }
}

}  // namespace
}  // namespace leasefs::testing
