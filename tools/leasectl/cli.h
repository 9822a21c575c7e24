// What every leasectl subcommand shares: exit codes, the error line, opening
// files, and the help layout.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <sys/types.h>

#include "base/unique_fd.h"

namespace leasefs::leasectl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // an operation failed
inline constexpr int kExitUsage = 2;    // bad command line

// Adds one subcommand to `app`. When the subcommand runs, its exit status is
// stored in *rc. Usage errors are thrown as CLI::ParseError (exit 2).
using AddCommandFn = void (*)(CLI::App& app, int* rc);

// strerror(err), except ENOTTY: the ioctls give it on a file of any other
// filesystem (and on a leasefs whose daemon lacks them), so it reads
// "not a leasefs file".
std::string ErrorText(int err);

// Prints "leasectl: CMD: FILE: <ErrorText(err)>", with " (HINT)" appended
// when hint is not empty, on stderr. Returns kExitFailure.
int Fail(std::string_view cmd, std::string_view file, int err, std::string_view hint = {});
// Same, with `what` in place of the error text.
int FailWith(std::string_view cmd, std::string_view file, std::string_view what);

// The errno value to report for a failed ioctl on fd: `err`, except that
// ENOTTY on a directory becomes EISDIR (FUSE answers a directory's ioctls
// with ENOTTY before the daemon sees them).
int IoctlError(int fd, int err);

// open(2) with O_CLOEXEC and O_NONBLOCK (so that naming a FIFO cannot hang
// the tool; regular files ignore it). On failure the result is invalid and
// errno says why.
UniqueFd Open(const std::string& path, int flags, mode_t mode = 0);

// 0 if fd is a file of a leasefs that answers its ioctls, else the errno
// value an ioctl gives (ENOTTY: another filesystem). Changes nothing.
int ProbeLeasefs(int fd);

// What the hints need to know about an open file, asked of the filesystem
// itself (statx AT_STATX_FORCE_SYNC: FUSE's attribute cache may not have
// seen what an ioctl changed). nullopt when statx fails.
struct FileFacts {
  uint64_t size = 0;
  uint32_t block_size = 0;
  uint64_t dev = 0;  // makedev(major, minor)
  uint64_t ino = 0;
  bool regular = false;
};
std::optional<FileFacts> Facts(int fd);

// The help layout: a subcommand's description is its whole man page, whose
// first line reads "leasectl NAME - SUMMARY"; the parent's list of
// subcommands shows only SUMMARY.
class HelpFormatter : public CLI::Formatter {
 public:
  std::string make_subcommand(const CLI::App* sub) const override;
};

// CLI11's failure message for leasectl: "leasectl: [SUBCOMMAND: ]what", then
// where to find the help.
std::string UsageMessage(const CLI::App* app, const CLI::Error& e);

// The summary part of a man page's first line ("X - summary" -> "summary").
std::string Summary(std::string_view man_page);

}  // namespace leasefs::leasectl
