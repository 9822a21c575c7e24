// Who holds a context, and what a closing process is doing (pin/holders.h),
// against the real kernel: a connected socket's peer by sock_diag, the
// processes holding it (a fork's child included), /proc/<pid>/stat's flags
// field with an awkward command name, an exiting task, and a process's
// descriptors of an inode.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "pin/holders.h"

namespace leasefs::pin {
namespace {

uint64_t InodeOf(int fd) {
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  return st.st_ino;
}

std::vector<pid_t> Pids(const std::vector<Holder>& hs) {
  std::vector<pid_t> out;
  for (const auto& h : hs) out.push_back(h.pid);
  std::sort(out.begin(), out.end());
  return out;
}

TEST_CASE("holders: StatFlags reads field 9, whatever the command name holds") {
  uint64_t f = 0;
  CHECK(StatFlags("42 (sh) S 1 42 42 0 -1 4194560 100 0", &f));
  CHECK(f == 4194560);
  CHECK(StatFlags("42 (a b) c) ) R 1 2 3 4 5 4194308 7", &f));
  CHECK(f == 4194308);
  CHECK((f & kTaskExiting) != 0);
  CHECK_FALSE(StatFlags("42 (sh) S 1 42", &f));
  CHECK_FALSE(StatFlags("42 sh S 1 42 42 0 -1 5", &f));
  CHECK_FALSE(StatFlags("42 (sh) S 1 42 42 0 -1 x5 1", &f));
}

TEST_CASE("holders: this thread is not exiting; a reaped pid counts as gone") {
  CHECK_FALSE(TaskExiting(getpid()));
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(0);
  REQUIRE(waitpid(child, nullptr, 0) == child);
  CHECK(TaskExiting(child));
}

TEST_CASE("holders: the peer of a connected socket, and every process holding it") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto peer = PeerInode(InodeOf(sv[0]));
  REQUIRE_MESSAGE(peer.ok(), peer.status().ToString());
  CHECK(*peer == InodeOf(sv[1]));
  // This process holds both ends, and is never reported; a child is.
  CHECK(HoldersOf(*peer).empty());
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(sv[0]);
    (void)!write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  CHECK(Pids(HoldersOf(*peer)) == std::vector<pid_t>{child});
  // The child does not hold sv[0].
  CHECK(HoldersOf(InodeOf(sv[0])).empty());
  kill(child, SIGKILL);
  REQUIRE(waitpid(child, nullptr, 0) == child);
  CHECK(HoldersOf(*peer).empty());
  close(sv[1]);
  // Not connected any more: no peer.
  auto none = PeerInode(InodeOf(sv[0]));
  CHECK_FALSE(none.ok());
  close(sv[0]);
  close(ready[0]);
  close(ready[1]);
  CHECK(PeerInode(1).status().err() == ENOENT);
}

TEST_CASE("holders: HoldsInode sees a process's descriptors of one inode") {
  char path[] = "/tmp/holders_testXXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  auto held = HoldsInode(getpid(), st.st_dev, st.st_ino);
  REQUIRE(held.ok());
  CHECK(*held);
  close(fd);
  held = HoldsInode(getpid(), st.st_dev, st.st_ino);
  REQUIRE(held.ok());
  CHECK_FALSE(*held);
  unlink(path);
  CHECK(HoldsInode(0x7ffffff0, st.st_dev, st.st_ino).status().err() == ESRCH);
}

}  // namespace
}  // namespace leasefs::pin
