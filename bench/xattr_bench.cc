// leasefs-xattr-bench [--json] DIR: extended-attribute rates on one file in
// DIR (a leasefs mount, or any directory for comparison).
//
// For an inode holding 10 and then 10,000 attributes (user.NNNNN, 16-byte
// values), it times setxattr replacing one of them with another 16-byte
// value, and getxattr of one, each call alone; then setxattr and getxattr of
// a 64 KiB value (which leasefs keeps in value blocks of its own). Reports
// ops/s (calls / wall time) and the p50 and p99 of one call in µs.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <sys/xattr.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  std::string name;
  size_t calls = 0;
  double ops_per_s = 0, p50_us = 0, p99_us = 0;
};

std::string Name(size_t i) {
  char n[32];
  std::snprintf(n, sizeof n, "user.%05zu", i);
  return n;
}

std::string Value(size_t n, size_t seed) {
  std::string v(n, '\0');
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return v;
}

[[noreturn]] void Die(const std::string& what) {
  std::perror(what.c_str());
  std::exit(1);
}

// Times `calls` calls of fn(i), each alone.
template <typename Fn>
Stats Time(const std::string& name, size_t calls, Fn fn) {
  std::vector<double> us(calls);
  const auto t0 = Clock::now();
  for (size_t i = 0; i < calls; ++i) {
    const auto a = Clock::now();
    fn(i);
    us[i] = std::chrono::duration<double, std::micro>(Clock::now() - a).count();
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(us.begin(), us.end());
  return {name, calls, static_cast<double>(calls) / secs, us[calls / 2], us[calls * 99 / 100]};
}

void Set(const std::string& path, const std::string& name, const std::string& v) {
  if (setxattr(path.c_str(), name.c_str(), v.data(), v.size(), 0) != 0) Die("setxattr " + name);
}

std::vector<Stats> Run(const std::string& path) {
  std::vector<Stats> out;
  std::string buf(65536, '\0');
  size_t have = 0;
  for (size_t count : {size_t{10}, size_t{10000}}) {
    for (; have < count; ++have) Set(path, Name(have), Value(16, have));
    const std::string at = std::to_string(count) + " attrs";
    out.push_back(Time("setxattr 16 B, " + at, 20000, [&](size_t i) {
      Set(path, Name(i * 7919 % count), Value(16, i));
    }));
    out.push_back(Time("getxattr 16 B, " + at, 20000, [&](size_t i) {
      if (getxattr(path.c_str(), Name(i * 7919 % count).c_str(), buf.data(), buf.size()) < 0)
        Die("getxattr");
    }));
  }
  out.push_back(Time("setxattr 64 KiB", 2000, [&](size_t i) {
    Set(path, "user.big", Value(65536, i));
  }));
  out.push_back(Time("getxattr 64 KiB", 2000, [&](size_t) {
    if (getxattr(path.c_str(), "user.big", buf.data(), buf.size()) != 65536) Die("getxattr big");
  }));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (dir.empty()) {
      dir = argv[i];
    } else {
      std::fprintf(stderr, "usage: leasefs-xattr-bench [--json] DIR\n");
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "usage: leasefs-xattr-bench [--json] DIR\n");
    return 2;
  }
  const std::string path = dir + "/xattr-bench." + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) Die(path);
  std::fclose(f);
  const std::vector<Stats> stats = Run(path);
  unlink(path.c_str());
  if (json) {
    std::printf("[\n");
    for (size_t i = 0; i < stats.size(); ++i)
      std::printf("  {\"name\": \"%s\", \"calls\": %zu, \"ops_per_s\": %.0f, \"p50_us\": %.1f, "
                  "\"p99_us\": %.1f}%s\n",
                  stats[i].name.c_str(), stats[i].calls, stats[i].ops_per_s, stats[i].p50_us,
                  stats[i].p99_us, i + 1 < stats.size() ? "," : "");
    std::printf("]\n");
    return 0;
  }
  std::printf("| call | ops/s | p50 µs | p99 µs |\n| --- | --- | --- | --- |\n");
  for (const Stats& s : stats)
    std::printf("| %s | %.0f | %.1f | %.1f |\n", s.name.c_str(), s.ops_per_s, s.p50_us, s.p99_us);
  return 0;
}
