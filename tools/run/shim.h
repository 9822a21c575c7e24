// The LD_PRELOAD shim of leasefs-run (docs/leasefs-run.md): its state and the
// operations on it, shared by the interposed calls (shim.cc) and the break
// watcher (watcher.cc).
//
// State, all in fixed tables (the shim allocates no memory, so that it is
// safe before main, inside allocators that call mmap, and after fork):
//   Inode:  one per leasefs file the process maps through DAX: the shim's
//           own open file description of it (`fd`) and the one lease on it,
//           covering the whole file.
//   Region: one leasefs_dax_mapping: the map ids the daemon recorded for it.
//           It lives while any of its pieces lives.
//   Piece:  a range of the address space that still maps part of a region,
//           with the program's protection. munmap, mremap and mprotect split
//           and shrink pieces; a region's last piece gone, its ids are
//           confirmed (DAX_UNMAP); an inode's last region gone, the lease is
//           released and `fd` closed.
//
// Thread safety: one mutex (g_mu) guards every table; each function here
// REQUIRES it held unless it says otherwise. Inside the shim a thread marks
// itself (InShim), so that the mmap calls of the client library, which the
// shim's own exported mmap receives, go straight to the real ones.
#pragma once

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "lease/client/leasefs_dax.h"
#include "lease/client/leasefs_pin.h"

namespace leasefs::run {

constexpr int kMaxInodes = 256;
constexpr int kMaxRegions = 1024;
constexpr int kMaxPieces = 4096;

struct Inode {
  bool used = false;
  uint64_t dev = 0;
  uint64_t ino = 0;
  int fd = -1;               // the shim's own, O_CLOEXEC
  bool fd_writable = false;  // opened O_RDWR
  uint32_t lease_type = 0;   // 0 (none), LEASEFS_LEASE_READ or _WRITE
  uint64_t lease_id = 0;
  bool lease_owned = false;  // taken by this process (not inherited by fork)
  // The open file (and so the lease) is shared with a fork's parent or
  // child: the other may release the lease before this process's watcher
  // saw the break's POLLPRI, so the watcher also checks the lease itself.
  bool shared = false;
  // Pins of the verbs layer on this inode (pins.cc): while there are any,
  // the lease is EXCLUSIVE and the inode stays, mappings or not.
  int pins = 0;
  bool exclusive = false;
  uint32_t gen = 0;          // bumped whenever the slot is reused
};

constexpr int kMaxPins = 256;
constexpr int kMaxPinContexts = 8;

// A pin the verbs layer made (run_pin.h).
struct Pin {
  bool used = false;
  int inode = -1;
  uint32_t inode_gen = 0;
  int context = -1;  // index in State::contexts
  uint64_t pin_id = 0;
  uint32_t provider = 0;  // LEASEFS_PIN_SOFTNIC or _VERBS
};

// One pin context per mount (st_dev) the process pins on, opened lazily.
struct PinContext {
  bool used = false;
  uint64_t dev = 0;
  leasefs_pin_context ctx{};
  leasefs_pin_info info{};
};

struct Region {
  bool used = false;
  int inode = -1;
  int pieces = 0;
  leasefs_dax_mapping m{};
};

struct Piece {
  bool used = false;
  int region = -1;
  char* addr = nullptr;
  uint64_t len = 0;
  uint64_t file_off = 0;
  int prot = 0;
};

struct State {
  Inode inodes[kMaxInodes];
  Region regions[kMaxRegions];
  Piece pieces[kMaxPieces];
  Pin pin_table[kMaxPins];
  PinContext contexts[kMaxPinContexts];
  pid_t pid = 0;               // this process (a vfork child differs)
  int wake_fd = -1;            // eventfd: the watcher rebuilds its poll set
  bool watcher_running = false;
  int npieces = 0;             // pieces in use: read without the lock as a hint
  // The verbs layer's invalidation hook (run_pin.h): told of every range
  // whose memory is about to change under a registration.
  void (*invalidate)(const void* addr, size_t len) = nullptr;
  // The verbs layer's fence hook: before the shim ends a VERBS pin itself.
  void (*fence)(uint64_t pin_id) = nullptr;
  bool verbose = false;        // LEASEFS_RUN_VERBOSE=1
  bool strict = false;         // LEASEFS_RUN_STRICT=1
};

extern pthread_mutex_t g_mu;
extern State g_state;

// --- the real calls (dlsym RTLD_NEXT; raw system calls until resolved) ---
void ResolveReal();
void* RealMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off);
int RealMunmap(void* addr, size_t len);
void* RealMremap(void* old, size_t old_len, size_t new_len, int flags, void* new_addr);
int RealMprotect(void* addr, size_t len, int prot);

// True while this thread runs shim code; InShimScope sets it.
bool InShim();
class InShimScope {
 public:
  InShimScope();
  ~InShimScope();
  InShimScope(const InShimScope&) = delete;
  InShimScope& operator=(const InShimScope&) = delete;

 private:
  bool was_;
};

// Holds g_mu and marks the thread as inside the shim, for a scope.
class Locked {
 public:
  Locked() { pthread_mutex_lock(&g_mu); }
  ~Locked() { pthread_mutex_unlock(&g_mu); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  InShimScope scope_;
};

// Logs a line to stderr when LEASEFS_RUN_VERBOSE=1 (any lock state).
void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

size_t PageSize();

// --- tables ---
int FindInode(uint64_t dev, uint64_t ino);
int NewInode();
int NewRegion(int inode);
int NewPiece(int region, char* addr, uint64_t len, uint64_t file_off, int prot);
// The piece containing `addr`, or -1.
int PieceAt(const char* addr);
bool AnyPieceIn(const char* a, const char* b);
bool InodeHasRegions(int i);
// Pieces in use (without the lock: a hint that none exist, for fast paths).
int PieceCount();
// Splits the piece that strictly contains `addr` in two at `addr`. False if
// the tables are full.
bool SplitAt(char* addr);

// Forgets every piece in [a, b) (splitting those that straddle its ends)
// except those of region `keep` (-1: none): the memory there was replaced
// or unmapped by the caller. False if the tables are full.
bool ForgetRange(char* a, char* b, int keep);
// Removes piece `p` from the tables (its memory is the caller's business);
// the region's last piece gone, confirms its ids and ends the region, and
// the inode's last region gone, releases the inode.
void DropPiece(int p);
// Releases inode `i`: its pins (UnpinInode), its lease (if this process took
// it), its descriptor.
void ReleaseInode(int i);

// Replaces region `r`'s memory by the kernel's own mapping of the same file
// bytes (MAP_SHARED: the page cache through the inode's descriptor;
// MAP_PRIVATE: an anonymous copy of the bytes), or PROT_NONE memory if that
// fails; then confirms the ids and drops the region (and maybe the inode).
// With `confirm` false the ids are not the process's own (a fork's child
// that could not adopt them) and are not confirmed.
void DegradeRegion(int r, bool confirm);
// DegradeRegion for every region of inode `i`, then releases it.
void DegradeInode(int i);
// Replaces every piece by PROT_NONE memory, confirms every id and releases
// every inode: before exec.
void DropAllForExec();

// Before an exec by this process (not a vfork child): every DAX mapping
// replaced by PROT_NONE memory and confirmed, every lease released, so that
// the daemon knows before the exec drops the mappings (and a failed exec
// leaves memory that faults rather than blocks that may be reused). Takes
// g_mu itself.
void BeforeExec();

// --- pins of the verbs layer (pins.cc, run_pin.h) ---
// Ends every pin on inode `i` (a break, an exec), and makes its lease
// non-exclusive again when it is still active.
void UnpinInode(int i);
// Tells the verbs layer that [addr, addr + len) is about to be unmapped or
// replaced (any lock state; the hook takes none of the shim's).
void Invalidate(const void* addr, size_t len);
// In a fork's child: the pins are the parent's; forgets them (and closes
// the child's copies of the contexts, which the parent keeps open).
void ForgetPinsAfterFork();

// --- the watcher (watcher.cc) ---
// Starts it if it does not run (REQUIRES g_mu), and tells it to look again
// at the set of leased descriptors.
void WakeWatcher();
// In a fork's child: a new wake descriptor; the watcher does not run.
void ResetWatcherAfterFork();

}  // namespace leasefs::run
