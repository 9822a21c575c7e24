// The timestamp range: a pool stores int64 nanoseconds, so the mount holds
// the whole seconds from -9223372036 (1677-09-21 00:12:44 UTC) to 9223372036
// (2262-04-11 23:47:16 UTC). A time set outside is clamped into the range
// as the kernel clamps a local filesystem's to s_time_min/s_time_max: the
// seconds to the range, the nanoseconds to 0 at either edge
// (docs/timestamps.md).
#include <fcntl.h>

#include <climits>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr int64_t kMin = -9'223'372'036;  // 1677-09-21 00:12:44 UTC
constexpr int64_t kMax = 9'223'372'036;   // 2262-04-11 23:47:16 UTC

struct TimeCase {
  timespec in;
  timespec stored;
};

// Every edge of the range, inside and out, and times far beyond it.
const std::vector<TimeCase>& Cases() {
  static const std::vector<TimeCase> cases = {
      {{kMax, 0}, {kMax, 0}},
      {{kMax - 1, 999'999'999}, {kMax - 1, 999'999'999}},
      {{kMax, 999'999'999}, {kMax, 0}},  // on the edge second: 0 ns
      {{kMax + 1, 5}, {kMax, 0}},
      {{32'503'680'000, 1}, {kMax, 0}},       // 3000-01-01
      {{LLONG_MAX, 999'999'999}, {kMax, 0}},  // the largest time the kernel passes
      {{kMin, 0}, {kMin, 0}},
      {{kMin + 1, 1}, {kMin + 1, 1}},
      {{kMin, 999'999'999}, {kMin, 0}},
      {{kMin - 1, 999'999'999}, {kMin, 0}},
      {{-11'676'096'000, 0}, {kMin, 0}},  // 1600-01-01
      {{LLONG_MIN, 0}, {kMin, 0}},
  };
  return cases;
}

std::string Text(const timespec& t) {
  return std::to_string(t.tv_sec) + "." + std::to_string(t.tv_nsec);
}

TEST_SUITE("fuse.times") {
  TEST_CASE(
      "Timestamps: a time past either end of the range is clamped to that end, with 0 "
      "nanoseconds, as ext4 and XFS clamp to theirs") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "ext4,xfs", "tmpfs's range is all of time64_t: it clamps nothing");
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    // atime far past the end, mtime in the year 3000.
    struct timespec late[2] = {{LLONG_MAX, 7}, {32'503'680'000, 123}};
    REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), late, 0)) == "OK");
    struct stat st = Stat(fs.path("f"));
    CHECK(st.st_atim.tv_sec == st.st_mtim.tv_sec);  // both at the end
    CHECK(st.st_mtim.tv_sec < 32'503'680'000);
    CHECK(st.st_mtim.tv_sec > 4'102'444'800);  // past 2100
    CHECK(st.st_atim.tv_nsec == 0);
    CHECK(st.st_mtim.tv_nsec == 0);
    struct timespec early[2] = {{LLONG_MIN, 7}, {-30'610'224'000, 123}};  // 1000-01-01
    REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), early, 0)) == "OK");
    st = Stat(fs.path("f"));
    CHECK(st.st_atim.tv_sec == st.st_mtim.tv_sec);
    CHECK(st.st_mtim.tv_sec > -30'610'224'000);
    CHECK(st.st_mtim.tv_sec < -2'208'988'800);  // before 1900
    CHECK(st.st_atim.tv_nsec == 0);
    CHECK(st.st_mtim.tv_nsec == 0);
  }

  TEST_CASE(
      "Timestamps: leasefs stores exactly the range's edges, and clamps to them, across a "
      "remount") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs's own range");
    const auto& cases = Cases();
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string p = fs.path("f" + std::to_string(i));
      REQUIRE(WriteFile(p, "") == "");
      // The same time for both: atime and mtime take the same path.
      struct timespec ts[2] = {cases[i].in, cases[i].in};
      REQUIRE(SYS(utimensat(AT_FDCWD, p.c_str(), ts, 0)) == "OK");
    }
    auto check_stored = [&](const char* when) {
      INFO(when);
      for (size_t i = 0; i < cases.size(); ++i) {
        const struct stat st = Stat(fs.path("f" + std::to_string(i)));
        INFO("set " << Text(cases[i].in));
        CHECK(Text(st.st_atim) == Text(cases[i].stored));
        CHECK(Text(st.st_mtim) == Text(cases[i].stored));
      }
    };
    check_stored("as the kernel took the reply");
    REQUIRE(fs.Remount() == "");
    check_stored("read back from the pool by a new daemon");
  }

  TEST_CASE("Timestamps: leasefs --help states the range") {
    const ProcessResult r = Run({LeasefsBin(), "--help"});
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("Timestamps range from 1677-09-21 00:12:44 to 2262-04-11 23:47:16 UTC") !=
          std::string::npos);
  }
}

}  // namespace
}  // namespace leasefs::testing
