/* leasefs-nsop: the namespace calls no Debian tool makes, for the mounted
 * tests (tests/fuse/tmpfile_test.cc, overlay_test.cc) to run as a real child
 * process, as root or as any user.
 *
 *   leasefs-nsop rename2 FROM TO FLAGS
 *       renameat2(2); FLAGS is a '|'-list of noreplace, exchange, whiteout,
 *       or a number. Prints "OK" or the errno's name (EEXIST, ...).
 *   leasefs-nsop tmpfile DIR [OPTION...]
 *       open(DIR, O_TMPFILE | O_RDWR [| O_EXCL], mode), then each OPTION in
 *       order, one output line per step ("open OK", "nlink 0", "link
 *       EACCES", ...):
 *         excl          (before the open) add O_EXCL
 *         mode=OCTAL    (before the open) the mode; default 0600
 *         write=TEXT    write TEXT at the current offset
 *         nlink         print the file's link count (fstat)
 *         link-empty=P  linkat(fd, "", AT_FDCWD, P, AT_EMPTY_PATH)
 *         link-proc=P   linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, P,
 *                       AT_SYMLINK_FOLLOW)
 *         rename-over=P:Q  renameat2(P, Q, 0): the usual "write a temporary
 *                       file, link it, rename it over the old one"
 *         wait          print "waiting", then block until stdin closes
 *                       (the test keeps the file open meanwhile)
 *       Exits 0 when every step ran, whatever its errno.
 *   leasefs-nsop btime PATH
 *       statx(2) asking for STATX_BTIME: prints "btime SEC.NSEC" or
 *       "no btime", or the errno's name.
 *
 * Exit status: 0 when the calls ran (their results are in the output), 2 for
 * a usage error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif

static const char* ErrName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E?";
}

static int Usage(void) {
  fprintf(stderr, "usage: leasefs-nsop rename2 FROM TO FLAGS | tmpfile DIR [OPTION...] | "
                  "btime PATH\n");
  return 2;
}

/* Parses "noreplace|whiteout" or a number into *flags. */
static int ParseFlags(const char* s, unsigned* flags) {
  char* copy = strdup(s);
  char* save = NULL;
  *flags = 0;
  for (char* t = strtok_r(copy, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
    if (strcmp(t, "noreplace") == 0) {
      *flags |= RENAME_NOREPLACE;
    } else if (strcmp(t, "exchange") == 0) {
      *flags |= RENAME_EXCHANGE;
    } else if (strcmp(t, "whiteout") == 0) {
      *flags |= RENAME_WHITEOUT;
    } else {
      char* end = NULL;
      unsigned long v = strtoul(t, &end, 0);
      if (*t == '\0' || *end != '\0') {
        free(copy);
        return -1;
      }
      *flags |= (unsigned)v;
    }
  }
  free(copy);
  return 0;
}

static long Rename2(const char* from, const char* to, unsigned flags) {
  return syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
}

static void Report(const char* step, long rc) {
  printf("%s%s%s\n", step, *step ? " " : "", rc == -1 ? ErrName(errno) : "OK");
}

static int CmdRename2(int argc, char** argv) {
  unsigned flags;
  if (argc != 5 || ParseFlags(argv[4], &flags) != 0) return Usage();
  Report("", Rename2(argv[2], argv[3], flags));
  return 0;
}

/* One OPTION of the tmpfile command on open file `fd`. */
static int TmpfileStep(int fd, const char* opt) {
  if (strncmp(opt, "write=", 6) == 0) {
    const char* text = opt + 6;
    ssize_t n = write(fd, text, strlen(text));
    Report("write", n == (ssize_t)strlen(text) ? 0 : -1);
  } else if (strcmp(opt, "nlink") == 0) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      Report("nlink", -1);
    } else {
      printf("nlink %lu\n", (unsigned long)st.st_nlink);
    }
  } else if (strncmp(opt, "link-empty=", 11) == 0) {
    Report("link", linkat(fd, "", AT_FDCWD, opt + 11, AT_EMPTY_PATH));
  } else if (strncmp(opt, "link-proc=", 10) == 0) {
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    Report("link", linkat(AT_FDCWD, proc, AT_FDCWD, opt + 10, AT_SYMLINK_FOLLOW));
  } else if (strncmp(opt, "rename-over=", 12) == 0) {
    char* pair = strdup(opt + 12);
    char* colon = strchr(pair, ':');
    if (!colon) {
      free(pair);
      return -1;
    }
    *colon = '\0';
    Report("rename", Rename2(pair, colon + 1, 0));
    free(pair);
  } else if (strcmp(opt, "wait") == 0) {
    printf("waiting\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
  } else {
    return -1;
  }
  fflush(stdout);
  return 0;
}

static int CmdTmpfile(int argc, char** argv) {
  if (argc < 3) return Usage();
  int flags = O_TMPFILE | O_RDWR;
  mode_t mode = 0600;
  int first = 3;
  for (; first < argc; ++first) {
    if (strcmp(argv[first], "excl") == 0) {
      flags |= O_EXCL;
    } else if (strncmp(argv[first], "mode=", 5) == 0) {
      mode = (mode_t)strtoul(argv[first] + 5, NULL, 8);
    } else {
      break;
    }
  }
  int fd = open(argv[2], flags, mode);
  Report("open", fd);
  fflush(stdout);
  if (fd < 0) return 0;
  for (int i = first; i < argc; ++i)
    if (TmpfileStep(fd, argv[i]) != 0) return Usage();
  close(fd);
  return 0;
}

static int CmdBtime(int argc, char** argv) {
  if (argc != 3) return Usage();
  struct statx sx;
  memset(&sx, 0, sizeof(sx));
  if (statx(AT_FDCWD, argv[2], AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &sx) != 0) {
    printf("%s\n", ErrName(errno));
  } else if (!(sx.stx_mask & STATX_BTIME)) {
    printf("no btime\n");
  } else {
    printf("btime %lld.%09u\n", (long long)sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  if (strcmp(argv[1], "rename2") == 0) return CmdRename2(argc, argv);
  if (strcmp(argv[1], "tmpfile") == 0) return CmdTmpfile(argc, argv);
  if (strcmp(argv[1], "btime") == 0) return CmdBtime(argc, argv);
  return Usage();
}
