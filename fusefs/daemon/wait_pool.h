// WaitPool: worker threads that answer the FUSE requests that may wait.
//
// The loop thread answers a request in microseconds only while nothing it
// runs ever blocks (docs/threading.md). A request that may have to wait (a
// lease break waits up to the lease-break time, 45 s by default) is handed
// here with its fuse_req_t and answered from a worker: libfuse allows a reply
// from any thread, and the kernel matches replies to requests by id, so the
// loop goes on serving everything else meanwhile.
//
// Workers start on demand, up to max_threads, and live until Shutdown: a
// mount that never defers a request runs no thread besides its loop.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <fuse_lowlevel.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "base/thread_annotations.h"

namespace leasefs::daemon {

class WaitPool {
 public:
  // Sends exactly one reply to the request and returns 0, or sends none and
  // returns the errno to reply with (the ReplyOnce contract, reply.h).
  using Task = std::function<int(fuse_req_t)>;

  explicit WaitPool(size_t max_threads);
  // Shuts down (see Shutdown).
  ~WaitPool();
  WaitPool(const WaitPool&) = delete;
  WaitPool& operator=(const WaitPool&) = delete;

  // Queues task(req) for a worker and returns at once. If the task cannot be
  // queued, replies to req itself: ESHUTDOWN after Shutdown, ENOMEM or
  // EAGAIN when no memory or thread is left. When all max_threads workers
  // are busy, the task waits in the queue for the first one to finish.
  void Submit(fuse_req_t req, Task task) noexcept;

  // Stops taking tasks, lets the workers finish every queued one and joins
  // them. Idempotent. Call it before the FUSE session is destroyed: a task
  // replies through the session.
  void Shutdown() noexcept;

 private:
  struct Job {
    fuse_req_t req;
    Task task;
  };

  // Queues `job` and starts a worker if none is idle. Throws on no memory
  // or no thread; `job` is left untouched then.
  void Enqueue(Job& job) REQUIRES(mu_);
  // Worker body: runs jobs until Shutdown empties the queue.
  void WorkerLoop();

  const size_t max_threads_;
  Mutex mu_;
  // Lock: mu_. Signalled when a job is queued or on shutdown.
  std::condition_variable work_cv_;
  std::deque<Job> queue_ GUARDED_BY(mu_);
  std::vector<std::thread> workers_ GUARDED_BY(mu_);
  size_t idle_ GUARDED_BY(mu_) = 0;
  bool stopping_ GUARDED_BY(mu_) = false;
};

}  // namespace leasefs::daemon
