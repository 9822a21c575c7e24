// leasefs-metabench: time create, stat and unlink of many files in one directory.
//
// Each phase walks the same N names in order and times every call:
//   create  openat(O_CREAT|O_EXCL|O_WRONLY) + close
//   stat    statx(AT_STATX_FORCE_SYNC), so a FUSE filesystem must ask its daemon
//           (GETATTR) instead of answering from the kernel's attribute cache
//   unlink  unlinkat
// and reports ops/s (N / wall time of the phase) and the p50/p99 latency of a
// single call. The directory is left as it was found: on error the files
// created so far are removed before exiting.
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: leasefs-metabench [-n FILES] [--json] DIR\n"
    "\n"
    "Creates FILES (default 20000) empty files in DIR, stats each with\n"
    "statx(AT_STATX_FORCE_SYNC), then unlinks them; prints ops/s and the p50/p99\n"
    "latency of one call per phase, as a table or (--json) as one JSON object.\n"
    "DIR must exist and must not hold files named mb-NNNNNNN.\n"
    "Exit status: 0 done; 1 a call failed; 2 bad arguments.\n";

using Clock = std::chrono::steady_clock;

struct Options {
  long files = 20000;
  bool json = false;
  std::string dir;
};

struct PhaseResult {
  const char* name;
  double seconds;
  double ops_per_sec;
  double p50_us;
  double p99_us;
};

// An operation on file `i`; returns 0 or an errno value.
using Op = int (*)(int dirfd, const char* name);

int CreateOne(int dirfd, const char* name) {
  int fd = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  return close(fd) == 0 ? 0 : errno;
}

int StatOne(int dirfd, const char* name) {
  struct statx stx;
  return statx(dirfd, name, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx) == 0 ? 0 : errno;
}

int UnlinkOne(int dirfd, const char* name) { return unlinkat(dirfd, name, 0) == 0 ? 0 : errno; }

std::string FileName(long i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "mb-%07ld", i);
  return buf;
}

// The q-quantile (0 < q < 1) of `ns`, in microseconds. Reorders `ns`.
double QuantileUs(std::vector<int64_t>& ns, double q) {
  auto k = static_cast<size_t>(q * static_cast<double>(ns.size() - 1) + 0.5);
  std::nth_element(ns.begin(), ns.begin() + static_cast<ptrdiff_t>(k), ns.end());
  return static_cast<double>(ns[k]) / 1000.0;
}

// Runs `op` on every name. On failure returns false with *failed_at set to
// the index that failed and *err to its errno.
bool RunPhase(const char* phase, Op op, int dirfd, const std::vector<std::string>& names,
              PhaseResult* out, size_t* failed_at, int* err) {
  std::vector<int64_t> ns(names.size());
  const auto start = Clock::now();
  auto t0 = start;
  for (size_t i = 0; i < names.size(); ++i) {
    *err = op(dirfd, names[i].c_str());
    const auto t1 = Clock::now();
    if (*err != 0) {
      *failed_at = i;
      return false;
    }
    ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
    t0 = t1;
  }
  const double secs = std::chrono::duration<double>(t0 - start).count();
  *out = {phase, secs, static_cast<double>(names.size()) / secs, QuantileUs(ns, 0.50),
          QuantileUs(ns, 0.99)};
  return true;
}

// Best-effort removal of the first `count` files after a failure (those
// already unlinked just fail with ENOENT).
void RemoveFirst(int dirfd, const std::vector<std::string>& names, size_t count) {
  for (size_t i = 0; i < count; ++i) unlinkat(dirfd, names[i].c_str(), 0);
}

void PrintTable(const Options& o, const std::vector<PhaseResult>& rs) {
  std::printf("%ld files in %s\n%-8s %12s %10s %10s %9s\n", o.files, o.dir.c_str(), "phase",
              "ops/s", "p50 us", "p99 us", "seconds");
  for (const auto& r : rs)
    std::printf("%-8s %12.0f %10.2f %10.2f %9.3f\n", r.name, r.ops_per_sec, r.p50_us, r.p99_us,
                r.seconds);
}

// `dir` is printed as given; the runner passes plain paths (no quotes or
// backslashes), so no JSON escaping is attempted beyond refusing such names.
void PrintJson(const Options& o, const std::vector<PhaseResult>& rs) {
  std::printf("{\"files\": %ld, \"dir\": \"%s\", \"phases\": {", o.files, o.dir.c_str());
  for (size_t i = 0; i < rs.size(); ++i) {
    const auto& r = rs[i];
    std::printf("%s\"%s\": {\"ops_per_sec\": %.1f, \"p50_us\": %.3f, \"p99_us\": %.3f, "
                "\"seconds\": %.6f}",
                i ? ", " : "", r.name, r.ops_per_sec, r.p50_us, r.p99_us, r.seconds);
  }
  std::printf("}}\n");
}

// Parses argv into *o; returns false (after printing why) on bad arguments.
bool ParseArgs(int argc, char** argv, Options* o) {
  static const option kLong[] = {{"files", required_argument, nullptr, 'n'},
                                 {"json", no_argument, nullptr, 'j'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  for (int c; (c = getopt_long(argc, argv, "n:jh", kLong, nullptr)) != -1;) {
    if (c == 'n') {
      char* end = nullptr;
      o->files = std::strtol(optarg, &end, 10);
      if (*end != '\0' || o->files < 1 || o->files > 9999999) {
        std::fprintf(stderr, "leasefs-metabench: bad file count '%s'\n", optarg);
        return false;
      }
    } else if (c == 'j') {
      o->json = true;
    } else {
      std::fputs(kUsage, c == 'h' ? stdout : stderr);
      if (c == 'h') std::exit(0);
      return false;
    }
  }
  if (optind + 1 != argc) {
    std::fputs(kUsage, stderr);
    return false;
  }
  o->dir = argv[optind];
  if (o->json && o->dir.find_first_of("\"\\") != std::string::npos) {
    std::fprintf(stderr, "leasefs-metabench: --json needs a DIR without quotes or backslashes\n");
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) return 2;
  const int dirfd = open(o.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    std::fprintf(stderr, "leasefs-metabench: %s: %s\n", o.dir.c_str(), std::strerror(errno));
    return 1;
  }
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(o.files));
  for (long i = 0; i < o.files; ++i) names.push_back(FileName(i));

  struct Phase {
    const char* name;
    Op op;
  };
  constexpr Phase kPhases[] = {{"create", CreateOne}, {"stat", StatOne}, {"unlink", UnlinkOne}};
  std::vector<PhaseResult> results;
  for (const auto& p : kPhases) {
    PhaseResult r{};
    size_t failed_at = 0;
    int err = 0;
    if (!RunPhase(p.name, p.op, dirfd, names, &r, &failed_at, &err)) {
      std::fprintf(stderr, "leasefs-metabench: %s %s/%s: %s\n", p.name, o.dir.c_str(),
                   names[failed_at].c_str(), std::strerror(err));
      // Every name is ours once create has finished; before that, only the
      // ones below the failure (a pre-existing file is not ours to remove).
      RemoveFirst(dirfd, names, p.op == CreateOne ? failed_at : names.size());
      close(dirfd);
      return 1;
    }
    results.push_back(r);
  }
  close(dirfd);
  if (o.json)
    PrintJson(o, results);
  else
    PrintTable(o, results);
  return 0;
}
