// Debian's sqlite3 shell as the tests run it: on a database of a mount,
// directly or under a wrapper (leasefs-run), and the concurrent writers of
// the WAL-mode tests.
#pragma once

#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/mount.h"

namespace leasefs::testing {

// Runs `wrapper`... /usr/bin/sqlite3 -batch DB SQL [MORE] (SQL or
// dot-commands); returns "exit code:output", the exit code 128 + signal if
// a signal ended it.
inline std::string RunSqlite(const std::vector<std::string>& wrapper, const std::string& db,
                             const std::string& sql, const std::string& more = "") {
  std::vector<std::string> argv = wrapper;
  argv.insert(argv.end(), {"/usr/bin/sqlite3", "-batch", db, sql});
  if (!more.empty()) argv.push_back(more);
  const ProcessResult r = Run(argv);
  return std::to_string(r.signaled() ? 128 + r.term_signal : r.exit_code) + ":" + r.output;
}

// The SQL of writer `w` of table t(w, i, v): `txs` transactions (BEGIN
// IMMEDIATE, waiting up to 60 s for the lock) of `rows` rows each, i from 0.
inline std::string WriterSql(int w, int txs, int rows) {
  std::ostringstream sql;
  sql << "PRAGMA busy_timeout=60000;";
  for (int tx = 0; tx < txs; ++tx) {
    sql << "BEGIN IMMEDIATE;";
    for (int i = 0; i < rows; ++i)
      sql << "INSERT INTO t VALUES(" << w << "," << tx * rows + i << ",hex(randomblob(64)));";
    sql << "COMMIT;";
  }
  return sql.str();
}

// Runs one sqlite3 per writer id at once (WriterSql), each through
// RunSqlite(wrapper, db, ...); returns their results in the order of `ids`.
inline std::vector<std::string> RunWriters(const std::vector<std::string>& wrapper,
                                           const std::string& db, const std::vector<int>& ids,
                                           int txs, int rows) {
  std::vector<std::string> outs(ids.size());
  std::vector<std::thread> threads;
  for (size_t k = 0; k < ids.size(); ++k) {
    threads.emplace_back(
        [&, k] { outs[k] = RunSqlite(wrapper, db, WriterSql(ids[k], txs, rows)); });
  }
  for (std::thread& t : threads) t.join();
  return outs;
}

}  // namespace leasefs::testing
