/* dax_probe: a plain C program that the leasefs-run tests run under the
 * shim (tests/run/run_test.cc). It knows nothing of leasefs: it maps a file
 * with mmap(2) as any program would, and reports what it sees. It talks to
 * the test over stdin/stdout, one line each way, so that another process
 * (the test) can act between its steps.
 *
 *   dax_probe coherence FILE POOL   map 16 KiB MAP_SHARED read-write; the
 *       mapping must be backed by POOL (/proc/self/maps); store "dax-store"
 *       at 0, say "stored", wait for a line (the test has read it with
 *       pread and written "fuse-write" at 4096 with pwrite), then the
 *       mapping must show that at once: say "seen".
 *   dax_probe break FILE POOL       map 16 KiB read-write, fill it with 'A',
 *       say "mapped", wait for a line (the test truncated the file to 8 KiB,
 *       which broke the lease); then no page of the mapping may be backed by
 *       POOL, and the first 8 KiB must still read 'A': say "ok".
 *   dax_probe private FILE POOL     map 8 KiB MAP_PRIVATE read-write, backed
 *       by POOL; a store must not reach the file (pread): say "ok".
 *   dax_probe plain FILE POOL       map FILE (not on leasefs) shared: backed
 *       by FILE itself, never by POOL; say "ok".
 *   dax_probe fork FILE POOL        map 8 KiB shared read-write, fork; the
 *       child stores "from-child" and exits; the parent sees it: say "ok".
 *
 * What programs do to their mappings (tests/run/mapping_test.cc):
 *   dax_probe selftruncate FILE POOL  map 16 KiB shared read-write (DAX),
 *       fill it with 'A', ftruncate its own descriptor to 6 KiB: as on a
 *       local DAX filesystem the bytes before the end stay, the rest of the
 *       end's page reads zeros, the next page faults with SIGBUS; grown back
 *       to 16 KiB, the pages read zeros and take stores. The mapping is no
 *       longer the pool's (the truncate broke the shim's lease). "ok".
 *   dax_probe munmap FILE POOL   map 32 KiB, say "mapped"; after a line,
 *       unmap [8K, 16K): that faults (SIGSEGV), the rest stays the pool's and
 *       coherent; say "partial"; after a line unmap the rest: "unmapped".
 *   dax_probe mremap FILE POOL   (FILE 32 KiB) map 16 KiB; shrink to 8 KiB
 *       in place (the tail faults), grow to 24 KiB (MREMAP_MAYMOVE), move to
 *       a fixed address (MREMAP_FIXED): each time every page the pool's and
 *       every byte the file's; say "moved"; after a line unmap: "unmapped".
 *   dax_probe mprotect FILE POOL  a read-write mapping made read-only faults
 *       on a store (SIGSEGV) and stays the pool's; made writable again, its
 *       stores reach the file. A read-only shared mapping made writable
 *       becomes the kernel's mapping (docs/leasefs-run.md), and its stores
 *       reach the file once msync'ed. "ok".
 *   dax_probe msync FILE POOL    map 8 KiB, say "mapped"; after a line
 *       (the test has read the file through a plain mapping of its own),
 *       store "synced", msync(MS_SYNC), say "synced". msync with both
 *       MS_SYNC and MS_ASYNC is EINVAL, MS_ASYNC alone 0.
 *   dax_probe forkbreak FILE POOL  (FILE 16 KiB of 'F') map 16 KiB, store
 *       "parent" at 200, fork; the child stores "child" at 100; say
 *       "forked CHILD_PID"; after a line (the test truncated FILE to 8 KiB),
 *       parent and child each wait for their mapping to stop being the
 *       pool's, see the bytes before 8 KiB, and SIGBUS at 8 KiB. "ok".
 *   dax_probe exec FILE POOL     map 8 KiB, say "mapped"; after a line exec
 *       itself as "dax_probe execd", which says "execd" and exits after a line.
 *   dax_probe threads FILE POOL  (FILE 64 KiB) map it; 4 threads store
 *       counters into their own pages; say "running"; after a line (the
 *       test broke the lease) they store 50 ms more and stop. Every store
 *       the file must show (pread), the mapping no longer the pool's: say
 *       "ok STORES".
 *   dax_probe holefill FILE POOL  (FILE 4 KiB of 'H', then a hole to
 *       16 KiB) map it shared read-only (DAX: one pool page, the hole zero
 *       pages), then shared read-write: that mapping must be the pool's (its
 *       holes filled), the read-only one the kernel's, still reading the
 *       file's bytes; store "filled" at 8 KiB. "ok".
 *   dax_probe fixedover FILE POOL  (FILE 16 KiB) map it shared read-write
 *       (DAX), then mmap(MAP_FIXED) anonymous memory over it and fill that
 *       with 'Z'; say "replaced"; after a line (the test truncated FILE,
 *       which would break a lease the shim still held) the memory must still
 *       be the program's: every byte 'Z', no page the pool's. "ok".
 * Exit status: 0 when every check held, 1 otherwise (with the reason on
 * stderr), 2 for usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define KIB 1024u

static int fail(const char* what) {
  fprintf(stderr, "dax_probe: %s (errno %d: %s)\n", what, errno, strerror(errno));
  return 1;
}

static void say(const char* line) {
  printf("%s\n", line);
  fflush(stdout);
}

static int wait_line(void) {
  char buf[64];
  return fgets(buf, sizeof buf, stdin) != NULL;
}

/* How many pages of [p, p + len) /proc/self/maps shows backed by `path`. */
static size_t pages_backed_by(const void* p, size_t len, const char* path) {
  FILE* f = fopen("/proc/self/maps", "re");
  if (f == NULL) return 0;
  char line[4608];
  size_t pages = 0;
  const uintptr_t a = (uintptr_t)p, b = a + len;
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    int name_at = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &name_at) < 2 || name_at == 0) continue;
    char* name = line + name_at;
    name[strcspn(name, "\n")] = '\0';
    if (strcmp(name, path) != 0) continue;
    const uintptr_t s = lo > a ? lo : a, e = hi < b ? hi : b;
    if (s < e) pages += (e - s) / 4096;
  }
  fclose(f);
  return pages;
}

static char* map_file(const char* file, size_t len, int flags, int* fd_out) {
  const int fd = open(file, O_RDWR);
  if (fd < 0) return NULL;
  char* p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (fd_out != NULL) {
    *fd_out = fd;
  } else {
    close(fd);
  }
  return p == MAP_FAILED ? NULL : p;
}

static int coherence(const char* file, const char* pool) {
  char* p = map_file(file, 16 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 16 * KIB, pool) != 4) return fail("the mapping is not the pool's");
  memcpy(p, "dax-store", 9);
  say("stored");
  if (!wait_line()) return fail("no go-ahead");
  if (memcmp(p + 4096, "fuse-write", 10) != 0) return fail("a write through FUSE is not seen");
  say("seen");
  return munmap(p, 16 * KIB) == 0 ? 0 : fail("munmap");
}

static int breaks(const char* file, const char* pool) {
  char* p = map_file(file, 16 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 16 * KIB, pool) != 4) return fail("the mapping is not the pool's");
  memset(p, 'A', 16 * KIB);
  say("mapped");
  if (!wait_line()) return fail("no go-ahead");
  if (pages_backed_by(p, 16 * KIB, pool) != 0) return fail("pool pages still mapped after the break");
  for (size_t i = 0; i < 8 * KIB; ++i) {
    if (p[i] != 'A') return fail("the bytes changed across the break");
  }
  say("ok");
  return 0;
}

static int private_map(const char* file, const char* pool) {
  int fd;
  char* p = map_file(file, 8 * KIB, MAP_PRIVATE, &fd);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 8 * KIB, pool) != 2) return fail("the mapping is not the pool's");
  const char before = p[0];
  p[0] = (char)(before + 1);
  char got;
  if (pread(fd, &got, 1, 0) != 1 || got != before) return fail("a private store reached the file");
  if (p[0] != (char)(before + 1)) return fail("the private store is lost");
  say("ok");
  return 0;
}

static int plain(const char* file, const char* pool) {
  char* p = map_file(file, 4 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 4 * KIB, pool) != 0 || pages_backed_by(p, 4 * KIB, file) != 1)
    return fail("a file not on leasefs was not mapped as itself");
  p[0] = 'z';
  say("ok");
  return 0;
}

static int forks(const char* file, const char* pool) {
  char* p = map_file(file, 8 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 8 * KIB, pool) != 2) return fail("the mapping is not the pool's");
  const pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    if (pages_backed_by(p, 8 * KIB, pool) != 2) _exit(3);
    memcpy(p + 100, "from-child", 10);
    _exit(0);
  }
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return fail("the child failed");
  if (memcmp(p + 100, "from-child", 10) != 0) return fail("the child's store is not seen");
  say("ok");
  return 0;
}

/* --- what programs do to their mappings --------------------------------- */

static sigjmp_buf fault_jmp;
static void on_fault(int sig) { siglongjmp(fault_jmp, sig); }

/* The signal a load (or, with `store`, a store) at `p` raises, or 0. */
static int fault_of(volatile char* p, int store) {
  struct sigaction sa, old_segv, old_bus;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fault;
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  int sig = sigsetjmp(fault_jmp, 1);
  if (sig == 0) {
    if (store) {
      *p = *p;
    } else {
      (void)*p;
    }
  }
  sigaction(SIGSEGV, &old_segv, NULL);
  sigaction(SIGBUS, &old_bus, NULL);
  return sig;
}

static int all_bytes(const char* p, size_t n, char c) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != c) return 0;
  }
  return 1;
}

/* 1 when [p, +n) holds what `fd` holds at `off`. */
static int same_as_file(int fd, const char* p, size_t n, off_t off) {
  static char buf[64 * KIB];
  if (n > sizeof buf || pread(fd, buf, n, off) != (ssize_t)n) return 0;
  return memcmp(buf, p, n) == 0;
}

static int selftruncate(const char* file, const char* pool) {
  int fd;
  char* p = map_file(file, 16 * KIB, MAP_SHARED, &fd);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 16 * KIB, pool) != 4) return fail("the mapping is not the pool's");
  memset(p, 'A', 16 * KIB);
  if (ftruncate(fd, 6 * KIB) != 0) return fail("ftruncate to 6 KiB");
  if (pages_backed_by(p, 16 * KIB, pool) != 0) return fail("pool pages mapped after the truncate");
  if (!all_bytes(p, 6 * KIB, 'A')) return fail("bytes before the new end changed");
  if (!all_bytes(p + 6 * KIB, 2 * KIB, '\0')) return fail("the end's page past the end is not zeros");
  if (fault_of(p + 8 * KIB, 0) != SIGBUS) return fail("no SIGBUS past the end");
  if (fault_of(p + 15 * KIB, 1) != SIGBUS) return fail("no SIGBUS on a store past the end");
  if (ftruncate(fd, 16 * KIB) != 0) return fail("ftruncate to 16 KiB");
  if (fault_of(p + 12 * KIB, 0) != 0 || !all_bytes(p + 6 * KIB, 10 * KIB, '\0'))
    return fail("the grown file does not read zeros through the mapping");
  p[12 * KIB] = 'B';
  if (!same_as_file(fd, p, 16 * KIB, 0)) return fail("the mapping and the file differ");
  say("ok");
  return 0;
}

static int unmaps(const char* file, const char* pool) {
  int fd;
  char* p = map_file(file, 32 * KIB, MAP_SHARED, &fd);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 32 * KIB, pool) != 8) return fail("the mapping is not the pool's");
  memset(p, 'M', 32 * KIB);
  say("mapped");
  if (!wait_line()) return fail("no go-ahead");
  if (munmap(p + 8 * KIB, 8 * KIB) != 0) return fail("munmap of the middle");
  if (fault_of(p + 8 * KIB, 0) != SIGSEGV || fault_of(p + 15 * KIB, 0) != SIGSEGV)
    return fail("the unmapped middle does not fault");
  if (pages_backed_by(p, 32 * KIB, pool) != 6) return fail("the rest is not the pool's");
  memcpy(p + 20 * KIB, "after-partial", 13);
  if (!same_as_file(fd, p, 8 * KIB, 0) || !same_as_file(fd, p + 16 * KIB, 16 * KIB, 16 * KIB))
    return fail("the rest is not the file's");
  say("partial");
  if (!wait_line()) return fail("no go-ahead");
  if (munmap(p, 8 * KIB) != 0 || munmap(p + 16 * KIB, 16 * KIB) != 0) return fail("munmap");
  say("unmapped");
  return wait_line() ? 0 : fail("no go-ahead");
}

static int remaps(const char* file, const char* pool) {
  int fd;
  char* p = map_file(file, 16 * KIB, MAP_SHARED, &fd);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 16 * KIB, pool) != 4) return fail("the mapping is not the pool's");
  if (mremap(p, 16 * KIB, 8 * KIB, 0) != p) return fail("mremap shrink");
  if (fault_of(p + 8 * KIB, 0) != SIGSEGV) return fail("the shrunk tail does not fault");
  if (pages_backed_by(p, 8 * KIB, pool) != 2) return fail("the shrunk mapping is not the pool's");
  char* q = mremap(p, 8 * KIB, 24 * KIB, MREMAP_MAYMOVE);
  if (q == MAP_FAILED) return fail("mremap grow");
  if (pages_backed_by(q, 24 * KIB, pool) != 6) return fail("the grown mapping is not the pool's");
  memcpy(q + 20 * KIB, "grown-tail", 10);
  if (!same_as_file(fd, q, 24 * KIB, 0)) return fail("the grown mapping is not the file's");
  char* dst = mmap(NULL, 24 * KIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (dst == MAP_FAILED) return fail("reserve");
  if (mremap(q, 24 * KIB, 24 * KIB, MREMAP_MAYMOVE | MREMAP_FIXED, dst) != dst)
    return fail("mremap to a fixed address");
  if (fault_of(q, 0) != SIGSEGV) return fail("the old address does not fault after the move");
  if (pages_backed_by(dst, 24 * KIB, pool) != 6) return fail("the moved mapping is not the pool's");
  memcpy(dst + 4 * KIB, "moved", 5);
  if (!same_as_file(fd, dst, 24 * KIB, 0)) return fail("the moved mapping is not the file's");
  say("moved");
  if (!wait_line()) return fail("no go-ahead");
  if (munmap(dst, 24 * KIB) != 0) return fail("munmap");
  say("unmapped");
  return wait_line() ? 0 : fail("no go-ahead");
}

static int protects(const char* file, const char* pool) {
  int fd;
  char* p = map_file(file, 8 * KIB, MAP_SHARED, &fd);
  if (p == NULL) return fail("mmap");
  if (mprotect(p, 8 * KIB, PROT_READ) != 0) return fail("mprotect read-only");
  if (fault_of(p, 1) != SIGSEGV) return fail("a store into a read-only mapping does not fault");
  if (fault_of(p, 0) != 0) return fail("a load faults");
  if (pages_backed_by(p, 8 * KIB, pool) != 2) return fail("the mapping is not the pool's");
  if (mprotect(p, 8 * KIB, PROT_READ | PROT_WRITE) != 0) return fail("mprotect read-write");
  memcpy(p + 10, "writable-again", 14);
  if (!same_as_file(fd, p, 8 * KIB, 0)) return fail("a store after mprotect is not the file's");
  char* q = mmap(NULL, 8 * KIB, PROT_READ, MAP_SHARED, fd, 0);
  if (q == MAP_FAILED) return fail("mmap read-only");
  if (pages_backed_by(q, 8 * KIB, pool) != 2) return fail("the read-only mapping is not the pool's");
  if (mprotect(q, 8 * KIB, PROT_READ | PROT_WRITE) != 0) return fail("mprotect of the read-only one");
  if (pages_backed_by(q, 8 * KIB, pool) != 0) return fail("a read-only DAX mapping became writable");
  memcpy(q + 30, "via-kernel-map", 14);
  if (msync(q, 8 * KIB, MS_SYNC) != 0) return fail("msync");
  if (!same_as_file(fd, q, 8 * KIB, 0) || memcmp(p + 30, "via-kernel-map", 14) != 0)
    return fail("a store through the kernel's mapping is not seen");
  say("ok");
  return 0;
}

static int syncs(const char* file, const char* pool) {
  char* p = map_file(file, 8 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 8 * KIB, pool) != 2) return fail("the mapping is not the pool's");
  say("mapped");
  if (!wait_line()) return fail("no go-ahead");
  memcpy(p, "synced", 6);
  if (msync(p, 8 * KIB, MS_SYNC | MS_ASYNC) == 0 || errno != EINVAL)
    return fail("msync(MS_SYNC | MS_ASYNC) is not EINVAL");
  if (msync(p, 8 * KIB, MS_ASYNC) != 0) return fail("msync(MS_ASYNC)");
  if (msync(p, 8 * KIB, MS_SYNC) != 0) return fail("msync(MS_SYNC)");
  say("synced");
  return wait_line() ? 0 : fail("no go-ahead");
}

/* After a break: waits up to 10 s for [p, +len) to stop being the pool's. */
static int pool_pages_go(const char* p, size_t len, const char* pool) {
  for (int i = 0; i < 1000; ++i) {
    if (pages_backed_by(p, len, pool) == 0) return 1;
    usleep(10000);
  }
  return 0;
}

/* The checks of forkbreak after the truncate, for parent and child. */
static int after_forkbreak(int fd, const char* p, const char* pool) {
  if (!pool_pages_go(p, 16 * KIB, pool)) return fail("pool pages still mapped after the break");
  if (memcmp(p + 100, "child", 5) != 0 || memcmp(p + 200, "parent", 6) != 0)
    return fail("a store before the break is lost");
  if (!same_as_file(fd, p, 8 * KIB, 0)) return fail("the mapping is not the file's");
  if (fault_of((char*)p + 8 * KIB, 0) != SIGBUS) return fail("no SIGBUS past the new end");
  return 0;
}

static int forkbreak(const char* file, const char* pool) {
  int fd, up[2], down[2];
  char* p = map_file(file, 16 * KIB, MAP_SHARED, &fd);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 16 * KIB, pool) != 4) return fail("the mapping is not the pool's");
  memcpy(p + 200, "parent", 6);
  if (pipe(up) != 0 || pipe(down) != 0) return fail("pipe");
  const pid_t pid = fork();
  if (pid < 0) return fail("fork");
  char c;
  if (pid == 0) {
    if (pages_backed_by(p, 16 * KIB, pool) != 4) _exit(fail("the child's mapping is not the pool's"));
    memcpy(p + 100, "child", 5);
    if (write(up[1], "s", 1) != 1 || read(down[0], &c, 1) != 1) _exit(fail("pipe"));
    _exit(after_forkbreak(fd, p, pool));
  }
  if (read(up[0], &c, 1) != 1) return fail("the child did not store");
  char line[64];
  snprintf(line, sizeof line, "forked %d", (int)pid);
  say(line);
  if (!wait_line()) return fail("no go-ahead");
  if (write(down[1], "g", 1) != 1) return fail("pipe");
  const int rc = after_forkbreak(fd, p, pool);
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return fail("the child failed");
  if (rc != 0) return rc;
  say("ok");
  return 0;
}

static int execs(const char* file, const char* pool) {
  char* p = map_file(file, 8 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 8 * KIB, pool) != 2) return fail("the mapping is not the pool's");
  memcpy(p, "before-exec", 11);
  say("mapped");
  if (!wait_line()) return fail("no go-ahead");
  char* const argv[] = {"dax_probe", "execd", NULL};
  execv("/proc/self/exe", argv);
  return fail("exec");
}

static int execd(void) {
  say("execd");
  return wait_line() ? 0 : fail("no go-ahead");
}

#define THREADS 4
#define SLOTS (4 * KIB / 8)
static atomic_int stop_threads;

struct storer {
  pthread_t t;
  uint64_t* page;
  uint64_t last; /* the last counter stored */
};

static void* store_loop(void* arg) {
  struct storer* s = arg;
  uint64_t k = 0;
  while (!atomic_load_explicit(&stop_threads, memory_order_relaxed)) {
    ++k;
    __atomic_store_n(&s->page[k % SLOTS], k, __ATOMIC_RELAXED);
  }
  s->last = k;
  return NULL;
}

/* 1 when `page` shows every store of a thread that stored 1..last. */
static int stores_all_there(const uint64_t* page, uint64_t last) {
  for (uint64_t j = 0; j < SLOTS; ++j) {
    /* the largest k in [1, last] with k % SLOTS == j, or 0 */
    const uint64_t want = last >= j ? last - (last - j) % SLOTS : 0;
    if (page[j] != want) return 0;
  }
  return 1;
}

static int threads(const char* file, const char* pool) {
  int fd;
  char* p = map_file(file, 64 * KIB, MAP_SHARED, &fd);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 64 * KIB, pool) != 16) return fail("the mapping is not the pool's");
  struct storer s[THREADS];
  for (int i = 0; i < THREADS; ++i) {
    s[i].page = (uint64_t*)(p + (size_t)i * 4 * KIB);
    s[i].last = 0;
    if (pthread_create(&s[i].t, NULL, store_loop, &s[i]) != 0) return fail("pthread_create");
  }
  usleep(20000);
  say("running");
  if (!wait_line()) return fail("no go-ahead");
  usleep(50000);
  atomic_store(&stop_threads, 1);
  uint64_t total = 0;
  for (int i = 0; i < THREADS; ++i) {
    pthread_join(s[i].t, NULL);
    total += s[i].last;
  }
  if (pages_backed_by(p, 64 * KIB, pool) != 0) return fail("pool pages still mapped after the break");
  static uint64_t page[SLOTS];
  for (int i = 0; i < THREADS; ++i) {
    if (!stores_all_there(s[i].page, s[i].last)) return fail("the mapping lost a store");
    if (pread(fd, page, sizeof page, (off_t)i * 4 * KIB) != (ssize_t)sizeof page ||
        !stores_all_there(page, s[i].last))
      return fail("the file lost a store");
  }
  char line[64];
  snprintf(line, sizeof line, "ok %llu", (unsigned long long)total);
  say(line);
  return 0;
}

static int holefill(const char* file, const char* pool) {
  const int fd = open(file, O_RDWR);
  if (fd < 0) return fail("open");
  char* ro = mmap(NULL, 16 * KIB, PROT_READ, MAP_SHARED, fd, 0);
  if (ro == MAP_FAILED) return fail("mmap read-only");
  if (pages_backed_by(ro, 16 * KIB, pool) != 1) return fail("the read-only mapping is not DAX");
  char* rw = mmap(NULL, 16 * KIB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (rw == MAP_FAILED) return fail("mmap read-write");
  if (pages_backed_by(rw, 16 * KIB, pool) != 4) return fail("the writable mapping is not DAX");
  if (pages_backed_by(ro, 16 * KIB, pool) != 0)
    return fail("the read-only mapping still shows holes");
  if (!all_bytes(ro, 4 * KIB, 'H') || !all_bytes(ro + 4 * KIB, 12 * KIB, '\0'))
    return fail("the read-only mapping does not read the file");
  memcpy(rw + 8 * KIB, "filled", 6);
  say("ok");
  return 0;
}

static int fixedover(const char* file, const char* pool) {
  char* p = map_file(file, 16 * KIB, MAP_SHARED, NULL);
  if (p == NULL) return fail("mmap");
  if (pages_backed_by(p, 16 * KIB, pool) != 4) return fail("the mapping is not the pool's");
  const int anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
  if (mmap(p, 16 * KIB, PROT_READ | PROT_WRITE, anon, -1, 0) != p)
    return fail("mmap(MAP_FIXED) over the DAX mapping");
  memset(p, 'Z', 16 * KIB);
  say("replaced");
  if (!wait_line()) return fail("no go-ahead");
  /* Page by page, so that a file mapped over it (SIGBUS past its end) is
   * caught at its first page. */
  for (size_t off = 0; off < 16 * KIB; off += 4 * KIB) {
    if (pages_backed_by(p + off, 4 * KIB, pool) != 0 ||
        pages_backed_by(p + off, 4 * KIB, file) != 0)
      return fail("the program's anonymous memory was replaced");
    if (!all_bytes(p + off, 4 * KIB, 'Z')) return fail("the program's bytes changed");
  }
  say("ok");
  return munmap(p, 16 * KIB) == 0 ? 0 : fail("munmap");
}

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "execd") == 0) return execd();
  if (argc != 4) {
    fprintf(stderr, "usage: dax_probe MODE FILE POOL (see its first comment)\n");
    return 2;
  }
  const char* mode = argv[1];
  if (strcmp(mode, "coherence") == 0) return coherence(argv[2], argv[3]);
  if (strcmp(mode, "break") == 0) return breaks(argv[2], argv[3]);
  if (strcmp(mode, "private") == 0) return private_map(argv[2], argv[3]);
  if (strcmp(mode, "plain") == 0) return plain(argv[2], argv[3]);
  if (strcmp(mode, "fork") == 0) return forks(argv[2], argv[3]);
  if (strcmp(mode, "selftruncate") == 0) return selftruncate(argv[2], argv[3]);
  if (strcmp(mode, "munmap") == 0) return unmaps(argv[2], argv[3]);
  if (strcmp(mode, "mremap") == 0) return remaps(argv[2], argv[3]);
  if (strcmp(mode, "mprotect") == 0) return protects(argv[2], argv[3]);
  if (strcmp(mode, "msync") == 0) return syncs(argv[2], argv[3]);
  if (strcmp(mode, "forkbreak") == 0) return forkbreak(argv[2], argv[3]);
  if (strcmp(mode, "exec") == 0) return execs(argv[2], argv[3]);
  if (strcmp(mode, "threads") == 0) return threads(argv[2], argv[3]);
  if (strcmp(mode, "holefill") == 0) return holefill(argv[2], argv[3]);
  if (strcmp(mode, "fixedover") == 0) return fixedover(argv[2], argv[3]);
  fprintf(stderr, "dax_probe: unknown mode %s\n", mode);
  return 2;
}
