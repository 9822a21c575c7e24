// mkfs.leasefs: format a leasefs pool.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <sys/file.h>
#include <sys/stat.h>

#include "engine/format.h"
#include "engine/layout.h"
#include "engine/media.h"
#include "tools/common/progress.h"
#include "tools/common/size_arg.h"

namespace {

using namespace leasefs;
using namespace leasefs::engine;

constexpr const char* kDescription = R"(mkfs.leasefs - format a leasefs pool

SYNOPSIS
  mkfs.leasefs [-s SIZE] [-N INODES | -i BYTES] [-J SIZE] [-L LABEL] [-f] [-q] POOL

DESCRIPTION
  Writes an empty leasefs filesystem onto POOL: a regular file (created or
  resized to SIZE), or a /dev/dax* or /dev/pmem* device (SIZE is the device's).
  Everything on POOL is lost. A pool that already holds leasefs is only
  overwritten with --force.

  The inode table has one slot per 16 KiB of pool unless -N or -i says
  otherwise. By default mkfs initializes only its first 1024 slots and the
  reference counts of the first 256 MiB of data; the rest is initialized as
  files are made and blocks first used, so formatting costs the same
  whatever the size (docs/scaling.md). With -N or -i the whole inode table is
  written now (a fixed table, as mke2fs makes); --initial-inodes and
  --initial-data choose how much is written now, up to the whole table
  (asking for more slots than the table has, or more data than the pool,
  is an error). -i takes any ratio from 1K to 1G, as mke2fs -i does.

  SIZE and BYTES take K, M, G and T suffixes (powers of 1024).

  While it writes the pool's metadata, a progress line on the terminal says
  how far it got; it is erased when done. There is none with -q, or when
  stdout or stderr is not a terminal.

EXIT STATUS
  0 formatted; 1 bad arguments or POOL cannot be formatted.)";

int Fail(const std::string& msg) {
  std::fprintf(stderr, "mkfs.leasefs: %s\n", msg.c_str());
  return 1;
}

// Checks the options against the geometry they give a pool of `bytes`,
// before anything is created, resized or written. Format itself clamps
// what it initializes to the tables; asked for more, mkfs says so instead.
Status CheckOptions(uint64_t bytes, const FormatOptions& fo) {
  if (fo.label.size() >= sizeof(layout::Superblock::label))
    return Status::Error(EINVAL, "label longer than 63 bytes");
  layout::Superblock sb{};
  LFS_RETURN_IF_ERROR(ComputeGeometry(bytes, fo.geometry, &sb));
  if (fo.init_inodes > sb.inode_count)
    return Status::Error(EINVAL, "--initial-inodes " + std::to_string(fo.init_inodes) +
                                     " is more than the inode table's " +
                                     std::to_string(sb.inode_count) + " slots");
  if (fo.init_data_bytes > sb.pool_bytes)
    return Status::Error(EINVAL, "--initial-data " + std::to_string(fo.init_data_bytes) +
                                     " is more than the pool's " + std::to_string(sb.pool_bytes) +
                                     " bytes");
  return Status::Ok();
}

// The size POOL will have: --size for a regular file (made or resized to
// it), else what it has now: a device's own size (nullopt if it cannot be
// opened; OpenPool then says why). `st` is POOL's, null if it does not
// exist.
std::optional<uint64_t> PoolBytes(const std::string& pool, const MapOptions& mo,
                                  const struct stat* st) {
  if (mo.create && (st == nullptr || S_ISREG(st->st_mode))) return mo.create_size;
  MapOptions probe;
  probe.read_only = true;
  auto m = OpenPool(pool, probe);
  if (!m.ok()) return std::nullopt;
  return (*m)->size();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "mkfs.leasefs");
  std::string pool, size_arg, journal_arg, label, root_owner, ratio_arg, init_data_arg;
  uint64_t inodes = 0, init_inodes = 0;
  bool force = false, quiet = false;
  app.add_option("POOL", pool, "pool file or pmem/DAX device")->required();
  app.add_option("-s,--size", size_arg, "pool size; creates or resizes a regular file");
  // (CLI11 would take "-3" for an unsigned option as 2^64 - 3.)
  auto* n_opt = app.add_option("-N,--inodes", inodes,
                               "number of inodes, all initialized now (default: one per 16 KiB)")
                    ->check(CLI::NonNegativeNumber);
  app.add_option("-i,--bytes-per-inode", ratio_arg,
                 "one inode per BYTES of pool (1K to 1G), all initialized now")
      ->excludes(n_opt);
  auto* init_opt =
      app.add_option("--initial-inodes", init_inodes,
                     "inode slots initialized now (default: 1024, or all with -N or -i)")
          ->check(CLI::NonNegativeNumber);
  app.add_option("--initial-data", init_data_arg,
                 "data whose reference counts are initialized now, in 4 MiB steps "
                 "(default: 256M)");
  app.add_option("-J,--journal-size", journal_arg,
                 "journal size (default: 1/256 of the pool, 256 KiB to 64 MiB)");
  app.add_option("-L,--label", label, "volume label (up to 63 bytes)");
  app.add_option("--root-owner", root_owner,
                 "UID:GID owning the root directory (default: the user running mkfs.leasefs)");
  app.add_flag("-f,--force", force, "overwrite an existing leasefs pool");
  app.add_flag("-q,--quiet", quiet, "print nothing on success (no progress line either)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11's own codes (105 and up) are not what EXIT STATUS documents.
    return app.exit(e) == 0 ? 0 : 1;
  }
  // 0 would mean "the default" to Format: given, it is a mistake.
  if (n_opt->count() != 0 && inodes == 0) return Fail("inode count must be between 15 and 2^32-1");
  if (init_opt->count() != 0 && init_inodes == 0)
    return Fail("--initial-inodes must be at least 1");

  MapOptions mo;
  if (!size_arg.empty()) {
    auto size = tools::ParseSize(size_arg);
    if (!size) return Fail("cannot parse size '" + size_arg + "'");
    if (*size < layout::kMinPoolBytes) return Fail("a pool needs at least 4 MiB");
    mo.create = true;
    mo.create_size = *size / layout::kBlockSize * layout::kBlockSize;
  }
  FormatOptions fo;
  fo.label = label;
  fo.geometry.inode_count = inodes;
  if (!ratio_arg.empty()) {
    auto r = tools::ParseSize(ratio_arg);
    if (!r || *r == 0) return Fail("cannot parse bytes per inode '" + ratio_arg + "'");
    fo.geometry.bytes_per_inode = *r;
  }
  fo.init_inodes = init_inodes;
  if (!init_data_arg.empty()) {
    auto d = tools::ParseSize(init_data_arg);
    if (!d || *d == 0) return Fail("cannot parse initial data size '" + init_data_arg + "'");
    fo.init_data_bytes = *d;
  }
  if (!journal_arg.empty()) {
    auto j = tools::ParseSize(journal_arg);
    if (!j) return Fail("cannot parse journal size '" + journal_arg + "'");
    fo.geometry.journal_bytes = *j;
  }
  fo.root_uid = getuid();
  fo.root_gid = getgid();
  if (!root_owner.empty()) {
    unsigned uid = 0, gid = 0;
    char tail = 0;
    if (std::sscanf(root_owner.c_str(), "%u:%u%c", &uid, &gid, &tail) != 2)
      return Fail("--root-owner takes UID:GID, not '" + root_owner + "'");
    fo.root_uid = uid;
    fo.root_gid = gid;
  }

  struct stat st {};
  const bool exists = stat(pool.c_str(), &st) == 0;
  if (!exists && size_arg.empty()) return Fail(pool + " does not exist; give --size to create it");
  if (exists && S_ISREG(st.st_mode) && size_arg.empty()) mo.create_size = 0;

  // Check for an existing pool before resizing anything.
  if (exists && !force) {
    MapOptions probe;
    probe.read_only = true;
    auto m = OpenPool(pool, probe);
    if (m.ok() && LooksLikePool(**m))
      return Fail(pool + " already holds a leasefs pool; use --force to overwrite it");
  }
  if (auto bytes = PoolBytes(pool, mo, exists ? &st : nullptr)) {
    if (Status s = CheckOptions(*bytes, fo); !s.ok()) return Fail(std::string(s.message()));
  }
  auto media = OpenPool(pool, mo);
  if (!media.ok()) return Fail(media.status().ToString());
  if (flock((*media)->fd(), LOCK_EX | LOCK_NB) != 0) return Fail(pool + " is in use (mounted?)");
  tools::ProgressLine progress("mkfs.leasefs", tools::ProgressLine::Wanted(quiet));
  fo.progress = progress.Hook("writing metadata", tools::ProgressUnit::kBytes);
  const Status formatted = Format(**media, fo);
  progress.Clear();
  if (!formatted.ok()) return Fail(formatted.ToString());

  if (!quiet) {
    const auto* sb = reinterpret_cast<const layout::Superblock*>((*media)->base());
    const Marks marks = InitialMarks(*sb, fo);
    std::printf(
        "leasefs pool %s: %llu MiB, %llu data blocks of 4 KiB, %llu inodes (%llu initialized), "
        "journal %llu KiB (%s)\n",
        pool.c_str(), static_cast<unsigned long long>(sb->pool_bytes >> 20),
        static_cast<unsigned long long>(sb->data_blocks),
        static_cast<unsigned long long>(sb->inode_count - 1),
        static_cast<unsigned long long>(marks.inodes - 1),
        static_cast<unsigned long long>(sb->journal_blocks * 4), (*media)->describe().c_str());
  }
  return 0;
}
