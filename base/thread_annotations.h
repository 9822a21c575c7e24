// Clang thread-safety annotations (checked with -Wthread-safety when built by
// clang; empty under GCC), and annotated mutex wrappers that use them.
// tools/check_thread_safety checks them in CI (docs/threading.md).
#pragma once

#include <mutex>
#include <shared_mutex>

#if defined(__clang__)
#define LFS_TSA(x) __attribute__((x))
#else
#define LFS_TSA(x)
#endif

// abseil (absl::btree_map, engine/extent_map.h) still defines some of these
// names in absl/base/internal/thread_annotations.h, with the same attributes:
// ours replace them, whichever header comes first (a later redefinition in a
// system header is not diagnosed).
#undef CAPABILITY
#undef SCOPED_CAPABILITY
#undef GUARDED_BY
#undef PT_GUARDED_BY
#undef ACQUIRED_BEFORE
#undef ACQUIRED_AFTER
#undef REQUIRES
#undef REQUIRES_SHARED
#undef ACQUIRE
#undef ACQUIRE_SHARED
#undef RELEASE
#undef RELEASE_SHARED
#undef RELEASE_GENERIC
#undef EXCLUDES
#undef NO_THREAD_SAFETY_ANALYSIS

#define CAPABILITY(x) LFS_TSA(capability(x))
#define SCOPED_CAPABILITY LFS_TSA(scoped_lockable)
#define GUARDED_BY(x) LFS_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) LFS_TSA(pt_guarded_by(x))
// Lock order, on the mutex member (checked with -Wthread-safety-beta).
#define ACQUIRED_BEFORE(...) LFS_TSA(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) LFS_TSA(acquired_after(__VA_ARGS__))
#define REQUIRES(...) LFS_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) LFS_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) LFS_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) LFS_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) LFS_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) LFS_TSA(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) LFS_TSA(release_generic_capability(__VA_ARGS__))
#define EXCLUDES(...) LFS_TSA(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS LFS_TSA(no_thread_safety_analysis)

namespace leasefs {

class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CAPABILITY("mutex") SharedMutex {
 public:
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  void LockShared() ACQUIRE_SHARED() { mu_.lock_shared(); }
  void UnlockShared() RELEASE_SHARED() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

class SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(SharedMutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterLock() RELEASE() { mu_->Unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  SharedMutex* const mu_;
};

class SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(SharedMutex* mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_->LockShared(); }
  ~ReaderLock() RELEASE() { mu_->UnlockShared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  SharedMutex* const mu_;
};

}  // namespace leasefs
