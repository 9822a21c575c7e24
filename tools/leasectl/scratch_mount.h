// A pool that `leasectl scenario` formats, mounts and removes itself: a pool
// file in /dev/shm (else $TMPDIR), a mountpoint made for it, and the leasefs
// daemon as a child of this process, in the foreground and in a process
// group of its own (a Ctrl-C at the terminal reaches the scenario, which
// then unmounts; it does not tear the daemon down under it).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/status.h"

namespace leasefs::leasectl {

// Where leasectl finds its sibling programs: $LEASEFS_BIN,
// $MKFS_LEASEFS_BIN, $FSCK_LEASEFS_BIN when set; else next to leasectl's own
// executable (an installation), else where a meson build tree puts them
// (tools/, tools/run/ and fusefs/daemon/), else on $PATH. "" when not found.
std::string FindTool(const std::string& env, const std::string& name);

class ScratchMount {
 public:
  ScratchMount() = default;
  ~ScratchMount();  // Stop(), errors ignored
  ScratchMount(const ScratchMount&) = delete;
  ScratchMount& operator=(const ScratchMount&) = delete;

  // Formats a pool of `size` (mkfs.leasefs --size) and mounts it with the -o
  // options `options` (comma separated; "" for none). A non-root caller
  // mounts through fusermount3, as any FUSE user does. Errors say which step
  // failed, with that program's output.
  Status Start(const std::string& size, const std::string& options);

  // Unmounts (fusermount3 -u; lazily if busy), waits for the daemon (killing
  // it after 10 s), runs fsck.leasefs on the pool when `fsck_output` is given
  // (its output there; the status is fsck's verdict), and removes the pool
  // and the mountpoint. Safe to call twice.
  Status Stop(std::string* fsck_output = nullptr);

  const std::string& mnt() const { return mnt_; }
  const std::string& pool() const { return pool_; }
  const std::string& options() const { return options_; }
  pid_t daemon_pid() const { return pid_; }
  std::string path(const std::string& rel) const { return mnt_ + "/" + rel; }

 private:
  std::string pool_;
  std::string dir_;  // the mountpoint's private parent
  std::string mnt_;
  std::string options_;
  std::string log_;  // the daemon's output
  pid_t pid_ = -1;
};

// The whole of what file `fd` holds, from its start (pread: the offset is
// left alone); what could be read when reading fails.
std::string ReadWhole(int fd);

// Runs argv (argv[0] a path) to completion with stdout and stderr captured
// in *output; returns its exit status (128 + signal when killed, -1 when it
// could not be started).
int RunProgram(const std::vector<std::string>& argv, std::string* output);

}  // namespace leasefs::leasectl
