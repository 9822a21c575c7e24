// leasefs-populate: fill an unmounted pool with empty files, fast, for
// bench/scale ("a pool holding 1M files").
//
// It mounts the pool in this process with the engine the daemon runs
// (engine::Filesystem, the same transactions, the same bytes on the pool),
// without FUSE round trips, makes DIRS directories d000000... under the
// root and FILES empty regular files f000000... in each, and unmounts
// cleanly. The pool is then what the same creates through a mount would
// have left (bar inode numbers and timestamps). It takes the pool's flock
// as the daemon does, so it refuses a mounted pool.
#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <sys/file.h>
#include <sys/stat.h>

#include "engine/filesystem.h"
#include "engine/media.h"

namespace {

using namespace leasefs;
using engine::Filesystem;

constexpr const char* kUsage =
    "usage: leasefs-populate POOL DIRS FILES\n"
    "\n"
    "Mounts the unmounted leasefs pool POOL in this process (the engine, no\n"
    "FUSE), creates DIRS directories under its root and FILES empty files in\n"
    "each, unmounts it cleanly, and prints the count and the seconds taken.\n"
    "Exit status: 0 done; 1 a call failed; 2 bad arguments.\n";

int Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "leasefs-populate: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

bool ParseCount(const char* s, uint64_t* out) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') return false;
  *out = v;
  return true;
}

std::string Name(char kind, uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%c%06llu", kind, static_cast<unsigned long long>(i));
  return buf;
}

// DIRS directories of FILES files each; the references each create hands
// out are dropped at once, as the kernel's FORGET would.
Status Fill(Filesystem& fs, uint64_t dirs, uint64_t files) {
  const engine::Cred root = engine::Cred::Root();
  for (uint64_t d = 0; d < dirs; ++d) {
    auto dir = fs.Mkdir(root, 1, Name('d', d), 0755);
    if (!dir.ok()) return dir.status();
    const engine::Ino dino = dir->attr.st_ino;
    for (uint64_t f = 0; f < files; ++f) {
      auto file = fs.Create(root, dino, Name('f', f), S_IFREG | 0644, O_CREAT | O_EXCL | O_WRONLY);
      if (!file.ok()) return file.status();
      fs.Forget(file->attr.st_ino, 1);
    }
    fs.Forget(dino, 1);
  }
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t dirs = 0, files = 0;
  if (argc != 4 || !ParseCount(argv[2], &dirs) || !ParseCount(argv[3], &files)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string pool = argv[1];
  const auto start = std::chrono::steady_clock::now();
  auto media = engine::OpenPool(pool, engine::MapOptions{});
  if (!media.ok()) return Fail(pool, media.status());
  if (flock((*media)->fd(), LOCK_EX | LOCK_NB) != 0)
    return Fail(pool, Status::Error(EBUSY, "in use (mounted?)"));
  auto fs = Filesystem::Mount(std::move(*media), engine::MountOptions{});
  if (!fs.ok()) return Fail("mount " + pool, fs.status());
  const Status filled = Fill(**fs, dirs, files);
  (*fs)->Unmount();
  if (!filled.ok()) return Fail("create", filled);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%llu directories, %llu files in %.2f s\n", static_cast<unsigned long long>(dirs),
              static_cast<unsigned long long>(dirs * files), secs);
  return 0;
}
