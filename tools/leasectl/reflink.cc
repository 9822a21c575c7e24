// leasectl reflink: LEASEFS_IOC_CLONE_RANGE, the whole file or a range.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>

#include <fmt/core.h>
#include <sys/ioctl.h>

#include "leasefs/ioctl.h"
#include "tools/leasectl/args.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace reflink_cmd {

constexpr const char* kManPage = R"(leasectl reflink - share a file's blocks with another file

SYNOPSIS
  leasectl reflink SRC DST
  leasectl reflink --range OFF:LEN[:DSTOFF] SRC DST

DESCRIPTION
  Makes DST share SRC's blocks instead of copying them (a reflink): each
  shared block's reference count goes up by one, and a later write to either
  file copies the block it writes to first (copy on write). SRC and DST must
  be on the same leasefs mount; SRC may be DST when the ranges do not
  overlap.

  Without --range, DST becomes a copy of the whole of SRC, like
  cp --reflink=always: it is created (mode 0644) if missing, else truncated
  to 0 first.

  With --range, bytes [OFF, OFF+LEN) of SRC replace bytes [DSTOFF,
  DSTOFF+LEN) of DST; DSTOFF defaults to OFF, LEN 0 means "to the end of
  SRC". DST is created if missing and otherwise left as it is outside the
  range; it grows if the range ends past its end. OFF, LEN and DSTOFF must be
  multiples of the block size (4096), except that a range may end at SRC's
  end of file if it then reaches DST's end of file too. The numbers take K,
  M, G and T suffixes (powers of 1024).

  The kernel refuses FICLONE and FICLONERANGE on FUSE, so this goes through
  leasefs's LEASEFS_IOC_CLONE_RANGE on DST.

EXIT STATUS
  0 done; 1 the clone failed (one line on stderr says why); 2 usage error.)";

constexpr const char* kExdevHint = "SRC and DST must be on the same leasefs mount";

struct Args {
  std::string src, dst, range;
};

// Why the filesystem said EINVAL, when the arguments show it; else "".
std::string InvalidHint(int src_fd, int dst_fd, const CloneRangeArg& r) {
  const std::optional<FileFacts> s = Facts(src_fd);
  const std::optional<FileFacts> d = Facts(dst_fd);
  if (!s || !d) return {};
  if (!s->regular || !d->regular) return "not a regular file";
  const uint64_t len = r.length != 0 ? r.length : s->size - std::min(r.src_offset, s->size);
  if (s->dev == d->dev && s->ino == d->ino && r.src_offset < r.dest_offset + len &&
      r.dest_offset < r.src_offset + len)
    return "the ranges overlap";
  if (r.src_offset > s->size || len > s->size - r.src_offset)
    return "the range goes past the end of SRC";
  const uint64_t bs = s->block_size;
  if (bs == 0) return {};
  const bool ends_at_src_eof = r.src_offset + len == s->size;
  if (r.src_offset % bs != 0 || r.dest_offset % bs != 0 || (len % bs != 0 && !ends_at_src_eof))
    return fmt::format("offsets and length must be multiples of {}", bs);
  if (len % bs != 0 && r.dest_offset + len < d->size)
    return "a range ending at SRC's unaligned end of file must reach DST's end of file";
  return {};
}

int Clone(const Args& a, const UniqueFd& src, const UniqueFd& dst, const CloneRangeArg& r) {
  leasefs_clone_range arg{src.get(), r.src_offset, r.length, r.dest_offset};
  if (ioctl(dst.get(), LEASEFS_IOC_CLONE_RANGE, &arg) == 0) return kExitOk;
  const int err = IoctlError(dst.get(), errno);
  std::string hint;
  if (err == EINVAL) hint = InvalidHint(src.get(), dst.get(), r);
  if (err == EXDEV) hint = kExdevHint;
  return Fail("reflink", a.dst, err, hint);
}

int Run(const Args& a) {
  const UniqueFd src = Open(a.src, O_RDONLY);
  if (!src.valid()) return Fail("reflink", a.src, errno);
  const UniqueFd dst = Open(a.dst, O_WRONLY | O_CREAT, 0644);
  if (!dst.valid()) return Fail("reflink", a.dst, errno);
  if (!a.range.empty()) return Clone(a, src, dst, *ParseCloneRange(a.range));

  // The whole file: DST starts empty, but only once the clone can be
  // expected to work; a DST that is SRC or not on SRC's leasefs mount is
  // left alone.
  const std::optional<FileFacts> s = Facts(src.get());
  const std::optional<FileFacts> d = Facts(dst.get());
  if (s && d && s->dev == d->dev && s->ino == d->ino)
    return FailWith("reflink", a.dst, "SRC and DST are the same file");
  if (const int err = ProbeLeasefs(dst.get()); err != 0) return Fail("reflink", a.dst, err);
  if (s && d && s->dev != d->dev) return Fail("reflink", a.dst, EXDEV, kExdevHint);
  if (ftruncate(dst.get(), 0) != 0) return Fail("reflink", a.dst, errno);
  return Clone(a, src, dst, CloneRangeArg{});
}

}  // namespace reflink_cmd

void AddReflinkCommand(CLI::App& app, int* rc) {
  using namespace reflink_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("reflink", kManPage);
  sub->add_option("SRC", args->src, "the file whose blocks are shared")->required();
  sub->add_option("DST", args->dst, "the file that gets them")->required();
  sub->add_option("--range", args->range, "clone bytes [OFF, OFF+LEN) of SRC to DSTOFF in DST")
      ->check(CloneRangeValidator());
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
