// fsck.leasefs: check (and repair) a leasefs pool that is not mounted.
#include <cerrno>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <sys/file.h>

#include "engine/check/check.h"
#include "engine/media.h"
#include "tools/common/progress.h"

namespace {

using namespace leasefs;

constexpr const char* kDescription = R"(fsck.leasefs - check and repair a leasefs pool

SYNOPSIS
  fsck.leasefs [-n] [-y|--repair] [-p|-a] [-f] [-v] [-q] POOL

DESCRIPTION
  Checks every invariant of the leasefs pool format on POOL (a pool file or a
  /dev/dax* or /dev/pmem* device): the superblock and its backup, the journal,
  every inode, extent, extent chain and xattr block, the directories and their
  entries, link counts, that every file hangs from the root, the quarantine
  table and the reference count of every data block.

  A committed journal transaction left by a crash is replayed first, as a
  mount would. Without -p or -y nothing is written: the pool is mapped
  privately and the replay happens only in memory.

  POOL must not be mounted; fsck.leasefs refuses a pool whose lock a daemon
  holds.

  Repairs go through the pool's journal, one atomic transaction at a time.
  Safe repairs: the primary superblock from its backup, the backup from the
  primary, reference counts, link counts, block counts, sizes, parent fields,
  entry types, entries that name free inodes, second names of directories;
  orphans (files unlinked while open) are reclaimed; files and directories no
  longer reachable from the root are moved to /lost+found (created if needed,
  mode 0700). Repairs that lose data: clearing invalid extents, extent chains
  and xattr blocks, truncating a directory at its first bad block, clearing
  inodes that cannot be mended, removing entries with invalid or repeated names.
  Removing a damaged reach record of the quarantine table (one outside the
  data area, with no map id or owner, or covering metadata) loses no data.

  Only the initialized part of the inode and reference count tables is read
  (format version 3 initializes them as the pool fills; both superblock
  copies hold how far, each with a check code), so a check costs what the
  pool holds, not its size. A damaged copy of such a mark is rewritten from
  the other; a mark below a live inode that a directory names, or below a
  block something references, is raised over it (the directories are then
  read again, one run per level of directories past the mark).

  The summary counts the reach records (blocks handed out for DAX that a
  process may still reach) and the blocks only the quarantine holds, when
  there are any. A format version 1 or 2 pool is checked as such; the next
  writable mount upgrades it to version 3.

  Each problem is printed as one line ("error: inode 12: nlink 3 but 2
  entries name it"), followed by a one-line summary.

  While it walks the inode table, the directories and the reference counts,
  a progress line on the terminal names the phase and how far it got; it is
  erased before anything else is printed. There is none with -q, or when
  stdout or stderr is not a terminal.

OPTIONS
  -n         check only (the default)
  -p, -a     repair automatically, but only if no repair loses data;
             otherwise repair nothing and exit 4 (for boot scripts)
  -y, --repair
             repair everything that can be repaired
  -f         accepted for fsck(8); the whole pool is always checked
  -v         also describe the pool's geometry and state
  -q         print only problems: no notes, no summary, no progress line

EXIT STATUS
  0 no errors; 1 errors were corrected; 4 errors were left uncorrected;
  8 operational error (POOL cannot be opened, is in use, or holds no leasefs
  pool); 16 usage error.)";

constexpr int kExitUsage = 16;
constexpr int kExitOperational = 8;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "fsck.leasefs: %s\n", msg.c_str());
  return kExitOperational;
}

std::string Summary(const std::string& pool, const check::CheckReport& r) {
  std::string s = pool + ": ";
  if (r.errors != 0) {
    s += std::to_string(r.errors) + (r.errors == 1 ? " error" : " errors") + " left uncorrected";
    if (r.repaired != 0) s += ", " + std::to_string(r.repaired) + " repaired";
  } else if (r.repaired != 0) {
    s += std::to_string(r.repaired) + (r.repaired == 1 ? " problem" : " problems") + " repaired";
  } else {
    s += "clean";
  }
  s += "; " + std::to_string(r.inodes_in_use) + "/" + std::to_string(r.inode_slots) + " inodes (" +
       std::to_string(r.directories) + " directories, " + std::to_string(r.regular_files) +
       " files), " + std::to_string(r.data_blocks_used) + "/" + std::to_string(r.data_blocks) +
       " data blocks";
  if (r.orphans != 0)
    s += ", " + std::to_string(r.orphans) + (r.orphans == 1 ? " orphan" : " orphans");
  if (r.reach_records != 0 || r.quarantined_blocks != 0)
    s += ", " + std::to_string(r.reach_records) +
         (r.reach_records == 1 ? " reach record" : " reach records") + " (" +
         std::to_string(r.quarantined_blocks) + " blocks quarantined)";
  return s;
}

void Print(const std::string& pool, const check::CheckReport& r, bool quiet) {
  for (const check::Finding& f : r.findings) {
    if (quiet && f.kind == check::Finding::kNote) continue;
    std::printf("%s\n", f.ToString().c_str());
  }
  const uint64_t total = r.errors + r.repaired + r.notes;
  if (total > r.findings.size())
    std::printf("(%llu more findings not listed)\n",
                static_cast<unsigned long long>(total - r.findings.size()));
  if (r.preen_declined)
    std::printf(
        "%s: UNEXPECTED INCONSISTENCY: some repairs would lose data; nothing was "
        "repaired; run fsck.leasefs -y\n",
        pool.c_str());
  if (!quiet) std::printf("%s\n", Summary(pool, r).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "fsck.leasefs");
  std::string pool;
  bool no = false, yes = false, preen = false, force = false, verbose = false, quiet = false;
  app.add_option("POOL", pool, "pool file or pmem/DAX device")->required();
  app.add_flag("-n,--no", no, "check only; write nothing (the default)");
  app.add_flag("-y,--yes,--repair", yes, "repair everything that can be repaired");
  app.add_flag("-p,-a,--preen", preen, "repair only what can be repaired without losing data");
  app.add_flag("-f,--force", force,
               "check even if the pool looks clean (always the case; for fsck(8))");
  app.add_flag("-v,--verbose", verbose, "also describe the pool's geometry and state");
  app.add_flag("-q,--quiet", quiet, "print only problems, no notes, summary or progress line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  if (int{no} + int{yes} + int{preen} > 1) {
    std::fprintf(stderr, "fsck.leasefs: only one of -n, -p and -y may be given\n");
    return kExitUsage;
  }

  check::CheckOptions opts;
  opts.repair = yes || preen;
  opts.preen = preen;
  opts.verbose = verbose;
  engine::MapOptions mo;
  mo.read_only = !opts.repair;  // private mapping: a replay stays in memory
  auto media = engine::OpenPool(pool, mo);
  if (!media.ok()) return Fail(media.status().ToString());
  // The daemon holds this lock while the pool is mounted.
  if (flock((*media)->fd(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Fail(pool + " is in use (mounted?)");
    return Fail(Status::FromErrno("flock " + pool).ToString());
  }
  tools::ProgressLine progress("fsck.leasefs", tools::ProgressLine::Wanted(quiet));
  if (progress.enabled())
    opts.progress = [&progress](std::string_view phase, uint64_t done, uint64_t total) {
      progress.Update(phase, done, total);
    };
  auto report = check::CheckPool(**media, opts);
  progress.Clear();
  if (!report.ok()) {
    const Status& s = report.status();
    return Fail(pool + ": " + std::string(s.message().empty() ? s.ToString() : s.message()));
  }
  Print(pool, *report, quiet);
  return report->ExitCode();
}
