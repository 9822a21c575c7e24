// leasectl fallocate: collapse, insert and unshare through leasefs's ioctls;
// punch, zero and alloc through fallocate(2).
#include <fcntl.h>

#include <array>
#include <cerrno>
#include <memory>
#include <string>

#include <fmt/core.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>

#include "leasefs/ioctl.h"
#include "tools/leasectl/args.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace fallocate_cmd {

constexpr const char* kManPage = R"(leasectl fallocate - change which bytes of a file have blocks

SYNOPSIS
  leasectl fallocate MODE [--keep-size] OFF LEN FILE
  MODE is one of --collapse, --insert, --unshare, --punch, --zero, --alloc

DESCRIPTION
  Changes the allocation of bytes [OFF, OFF+LEN) of FILE, which is opened for
  reading and writing. OFF and LEN are bytes and take K, M, G and T suffixes
  (powers of 1024).

  --collapse  removes the range and shifts the rest of the file down; the
              file shrinks by LEN. OFF and LEN must be multiples of the block
              size (4096) and the range must end before the end of the file.
  --insert    shifts the bytes from OFF to the end of the file up by LEN,
              leaving a hole of LEN bytes at OFF; the file grows by LEN.
              OFF and LEN must be multiples of the block size and OFF must be
              before the end of the file.
  --unshare   gives the range blocks of its own, copying those it shares with
              other files or ranges (reflinks), so that later writes to it
              cannot fail for lack of space.
  --punch     frees the blocks of the range, which then reads as zeros. The
              size never changes.
  --zero      makes the range read as zeros, with blocks allocated. The file
              grows to OFF+LEN if it was shorter, unless --keep-size.
  --alloc     allocates blocks for the holes of the range (they read as
              zeros, "unwritten" in leasectl bmap). The file grows to OFF+LEN
              if it was shorter, unless --keep-size.

  The kernel refuses fallocate(2)'s collapse, insert and unshare modes on FUSE
  before a daemon sees them, so these three go through leasefs's own ioctls
  (LEASEFS_IOC_COLLAPSE_RANGE, _INSERT_RANGE, _UNSHARE_RANGE) and work on
  leasefs files only. --punch, --zero and --alloc are plain fallocate(2)
  (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, 0) and work
  on any filesystem that supports them.

EXIT STATUS
  0 done; 1 the operation failed (one line on stderr says why); 2 usage
  error.)";

enum class Kind { kCollapse, kInsert, kUnshare, kPunch, kZero, kAlloc };

struct Mode {
  Kind kind;
  const char* flags;  // CLI11 option names
  const char* help;
  unsigned long ioctl_cmd;  // 0: fallocate(2) with falloc_mode
  int falloc_mode;
  bool takes_keep_size;
};

constexpr std::array<Mode, 6> kModes = {{
    {Kind::kCollapse, "-c,--collapse", "remove the range, shift the rest down",
     LEASEFS_IOC_COLLAPSE_RANGE, 0, false},
    {Kind::kInsert, "-i,--insert", "shift the rest up, leaving a hole", LEASEFS_IOC_INSERT_RANGE, 0,
     false},
    {Kind::kUnshare, "--unshare", "give the range unshared blocks", LEASEFS_IOC_UNSHARE_RANGE, 0,
     false},
    {Kind::kPunch, "-p,--punch", "free the range's blocks (size unchanged)", 0,
     FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, true},
    {Kind::kZero, "-z,--zero", "zero the range, allocated", 0, FALLOC_FL_ZERO_RANGE, true},
    {Kind::kAlloc, "--alloc", "allocate the range (unwritten)", 0, 0, true},
}};

struct Args {
  std::array<bool, kModes.size()> chosen{};
  bool keep_size = false;
  std::string off, len, file;
};

// Why the filesystem said EINVAL, when the arguments show it; else "".
std::string InvalidHint(const Mode& m, int fd, uint64_t off, uint64_t len) {
  if (len == 0) return "LEN must not be 0";
  const std::optional<FileFacts> f = Facts(fd);
  if (!f) return {};
  if (!f->regular) return "not a regular file";
  if (m.kind != Kind::kCollapse && m.kind != Kind::kInsert) return {};
  if (f->block_size != 0 && (off % f->block_size != 0 || len % f->block_size != 0))
    return fmt::format("offset and length must be multiples of {}", f->block_size);
  if (m.kind == Kind::kCollapse && (off >= f->size || len >= f->size - off))
    return "the range must end before the end of the file";
  if (m.kind == Kind::kInsert && off >= f->size) return "OFF must be before the end of the file";
  return {};
}

int Run(const Args& a) {
  const Mode* mode = nullptr;
  int count = 0;
  for (size_t i = 0; i < kModes.size(); ++i) {
    if (!a.chosen[i]) continue;
    mode = &kModes[i];
    ++count;
  }
  if (count != 1)
    throw CLI::ValidationError(
        "give exactly one of --collapse, --insert, --unshare, --punch, --zero, --alloc");
  if (a.keep_size && !mode->takes_keep_size)
    throw CLI::ValidationError("--keep-size goes with --punch, --zero and --alloc");

  const uint64_t off = *ParseOffset(a.off);
  const uint64_t len = *ParseOffset(a.len);
  const UniqueFd fd = Open(a.file, O_RDWR);
  if (!fd.valid()) return Fail("fallocate", a.file, errno);
  int rc = 0;
  if (mode->ioctl_cmd != 0) {
    leasefs_range range{off, len};
    rc = ioctl(fd.get(), mode->ioctl_cmd, &range);
  } else {
    const int flags = mode->falloc_mode | (a.keep_size ? FALLOC_FL_KEEP_SIZE : 0);
    rc = fallocate(fd.get(), flags, static_cast<off_t>(off), static_cast<off_t>(len));
  }
  if (rc != 0) {
    const int err = IoctlError(fd.get(), errno);
    return Fail("fallocate", a.file, err,
                err == EINVAL ? InvalidHint(*mode, fd.get(), off, len) : std::string());
  }
  return kExitOk;
}

}  // namespace fallocate_cmd

void AddFallocateCommand(CLI::App& app, int* rc) {
  using namespace fallocate_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("fallocate", kManPage);
  for (size_t i = 0; i < kModes.size(); ++i)
    sub->add_flag(kModes[i].flags, args->chosen[i], kModes[i].help)->group("MODE (exactly one)");
  sub->add_flag("-n,--keep-size", args->keep_size,
                "with --zero, --alloc: never change the size (--punch never does)");
  sub->add_option("OFF", args->off, "offset in bytes")->required()->check(OffsetValidator());
  sub->add_option("LEN", args->len, "length in bytes")->required()->check(OffsetValidator());
  sub->add_option("FILE", args->file, "a file on leasefs")->required();
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
