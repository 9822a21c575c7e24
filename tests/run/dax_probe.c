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
 * Exit status: 0 when every check held, 1 otherwise (with the reason on
 * stderr), 2 for usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: dax_probe coherence|break|private|plain|fork FILE POOL\n");
    return 2;
  }
  const char* mode = argv[1];
  if (strcmp(mode, "coherence") == 0) return coherence(argv[2], argv[3]);
  if (strcmp(mode, "break") == 0) return breaks(argv[2], argv[3]);
  if (strcmp(mode, "private") == 0) return private_map(argv[2], argv[3]);
  if (strcmp(mode, "plain") == 0) return plain(argv[2], argv[3]);
  if (strcmp(mode, "fork") == 0) return forks(argv[2], argv[3]);
  fprintf(stderr, "dax_probe: unknown mode %s\n", mode);
  return 2;
}
