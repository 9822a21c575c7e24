// leasectl report: a mount's blocks and its lease history as one
// self-contained HTML page (and two SVG pictures), from a live mount or from
// a run document (`leasectl scenario run NAME --json`).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/report_render.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace report_cmd {

constexpr const char* kManPage =
    R"man(leasectl report - draw a mount's blocks and its lease history as a page

SYNOPSIS
  leasectl report [--html OUT.html] [--svg PREFIX] [--title TEXT]
                  (--from RUN.json | PATH)

DESCRIPTION
  Draws two pictures of a leasefs mount and writes them, with the numbers
  behind them, into one HTML page that needs nothing else: no network, no
  fonts, no script to be read (a script only adds highlighting), and a
  layout that fits a phone's width.

  The block map: the pool's data blocks from left to right, one band each
  for the files' blocks (a colour per file), shared blocks (reference count
  above 1: reflinks), leased blocks (under a leased file range, coloured by
  the lease's state: active, breaking, revoked, zombie), pinned blocks
  (what a pin registered for a NIC reaches), fenced blocks (pins a break
  fenced) and quarantined blocks (no file holds them, but a mapping or a
  pin may still reach them). Each band says how many blocks it has.

  The timeline: one lane per process, the lease events as marks (grant,
  break, release, revoke, refused, break-done, zombie, fence), each break
  as an interval from the break to the release, revoke or fence that ended
  it, and the steps of a scenario run as numbered marks; the count of each
  kind of event below it.

  Then tables of the files, leases, pins, DAX records and quarantine, and
  the events.

  PATH is any file or directory of a live mount: the report is of the
  mount now, with its event log (the last 4096 events). --from RUN.json
  draws a run document instead, as `leasectl scenario run NAME --json`
  prints it (docs/leasectl.md, "report", gives its shape).

OPTIONS
  --html OUT.html  write the page
  --svg PREFIX     write PREFIX-blocks.svg and PREFIX-timeline.svg
  --title TEXT     the page's title (default: the run's, or PATH)
  --from RUN.json  read a run document ("-": standard input)

  At least one of --html and --svg is needed.

EXIT STATUS
  0 written; 1 PATH is not on leasefs, RUN.json cannot be read or is not
  a run document, or an output cannot be written; 2 usage error.)man";

struct Args {
  std::string html;
  std::string svg;
  std::string title;
  std::string from;
  std::string path;
};

// The whole of `path` ("-": standard input) into *out; 0 or an errno value.
int ReadAll(const std::string& path, std::string* out) {
  UniqueFd owned;
  int fd = STDIN_FILENO;
  if (path != "-") {
    owned = Open(path, O_RDONLY);
    if (!owned.valid()) return errno;
    fd = owned.get();
  }
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      // O_NONBLOCK (Open's, against FIFOs that never open): wait.
      if (errno == EAGAIN) {
        usleep(10'000);
        continue;
      }
      return errno;
    }
    out->append(buf, static_cast<size_t>(n));
  }
}

// Writes `text` to `path` (created 0644, or emptied); 0 or an errno value.
int WriteAll(const std::string& path, const std::string& text) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return errno;
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    done += static_cast<size_t>(n);
  }
  return close(fd.release()) == 0 ? 0 : errno;
}

int LoadRun(const Args& a, nlohmann::json* run) {
  if (a.from.empty()) {
    const int err = BuildRunDocument(a.path, run);
    return err == 0 ? kExitOk : Fail("report", a.path, err);
  }
  std::string text;
  if (const int err = ReadAll(a.from, &text); err != 0) return Fail("report", a.from, err);
  *run = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (run->is_discarded())
    return FailWith("report", a.from, "not a run document (not JSON)");
  if (!run->is_object() || !run->contains("snapshot") || !(*run)["snapshot"].is_object())
    return FailWith("report", a.from, "not a run document (no \"snapshot\" object)");
  return kExitOk;
}

int Run(const Args& a) {
  nlohmann::json run;
  if (const int rc = LoadRun(a, &run); rc != kExitOk) return rc;
  if (!a.title.empty()) run["title"] = a.title;
  if (!a.html.empty()) {
    if (const int err = WriteAll(a.html, RenderHtml(run)); err != 0)
      return Fail("report", a.html, err);
  }
  if (!a.svg.empty()) {
    for (const auto& [suffix, text] :
         {std::pair{"-blocks.svg", RenderBlocksSvg(run)},
          std::pair{"-timeline.svg", RenderTimelineSvg(run)}}) {
      if (const int err = WriteAll(a.svg + suffix, text); err != 0)
        return Fail("report", a.svg + suffix, err);
    }
  }
  return kExitOk;
}

}  // namespace report_cmd

void AddReportCommand(CLI::App& app, int* rc) {
  using namespace report_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("report", kManPage);
  sub->add_option("--html", args->html, "write the page to OUT.html")->type_name("OUT.html");
  sub->add_option("--svg", args->svg, "write PREFIX-blocks.svg and PREFIX-timeline.svg")
      ->type_name("PREFIX");
  sub->add_option("--title", args->title, "the page's title")->type_name("TEXT");
  CLI::Option* from =
      sub->add_option("--from", args->from, "a run document (- for stdin)")->type_name("RUN.json");
  CLI::Option* path = sub->add_option("PATH", args->path, "any file or directory on the mount");
  from->excludes(path);
  sub->callback([args, rc] {
    if (args->html.empty() && args->svg.empty())
      throw CLI::ValidationError("--html or --svg", "at least one output is needed");
    if (args->from.empty() && args->path.empty())
      throw CLI::RequiredError("PATH or --from");
    *rc = report_cmd::Run(*args);
  });
}

}  // namespace leasefs::leasectl
