// OpenFile: the daemon's object for one open file description, from OPEN (or
// CREATE) to RELEASE.
//
// The kernel hands an open file's handle (fuse_file_info::fh) back with every
// request made through it; leasefs's handle is the address of its OpenFile.
// What hangs on it: the access mode the file was opened with (ioctls check it
// as the kernel checks an fd's mode), the layout leases taken through it
// (lease/, keyed by id()), and the poll handle through which a lease break
// reaches a holder blocked in poll(2) as POLLPRI. Later: its DAX mappings
// and pins.
//
// OpenFiles owns them all: RELEASE ends an open file's life there, after
// which no request names it again (the kernel guarantees it); a break
// notification racing with RELEASE holds its own reference.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include <fuse_lowlevel.h>

#include "base/thread_annotations.h"
#include "engine/filesystem.h"

namespace leasefs::daemon {

class OpenFile {
 public:
  OpenFile(uint64_t id, engine::Ino ino, int flags) : id_(id), ino_(ino), flags_(flags) {}
  ~OpenFile();
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

  // Unique for the daemon's life (never 0): the engine::Cred::open_file and
  // lease::OpenFileId of requests made through this file.
  uint64_t id() const noexcept { return id_; }
  engine::Ino ino() const noexcept { return ino_; }
  // The flags it was opened with (fcntl(F_SETFL) later is not seen here).
  int flags() const noexcept { return flags_; }
  bool readable() const noexcept { return (flags_ & O_ACCMODE) != O_WRONLY; }
  bool writable() const noexcept {
    return (flags_ & O_ACCMODE) == O_WRONLY || (flags_ & O_ACCMODE) == O_RDWR;
  }
  bool read_write() const noexcept { return (flags_ & O_ACCMODE) == O_RDWR; }
  bool append() const noexcept { return (flags_ & O_APPEND) != 0; }
  bool nonblock() const noexcept { return (flags_ & O_NONBLOCK) != 0; }

  // Keeps `ph` as the handle to wake when this file's poll state changes
  // (takes ownership; the previous one is destroyed).
  void SetPollHandle(fuse_pollhandle* ph) EXCLUDES(mu_);
  // Tells the kernel to poll this file again (a waiting poll(2) then sees
  // POLLPRI), if anyone polled it. Never blocks.
  void NotifyPoll() EXCLUDES(mu_);

 private:
  const uint64_t id_;
  const engine::Ino ino_;
  const int flags_;
  Mutex mu_;
  fuse_pollhandle* poll_ GUARDED_BY(mu_) = nullptr;
};

// Every open file of the mount, by id.
class OpenFiles {
 public:
  // A new open file; its address is the handle to give the kernel.
  OpenFile* Open(engine::Ino ino, int flags) EXCLUDES(mu_);
  // The file a handle names, or nullptr for 0 (directories, or a request
  // without one).
  static OpenFile* FromHandle(uint64_t fh) noexcept { return reinterpret_cast<OpenFile*>(fh); }
  static uint64_t Handle(OpenFile* f) noexcept { return reinterpret_cast<uint64_t>(f); }
  // Ends the life of the file (RELEASE). REQUIRES: `f` came from Open.
  void Release(OpenFile* f) EXCLUDES(mu_);
  // The file with this id, kept alive by the returned reference, or null.
  std::shared_ptr<OpenFile> Find(uint64_t id) const EXCLUDES(mu_);
  size_t size() const EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, std::shared_ptr<OpenFile>> files_ GUARDED_BY(mu_);
};

}  // namespace leasefs::daemon
