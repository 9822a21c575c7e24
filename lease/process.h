// The processes that hold leases: finding a thread's process, pidfds, and
// queued signals. Thin wrappers over the system calls; errno stays inside.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "base/result.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace leasefs::lease {

// The thread-group id (process id) of thread `tid`, from /proc/<tid>/status
// ("Tgid:"); the kernel headers this is built with have no PIDFD_GET_INFO.
// The caller makes sure `tid` cannot be reused meanwhile (it is the thread
// of a request in flight). Errors: ESRCH (no such thread), EIO (unreadable).
Result<pid_t> ThreadGroupOf(pid_t tid);

// When process `pid` started: field 22 of /proc/<pid>/stat, in clock ticks
// after boot. With the pid and BootId() it names a process for good (a pid
// alone is reused). The caller checks afterwards, through a pidfd opened
// before, that the process is still the one it meant. Errors: ESRCH, EIO.
Result<uint64_t> ProcessStartTicks(pid_t pid);

// The first 64 bits of this boot's /proc/sys/kernel/random/boot_id (0 if it
// cannot be read).
uint64_t BootId();

// pidfd_open(pid, 0). Errors: ESRCH, EMFILE, ...
Result<UniqueFd> OpenPidfd(pid_t pid);

// Whether the process behind `pidfd` has exited (its pidfd polls readable).
bool PidfdExited(int pidfd);

// Whether a process of uid `sender` may have `signal`s delivered to the
// process `pid` behind `pidfd` on its behalf: the rule Linux applies to
// F_SETSIG signals at delivery (sigio_perm): root, or `sender` is the
// target's real or saved uid. Read from /proc/<pid>/status, then `pidfd`
// is checked alive, so the numbers are that process's. A target that
// changed its uids since the lease was taken (a set-uid exec) is thereby
// protected. False when it cannot be told.
bool MaySignal(uid_t sender, pid_t pid, int pidfd);

// Whether thread `tid` holds capability `cap` (CAP_SYS_ADMIN, ...) over
// what this process serves: `cap` is in its effective set (CapEff of
// /proc/<tid>/status) and it lives in this process's user namespace. A
// capability is relative to the namespace that owns it: root of a user
// namespace made with `unshare -r` has every capability there and none over
// a mount of ours. The caller makes sure `tid` names the thread it means
// (a thread blocked in a request cannot change its credentials or its
// namespaces until the request ends). False when it cannot be told (no
// such thread, tid <= 0: outside our pid namespace).
bool HasCapability(pid_t tid, int cap);

// Queues `signal` to the process behind `pidfd` as sigqueue(3) would, from
// this process: si_code SI_QUEUE, si_pid and si_uid ours, si_value `value`
// (si_fd, which overlaps si_value, reads its low 32 bits).
Status QueueSignal(int pidfd, int signal, uint64_t value);

}  // namespace leasefs::lease
