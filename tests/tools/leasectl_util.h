// Helpers of the leasectl tests: running the tool (to its end, or in the
// background), and files made of blocks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

#include "tests/support/mount.h"

namespace leasefs::testing {

inline constexpr uint64_t kBlock = 4096;

// LEASECTL_BIN, else build/tools/leasectl.
std::string LeasectlBin();
// Runs leasectl with `args`; stdout and stderr together.
ProcessResult Leasectl(std::vector<std::string> args);

// leasectl running in the background, its stdout and stderr on one pipe read
// line by line. The destructor SIGKILLs and reaps it if it still runs.
class Background {
 public:
  // Starts leasectl with `args`, as user `uid` (its own group, no
  // supplementary groups) when uid is not 0; REQUIREs the pipe and the fork.
  explicit Background(std::vector<std::string> args, uid_t uid = 0);
  ~Background();
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  pid_t pid() const { return pid_; }

  // The next line without its newline, its time stamp ("HH:MM:SS.mmm ")
  // taken off; "TIMEOUT" or "EOF" if none comes.
  std::string Line(int timeout_ms = 10000);
  // SIGKILL, and reap it.
  void Kill();
  // Waits for it to exit (at most 30 s); its exit code (128 + signal), or -1.
  int Wait();

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

// One 4096-byte block of each letter: Blocks("ab") is 4096 'a' then 4096 'b'.
// '0' stands for a block of zero bytes.
std::string Blocks(const std::string& letters);

// Creates (mode 0644) or opens `path` and writes `data` at `offset`.
// Throws std::runtime_error on failure.
void WriteAt(const std::string& path, uint64_t offset, const std::string& data);
// The whole file. Throws std::runtime_error on failure.
std::string ReadAll(const std::string& path);
// The file's size (stat). Throws std::runtime_error on failure.
uint64_t SizeOf(const std::string& path);

}  // namespace leasefs::testing
