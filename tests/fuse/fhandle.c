/* fhandle: name_to_handle_at(2) and open_by_handle_at(2) from the command
 * line, for tests/fuse/handles_test.cc (docs/handles.md). One line out:
 *
 *   fhandle [-u UID [-c]] name PATH
 *       "TYPE HEX": the handle's type and bytes, or "ERR ENAME"
 *   fhandle [-u UID [-c]] open MOUNTDIR TYPE HEX [w]
 *       opens the handle with MOUNTDIR's mount, read-only (w: write-only):
 *       "OK ino=N path=P data=D" (P: the descriptor's path as /proc shows
 *       it; D: the first 200 bytes of a regular file opened for reading,
 *       \xHH for bytes that are not printable), or "ERR ENAME"
 *
 * -u UID runs the call as that user and group, with no supplementary
 * groups; -c keeps CAP_DAC_READ_SEARCH (what open_by_handle_at asks for)
 * and no other capability. The program must start as root for either.
 * Exit status 0, or 2 for a bad command line or a failed switch of
 * credentials.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int err_line(void) {
  const char* name = strerrorname_np(errno);
  if (name)
    printf("ERR %s\n", name);
  else
    printf("ERR errno %d\n", errno);
  return 0;
}

/* Becomes user `uid_text`; with `keep_cap`, keeps CAP_DAC_READ_SEARCH
 * (effective and permitted) and nothing else. */
static int become(const char* uid_text, int keep_cap) {
  char* end = NULL;
  const long uid = strtol(uid_text, &end, 10);
  if (*end != '\0' || uid < 0) return -1;
  if (setgroups(0, NULL) != 0) return -1;
  if (keep_cap && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return -1;
  if (setresgid((gid_t)uid, (gid_t)uid, (gid_t)uid) != 0) return -1;
  if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) return -1;
  if (!keep_cap) return 0;
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  data[0].effective = data[0].permitted = 1u << CAP_DAC_READ_SEARCH;
  return (int)syscall(SYS_capset, &header, data);
}

static int name_handle(const char* path) {
  struct file_handle* fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
  int mount_id = 0;
  if (!fh) return 2;
  fh->handle_bytes = MAX_HANDLE_SZ;
  if (name_to_handle_at(AT_FDCWD, path, fh, &mount_id, 0) != 0) {
    free(fh);
    return err_line();
  }
  printf("%d ", fh->handle_type);
  for (unsigned i = 0; i < fh->handle_bytes; ++i) printf("%02x", fh->f_handle[i]);
  printf("\n");
  free(fh);
  return 0;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static void print_data(int fd) {
  unsigned char buf[200];
  const ssize_t n = pread(fd, buf, sizeof buf, 0);
  for (ssize_t i = 0; i < n; ++i) {
    if (buf[i] >= 0x20 && buf[i] < 0x7f && buf[i] != '\\')
      putchar(buf[i]);
    else
      printf("\\x%02x", buf[i]);
  }
}

static int open_handle_with(const char* mount_dir, struct file_handle* fh, int flags) {
  const int mfd = open(mount_dir, O_RDONLY | O_DIRECTORY);
  if (mfd < 0) return err_line();
  const int fd = open_by_handle_at(mfd, fh, flags);
  if (fd < 0) {
    const int rc = err_line();
    close(mfd);
    return rc;
  }
  struct stat st;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  path[n < 0 ? 0 : n] = '\0';
  int rc = 0;
  if (fstat(fd, &st) != 0) {
    rc = err_line();
  } else {
    printf("OK ino=%llu path=%s data=", (unsigned long long)st.st_ino, path);
    if (S_ISREG(st.st_mode) && flags == O_RDONLY) print_data(fd);
    printf("\n");
  }
  close(fd);
  close(mfd);
  return rc;
}

/* The handle is decoded into memory this function owns and frees on every
 * path (the sanitizer pass counts a leak in a test's helper as a failure). */
static int open_handle(const char* mount_dir, const char* type, const char* hex, int flags) {
  const size_t len = strlen(hex);
  if (len % 2 != 0) return 2;
  struct file_handle* fh = malloc(sizeof(*fh) + len / 2 + 1);
  if (!fh) return 2;
  fh->handle_bytes = (unsigned)(len / 2);
  fh->handle_type = atoi(type);
  int rc = 0;
  for (size_t i = 0; i < len / 2 && rc == 0; ++i) {
    const int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      rc = 2;
    else
      fh->f_handle[i] = (unsigned char)(hi << 4 | lo);
  }
  if (rc == 0) rc = open_handle_with(mount_dir, fh, flags);
  free(fh);
  return rc;
}

int main(int argc, char** argv) {
  int i = 1;
  if (argc > 2 && strcmp(argv[1], "-u") == 0) {
    const int keep_cap = argc > 3 && strcmp(argv[3], "-c") == 0;
    if (become(argv[2], keep_cap) != 0) {
      perror("fhandle: switching credentials");
      return 2;
    }
    i = keep_cap ? 4 : 3;
  }
  if (argc == i + 2 && strcmp(argv[i], "name") == 0) return name_handle(argv[i + 1]);
  if (argc == i + 4 && strcmp(argv[i], "open") == 0)
    return open_handle(argv[i + 1], argv[i + 2], argv[i + 3], O_RDONLY);
  if (argc == i + 5 && strcmp(argv[i], "open") == 0 && strcmp(argv[i + 4], "w") == 0)
    return open_handle(argv[i + 1], argv[i + 2], argv[i + 3], O_WRONLY);
  fprintf(stderr, "usage: fhandle [-u UID [-c]] name PATH | open MOUNTDIR TYPE HEX [w]\n");
  return 2;
}
