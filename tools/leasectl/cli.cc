#include "tools/leasectl/cli.h"

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>

#include <fmt/core.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "leasefs/ioctl.h"

namespace leasefs::leasectl {

std::string ErrorText(int err) {
  if (err == ENOTTY) return "not a leasefs file";
  return std::strerror(err);
}

int Fail(std::string_view cmd, std::string_view file, int err, std::string_view hint) {
  const std::string what = ErrorText(err);
  if (hint.empty()) return FailWith(cmd, file, what);
  return FailWith(cmd, file, fmt::format("{} ({})", what, hint));
}

int FailWith(std::string_view cmd, std::string_view file, std::string_view what) {
  std::fflush(stdout);  // keep the order of what was printed before
  fmt::print(stderr, "leasectl: {}: {}: {}\n", cmd, file, what);
  return kExitFailure;
}

int IoctlError(int fd, int err) {
  struct stat st {};
  if (err == ENOTTY && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) return EISDIR;
  return err;
}

UniqueFd Open(const std::string& path, int flags, mode_t mode) {
  return UniqueFd(::open(path.c_str(), flags | O_CLOEXEC | O_NONBLOCK, mode));
}

int ProbeLeasefs(int fd) {
  auto req = std::make_unique<leasefs_bmap>();
  return ioctl(fd, LEASEFS_IOC_BMAP, req.get()) == 0 ? 0 : errno;
}

std::optional<FileFacts> Facts(int fd) {
  struct statx stx {};
  if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_TYPE | STATX_INO | STATX_SIZE,
            &stx) != 0)
    return std::nullopt;
  FileFacts f;
  f.size = stx.stx_size;
  f.block_size = stx.stx_blksize;
  f.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  f.ino = stx.stx_ino;
  f.regular = S_ISREG(stx.stx_mode);
  return f;
}

std::string HelpFormatter::make_subcommand(const CLI::App* sub) const {
  std::stringstream out;
  CLI::detail::format_help(out, sub->get_display_name(true), Summary(sub->get_description()),
                           column_width_);
  return out.str();
}

std::string UsageMessage(const CLI::App* app, const CLI::Error& e) {
  std::string name = app->get_name();
  for (const CLI::App* sub : app->get_subcommands()) name += " " + sub->get_name();
  std::string where = "leasectl: ";
  for (const CLI::App* sub : app->get_subcommands()) where += sub->get_name() + ": ";
  return fmt::format("{}{}\nRun '{} --help' for more information.\n", where, e.what(), name);
}

std::string Summary(std::string_view man_page) {
  const std::string_view first = man_page.substr(0, man_page.find('\n'));
  const size_t dash = first.find(" - ");
  return std::string(dash == std::string_view::npos ? first : first.substr(dash + 3));
}

}  // namespace leasefs::leasectl
