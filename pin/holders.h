// Who holds a pin context, and what a closing process is doing: what the
// mount's close_with_pins and pin_passing policies need to know about
// processes (docs/pins.md "Closing a file with pins", "Passing a context").
//
// A context is a connected unix socket; the daemon keeps one end, and the
// processes holding the other end hold the context. The daemon finds them as
// lsof does: the kernel names the other end's inode (sock_diag,
// UNIX_DIAG_PEER), and /proc/<pid>/fd of every process it may read shows
// "socket:[INODE]" for it. A daemon that is not root sees only its own
// user's processes: the others are not reported.
//
// Thread safety: free functions over the kernel's state; any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>
#include <optional>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace leasefs::pin {

// The inode of the unix socket connected to the one whose inode is
// `own_inode` (sock_diag). Errors: ENOENT (no such socket, or not
// connected), EPROTONOSUPPORT (no unix sock_diag in this kernel), the errno
// of the netlink socket.
Result<uint64_t> PeerInode(uint64_t own_inode);

// A process that holds a descriptor of a socket, with a pidfd opened before
// its descriptors were read: a signal through it cannot reach another
// process that reused the pid.
struct Holder {
  pid_t pid = 0;
  UniqueFd pidfd;
};
// Every process (other than this one) with a descriptor of the socket whose
// inode is `socket_inode`, among those whose /proc/<pid>/fd this process may
// read; with `uid`, only processes whose real or saved uid it is (those a
// process of that user could signal). A descriptor opened with O_PATH (a
// /proc/<pid>/fd/N link opened by an onlooker) does not count: it holds
// nothing.
std::vector<Holder> HoldersOf(uint64_t socket_inode, std::optional<uid_t> uid = std::nullopt);

// The flags field (9th) of a /proc/<pid>/stat text into *flags; false when
// it cannot be parsed. The command name (field 2) may hold any
// byte, spaces and parentheses included: fields are counted after its last
// ')'.
bool StatFlags(std::string_view stat, uint64_t* flags);
// PF_EXITING: the task is in do_exit, closing its descriptors.
constexpr uint64_t kTaskExiting = 0x4;
// Whether task `tid` is exiting (PF_EXITING in /proc/<tid>/stat), or gone.
bool TaskExiting(pid_t tid);

// Whether process `tgid` holds a descriptor of the inode (`dev`, `ino`): its
// /proc/<tgid>/fd links are looked at without asking their filesystems
// (statx AT_STATX_DONT_SYNC: no request reaches a FUSE daemon, this one
// included). Errors: EACCES or ESRCH when the descriptors cannot be read.
Result<bool> HoldsInode(pid_t tgid, dev_t dev, uint64_t ino);

}  // namespace leasefs::pin
