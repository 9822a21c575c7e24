// leasefs-run: runs a program with libleasefs_run.so preloaded, so that its
// mmap calls on leasefs files become DAX mappings (docs/leasefs-run.md), and
// libleasefs_verbs.so, the emulated RDMA device leasefs0 (docs/verbs.md).
//
//   leasefs-run [--verbose] [--strict] [--verbs=auto|soft|off] [--] CMD [ARG...]
//
// The libraries are found next to this executable (the build tree) or in
// ../LIBDIR/leasefs/ relative to it (an installed tree), through
// /proc/self/exe, so that neither depends on the working directory or PATH.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#ifndef LEASEFS_RUN_SHIM_FROM_BINDIR
#define LEASEFS_RUN_SHIM_FROM_BINDIR "../lib/leasefs"
#endif

namespace {

constexpr const char* kShimName = "libleasefs_run.so";
constexpr const char* kVerbsName = "libleasefs_verbs.so";

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: leasefs-run [--verbose] [--strict] [--verbs=auto|soft|off] [--] CMD [ARG...]\n"
               "Runs CMD with the leasefs DAX shim preloaded: mmap of a leasefs file maps its\n"
               "pool blocks directly under a layout lease.\n"
               "  --verbose  log every decision to stderr (LEASEFS_RUN_VERBOSE=1)\n"
               "  --strict   an mmap that cannot be DAX fails with its errno instead of\n"
               "             using the kernel's mmap (LEASEFS_RUN_STRICT=1)\n"
               "  --verbs=   which RDMA devices libibverbs shows CMD (LEASEFS_VERBS):\n"
               "             auto (default): the real ones, or the emulated leasefs0 when\n"
               "             there are none; soft: leasefs0 first; off: the real ones only\n");
}

std::string ExeDir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

// A preloaded library's absolute path, or "" if it is in neither place.
std::string FindLibrary(const char* name) {
  const std::string dir = ExeDir();
  if (dir.empty()) return {};
  for (const std::string& cand :
       {dir + "/" + name, dir + "/" + LEASEFS_RUN_SHIM_FROM_BINDIR + "/" + name}) {
    if (access(cand.c_str(), R_OK) == 0) return cand;
  }
  return {};
}

// LD_PRELOAD with our libraries first; false if a path cannot be preloaded
// (the loader splits the list at spaces and colons).
bool SetPreload(const std::string& shim, const std::string& verbs) {
  if ((shim + verbs).find_first_of(" :") != std::string::npos) return false;
  std::string value = shim + " " + verbs;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && old[0] != '\0')
    value += std::string(" ") + old;
  return setenv("LD_PRELOAD", value.c_str(), 1) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "--verbose") {
      setenv("LEASEFS_RUN_VERBOSE", "1", 1);
    } else if (a == "--strict") {
      setenv("LEASEFS_RUN_STRICT", "1", 1);
    } else if (a == "--verbs=auto" || a == "--verbs=soft" || a == "--verbs=off") {
      setenv("LEASEFS_VERBS", a.c_str() + 8, 1);
    } else if (a == "-h" || a == "--help") {
      Usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "leasefs-run: unknown option %s\n", argv[i]);
      Usage(stderr);
      return 2;
    }
  }
  if (i == argc) {
    Usage(stderr);
    return 2;
  }
  const std::string shim = FindLibrary(kShimName);
  const std::string verbs = FindLibrary(kVerbsName);
  for (const auto& [path, name] : {std::pair{shim, kShimName}, std::pair{verbs, kVerbsName}}) {
    if (path.empty()) {
      std::fprintf(stderr, "leasefs-run: %s is neither beside %s nor in %s relative to it\n",
                   name, "/proc/self/exe", LEASEFS_RUN_SHIM_FROM_BINDIR);
      return 127;
    }
  }
  if (!SetPreload(shim, verbs)) {
    std::fprintf(stderr, "leasefs-run: cannot preload %s and %s (a space or colon in a path)\n",
                 shim.c_str(), verbs.c_str());
    return 127;
  }
  execvp(argv[i], argv + i);
  const int err = errno;
  std::fprintf(stderr, "leasefs-run: %s: %s\n", argv[i], std::strerror(err));
  return err == ENOENT ? 127 : 126;
}
