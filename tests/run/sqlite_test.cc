// Debian's sqlite3 in WAL mode under leasefs-run on a leasefs file: its WAL
// index (the -shm file) is a MAP_SHARED mapping, which the shim makes DAX.
// Two processes insert at once; then integrity_check and exact counts.
#include <sys/types.h>

#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/mount.h"

namespace leasefs::testing {
namespace {

std::string RunBin() { return ToolPath("LEASEFS_RUN_BIN", "build/tools/run/leasefs-run"); }

// sqlite3 -batch DB SQL [MORE] under leasefs-run: "exit code:output".
std::string Sqlite(const std::string& db, const std::string& sql, const std::string& more = "") {
  std::vector<std::string> argv = {RunBin(), "/usr/bin/sqlite3", "-batch", db, sql};
  if (!more.empty()) argv.push_back(more);
  const ProcessResult r = Run(argv);
  return std::to_string(r.signaled() ? 128 + r.term_signal : r.exit_code) + ":" + r.output;
}

TEST_CASE("leasefs-run: sqlite3 in WAL mode, two writers at once, integrity_check and counts") {
  MountOptions o;
  o.pool_size = "64M";
  o.options = "allow_other,lease_break_time=10";
  TestMount m(o);
  const std::string db = m.path("t.db");
  CHECK(Sqlite(db, "PRAGMA journal_mode=WAL;") == "0:wal\n");
  CHECK(Sqlite(db, "CREATE TABLE t(w INTEGER, i INTEGER, v TEXT);") == "0:");
  auto writer = [&](int w, std::string* out) {
    std::ostringstream sql;
    sql << "PRAGMA busy_timeout=60000;";
    for (int tx = 0; tx < 40; ++tx) {
      sql << "BEGIN IMMEDIATE;";
      for (int i = 0; i < 25; ++i)
        sql << "INSERT INTO t VALUES(" << w << "," << tx * 25 + i << ",hex(randomblob(64)));";
      sql << "COMMIT;";
    }
    *out = Sqlite(db, sql.str());
  };
  std::string out1, out2;
  std::thread t1(writer, 1, &out1), t2(writer, 2, &out2);
  t1.join();
  t2.join();
  CHECK(out1 == "0:60000\n");
  CHECK(out2 == "0:60000\n");
  // While a connection is open, its WAL index is mapped: from the pool (the
  // shim's DAX mapping), not from t.db-shm through the kernel. The shell of
  // .system is sqlite3's child ($PPID).
  const std::string maps = Sqlite(db, "SELECT count(*) FROM t;",
                                  ".system grep -c '" + m.pool() + "' /proc/$PPID/maps; "
                                  "grep -c 't.db-shm' /proc/$PPID/maps; true");
  // Some lines of maps name the pool, none t.db-shm; the query's count comes
  // before or after (the shell's output is buffered, that of .system not).
  CHECK_MESSAGE(std::regex_match(maps, std::regex("0:([1-9][0-9]*\n0\n2000\n|2000\n[1-9][0-9]*\n0\n)")),
                maps);
  CHECK(Sqlite(db, "PRAGMA integrity_check;") == "0:ok\n");
  CHECK(Sqlite(db, "SELECT w, count(*), count(DISTINCT i), sum(i) FROM t GROUP BY w;") ==
        "0:1|1000|1000|499500\n2|1000|1000|499500\n");
  CHECK(Sqlite(db, "PRAGMA journal_mode;") == "0:wal\n");
}

// KNOWN BUG (reported, not fixed here): one process gets the -shm file's
// WRITE lease and maps it DAX; the others get EAGAIN and fall back to the
// kernel's page-cache mapping, which does not see the DAX stores between
// sync points (docs/mmap.md, "What is not coherent"), while SQLite's WAL
// index needs coherent shared memory. Run by hand from a shell with these
// parameters, about one run in four loses a writer to SIGBUS (its rows are
// then missing, integrity_check still ok); without leasefs-run the same runs
// always hold. Inside this test it has not failed yet. may_fail keeps the
// reproduction here without failing the suite until the shim is fixed.
TEST_CASE("leasefs-run: sqlite3 in WAL mode, three writers of many small transactions" *
          doctest::may_fail()) {
  MountOptions o;
  o.pool_size = "64M";
  o.options = "allow_other,lease_break_time=10";
  TestMount m(o);
  const std::string db = m.path("t.db");
  REQUIRE(Sqlite(db, "PRAGMA journal_mode=WAL;") == "0:wal\n");
  REQUIRE(Sqlite(db, "CREATE TABLE t(w INTEGER, i INTEGER, v TEXT);") == "0:");
  std::vector<std::string> outs(3);
  std::vector<std::thread> writers;
  for (int w = 0; w < 3; ++w) {
    writers.emplace_back([&, w] {
      std::ostringstream sql;
      sql << "PRAGMA busy_timeout=60000;";
      for (int tx = 0; tx < 150; ++tx) {
        sql << "BEGIN IMMEDIATE;";
        for (int i = 0; i < 5; ++i)
          sql << "INSERT INTO t VALUES(" << w << "," << tx * 5 + i << ",hex(randomblob(64)));";
        sql << "COMMIT;";
      }
      outs[w] = Sqlite(db, sql.str());
    });
  }
  for (std::thread& t : writers) t.join();
  for (const std::string& out : outs) CHECK(out == "0:60000\n");
  CHECK(Sqlite(db, "PRAGMA integrity_check;") == "0:ok\n");
  CHECK(Sqlite(db, "SELECT w, count(*), count(DISTINCT i) FROM t GROUP BY w;") ==
        "0:0|750|750\n1|750|750\n2|750|750\n");
}

}  // namespace
}  // namespace leasefs::testing
