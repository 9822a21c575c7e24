// ContextServer: the daemon's pin socket (docs/pins.md "The objects").
//
// A process that wants to pin connects to an abstract unix socket whose name
// the kernel chose (autobind: nobody can squat it, and the daemon tells
// clients the name). The connection is the pin context: the server asks the
// kernel who connected (SO_PEERCRED), makes the context in the pin table,
// which says hello on it, and watches the daemon's end. The client's end
// follows dup, fork and SCM_RIGHTS like any descriptor; when the last
// descriptor of it is gone, the daemon's end reads end-of-file, and the
// context closes with its pins, as an RDMA context does when its uverbs file
// is released.
//
// Clients write nothing; what they write is read and dropped. A holder that
// shuts the socket down (shutdown(2)) ends the context as its last close
// would: the daemon cannot tell the two apart, and it is the holder's own
// context to end.
//
// Thread safety: every method may be called from any thread; the server has
// one thread of its own.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <thread>
#include <unordered_map>

#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "pin/pin_table.h"

namespace leasefs::pin {

// -o pin_passing=: what becomes of a context's pins when the process that
// created it dies while others still hold it (fork, SCM_RIGHTS; docs/pins.md
// "Passing a context").
enum class PinPassing {
  kFollowFd,  // they stay with the context ([Ira], semantics-2019 §1 H.28)
  kStrict,    // kept only under a holder's own covering lease, else aborted
              // ([Dave], §1 H.29): PinTable::AbortUnlessCovered
};

class ContextServer {
 public:
  // Contexts one user other than root may have open at once; a connection
  // beyond is closed at once.
  static constexpr size_t kMaxContextsPerUser = 256;
  // Contexts open at once, all users (each costs the daemon a descriptor).
  static constexpr size_t kMaxContexts = 4096;

  // `table` must outlive the server. Under PinPassing::kStrict the server
  // watches each context's creator (a pidfd): when it dies and the context
  // is still open, it finds the holders (holders.h) and has the table keep
  // or abort the pins.
  explicit ContextServer(PinTable* table, PinPassing passing = PinPassing::kFollowFd);
  ~ContextServer();
  ContextServer(const ContextServer&) = delete;
  ContextServer& operator=(const ContextServer&) = delete;

  // Binds the socket and starts the thread. Errors: EINVAL (started
  // already, or stopped: a server starts once), the errno of socket, bind,
  // listen, epoll or eventfd.
  Status Start();
  // Closes the listener and every context (their pins go) and joins the
  // thread. Idempotent.
  void Stop();

  // The socket's abstract name without its leading NUL byte ("" before
  // Start): connect to "\0" + name.
  std::string name() const;
  size_t open_contexts() const;

 private:
  struct Conn {
    ContextId context = 0;
    uid_t uid = 0;
    UniqueFd creator;  // pidfd of the creator (kStrict only), until it dies
  };
  void Loop();
  void Accept();
  // Under kStrict: starts watching the creator of the context on `fd`.
  void WatchCreator(int fd, pid_t pid, Conn* conn);
  // The creator of the context on `fd` died (kStrict).
  void CreatorDied(int fd) EXCLUDES(mu_);
  // Drops what a client wrote; true when its last descriptor is gone.
  bool Drained(int fd);
  void Close(int fd) EXCLUDES(mu_);
  // Stops or resumes accepting (out of descriptors: the listener would stay
  // readable and the thread spin).
  void Listen(bool on);

  PinTable* const table_;
  const PinPassing passing_;
  UniqueFd listen_;
  UniqueFd epoll_;
  UniqueFd wake_;
  std::thread thread_;
  mutable Mutex mu_;
  std::string name_ GUARDED_BY(mu_);
  bool started_ GUARDED_BY(mu_) = false;
  bool stop_ GUARDED_BY(mu_) = false;
  // By the daemon's end of the socket, which the table owns (its notices go
  // there); the server only polls it.
  std::unordered_map<int, Conn> conns_ GUARDED_BY(mu_);
  bool paused_ GUARDED_BY(mu_) = false;  // not accepting: out of descriptors
  std::unordered_map<uid_t, size_t> per_uid_ GUARDED_BY(mu_);
};

}  // namespace leasefs::pin
