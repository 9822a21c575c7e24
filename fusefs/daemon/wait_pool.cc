#include "fusefs/daemon/wait_pool.h"

#include <cerrno>
#include <mutex>
#include <new>

#include "fusefs/daemon/reply.h"

namespace leasefs::daemon {

WaitPool::WaitPool(size_t max_threads) : max_threads_(max_threads > 0 ? max_threads : 1) {}

WaitPool::~WaitPool() { Shutdown(); }

void WaitPool::Submit(fuse_req_t req, Task task) noexcept {
  Job job{req, std::move(task)};
  int err = 0;
  {
    MutexLock l(&mu_);
    if (stopping_) {
      err = ESHUTDOWN;
    } else {
      try {
        Enqueue(job);
      } catch (const std::bad_alloc&) {
        err = ENOMEM;
      } catch (...) {  // std::system_error: no thread could be started
        err = EAGAIN;
      }
    }
  }
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  work_cv_.notify_one();
}

void WaitPool::Enqueue(Job& job) {
  queue_.push_back(std::move(job));
  // queue_ holds the jobs no worker has taken yet and idle_ the workers that
  // will take one; a job beyond them needs a new worker, or it would wait
  // behind a request that may itself wait for many seconds.
  if (queue_.size() <= idle_ || workers_.size() >= max_threads_) return;
  try {
    workers_.emplace_back([this] { WorkerLoop(); });
  } catch (...) {
    if (!workers_.empty()) return;  // a busy worker will run it later
    job = std::move(queue_.back());
    queue_.pop_back();
    throw;
  }
}

// The condition variable needs the std::mutex inside mu_, which the
// annotations cannot follow.
void WaitPool::WorkerLoop() NO_THREAD_SAFETY_ANALYSIS {
  std::unique_lock<std::mutex> lock(mu_.native());
  for (;;) {
    ++idle_;
    work_cv_.wait(lock,
                  [this]() NO_THREAD_SAFETY_ANALYSIS { return !queue_.empty() || stopping_; });
    --idle_;
    if (queue_.empty()) return;  // stopping, and every job is done
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    ReplyOnce(job.req, [&job] { return job.task(job.req); });
    job.task = nullptr;  // drop what the task holds before taking the lock
    lock.lock();
  }
}

void WaitPool::Shutdown() noexcept {
  std::vector<std::thread> workers;
  {
    MutexLock l(&mu_);
    stopping_ = true;
    workers.swap(workers_);
  }
  work_cv_.notify_all();
  for (auto& t : workers) t.join();
}

}  // namespace leasefs::daemon
