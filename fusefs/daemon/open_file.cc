#include "fusefs/daemon/open_file.h"

namespace leasefs::daemon {

OpenFile::~OpenFile() {
  if (poll_ != nullptr) fuse_pollhandle_destroy(poll_);
}

void OpenFile::SetPollHandle(fuse_pollhandle* ph) {
  fuse_pollhandle* old;
  {
    MutexLock l(&mu_);
    old = poll_;
    poll_ = ph;
  }
  if (old != nullptr) fuse_pollhandle_destroy(old);
}

void OpenFile::NotifyPoll() {
  // Under the lock, so that a new poll cannot destroy the handle meanwhile.
  // The handle stays: the kernel keeps one per file, and every later POLL
  // brings a fresh copy of it.
  MutexLock l(&mu_);
  if (poll_ != nullptr) fuse_lowlevel_notify_poll(poll_);
}

OpenFile* OpenFiles::Open(engine::Ino ino, int flags) {
  MutexLock l(&mu_);
  const uint64_t id = next_id_++;
  auto f = std::make_shared<OpenFile>(id, ino, flags);
  OpenFile* raw = f.get();
  files_.emplace(id, std::move(f));
  return raw;
}

void OpenFiles::Release(OpenFile* f) {
  std::shared_ptr<OpenFile> last;  // destroyed outside the lock
  MutexLock l(&mu_);
  auto it = files_.find(f->id());
  if (it == files_.end()) return;
  last = std::move(it->second);
  files_.erase(it);
}

std::shared_ptr<OpenFile> OpenFiles::Find(uint64_t id) const {
  MutexLock l(&mu_);
  auto it = files_.find(id);
  return it == files_.end() ? nullptr : it->second;
}

size_t OpenFiles::size() const {
  MutexLock l(&mu_);
  return files_.size();
}

}  // namespace leasefs::daemon
