// leasectl bmap: a file's block map from LEASEFS_IOC_BMAP, as text or JSON.
#include <fcntl.h>

#include <cerrno>
#include <string>

#include <fmt/core.h>

#include "tools/leasectl/bmap_format.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/mount_view.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace bmap_cmd {

constexpr const char* kManPage = R"(leasectl bmap - print where a file's blocks are in the pool

SYNOPSIS
  leasectl bmap [--json] FILE

DESCRIPTION
  Lists FILE's block map (LEASEFS_IOC_BMAP): the runs of pool blocks that
  hold its bytes, in file order, each with one reference count and one set
  of flags, and the holes between them, in the manner of xfs_bmap -v:

    a: size 16384, block size 4096
     EXT: FILE-OFFSET BYTES        POOL-BLOCKS BLOCKS REFS FLAGS
       0: [0..15]     0..8191      340..341         2    2 shared
       1: [16..23]    8192..12287  hole             1
       2: [24..31]    12288..16383 343..343         1    1 -
       3: [32..47]    16384..24575 344..345         2    1 unwritten

  FILE-OFFSET is the run's first and last 512-byte sector, BYTES its first
  and last byte, POOL-BLOCKS its first and last block of the pool (byte
  offset in the pool / block size). REFS is how many references each block
  of the run has; FLAGS spells out unwritten (allocated, reads as zeros),
  shared (reference count above 1: a reflink) and quarantined (also held by
  the pool's quarantine), or "-". Holes are listed up to the end of the file
  rounded up to a block; runs past the end of the file (preallocated with
  fallocate --keep-size) are listed too. docs/leasectl.md has the exact
  format.

  --json prints {"file", "size", "block_size", "extents": [{"file_offset",
  "length", "pool_offset", "pool_block", "blocks", "refcount", "flags":
  [...]}]} instead, holes left out.

EXIT STATUS
  0 printed; 1 FILE cannot be opened or is not on leasefs; 2 usage error.)";

struct Args {
  std::string file;
  bool json = false;
};

int Run(const Args& a) {
  const UniqueFd fd = Open(a.file, O_RDONLY);
  if (!fd.valid()) return Fail("bmap", a.file, errno);
  BlockMap map;
  map.file = a.file;
  if (const int err = ReadBlockMap(fd.get(), &map); err != 0) return Fail("bmap", a.file, err);
  if (a.json)
    fmt::print("{}\n", BlockMapJson(map).dump(2));
  else
    fmt::print("{}", FormatBlockMap(map));
  return kExitOk;
}

}  // namespace bmap_cmd

void AddBmapCommand(CLI::App& app, int* rc) {
  using namespace bmap_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("bmap", kManPage);
  sub->add_option("FILE", args->file, "a file on leasefs")->required();
  sub->add_flag("--json", args->json, "print JSON instead of the table");
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
