#include "tests/fsx/pool_run.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace leasefs::fsx {

namespace {

std::string LastLines(const std::string& text, int n) {
  size_t pos = text.size();
  while (n-- > 0 && pos > 0) {
    size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
  }
  return text.substr(pos == text.size() ? pos : pos + 1);
}

}  // namespace

void FindToolsNextTo(const std::string& self) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path build = fs::canonical(self, ec).parent_path().parent_path().parent_path();
  if (ec) return;
  const std::pair<const char*, fs::path> tools[] = {
      {"LEASEFS_BIN", build / "fusefs/daemon/leasefs"},
      {"MKFS_LEASEFS_BIN", build / "tools/mkfs.leasefs"},
      {"FSCK_LEASEFS_BIN", build / "tools/fsck.leasefs"},
  };
  for (const auto& [env, path] : tools) {
    const char* v = std::getenv(env);
    if ((!v || !*v) && access(path.c_str(), X_OK) == 0) setenv(env, path.c_str(), 1);
  }
}

std::function<std::string()> Remounter(testing::TestMount& m, bool fsck) {
  return [&m, fsck]() -> std::string {
    int rc = m.Unmount();
    if (rc != 0) return "the daemon exited with " + std::to_string(rc) + ":\n" + m.DaemonLog();
    if (fsck) {
      testing::ProcessResult r = m.Fsck({"-n"});
      if (r.signaled() || r.exit_code != 0)
        return "fsck.leasefs -n exited with " + std::to_string(r.exit_code) + ":\n" + r.output;
    }
    std::string out;
    if (!m.Mount(&out)) return "mount failed: " + out;
    return "";
  };
}

RunResult RunOnOwnPool(Options opts, const testing::MountOptions& mount, bool fsck) {
  testing::TestMount m(mount);
  opts.dir = m.mnt();
  if (!opts.remount) opts.remount = Remounter(m, fsck);
  uint64_t seed = opts.seed;
  RunResult r = Exerciser(std::move(opts)).Run();
  // A final unmount and check: what the last steps left must be consistent.
  if (r.ok && m.mounted()) {
    std::string err = Remounter(m, fsck)();
    if (!err.empty()) {
      r.ok = false;
      r.report = "FAILED: seed " + std::to_string(seed) + ", after the last step: " + err + "\n";
    }
  }
  if (!r.ok) r.report += "daemon output (last lines):\n" + LastLines(m.DaemonLog(), 30);
  return r;
}

}  // namespace leasefs::fsx
