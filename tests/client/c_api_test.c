/* The C API of the lease client library, compiled as C: the header must be
 * plain C, and every call must answer a file that is not on leasefs with
 * -ENOTTY and a bad descriptor with -EBADF (no mount needed: suite 'unit'). */
#define _POSIX_C_SOURCE 200809L  /* mkstemp */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lease/client/leasefs_dax.h"
#include "lease/client/leasefs_lease.h"

static int failures;

static void expect(const char* what, int got, int want) {
  if (got == want) return;
  fprintf(stderr, "%s: got %d, want %d\n", what, got, want);
  ++failures;
}

int main(void) {
  char path[] = "/tmp/leasefs-c-api-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    perror("mkstemp");
    return 1;
  }
  unlink(path);
  uint32_t version = 0;
  uint64_t features = 0, id = 0, lost = 0;
  struct leasefs_lease_info info;
  struct leasefs_event events[2];
  size_t count = 0;
  int more = 0;
  expect("abi_version", leasefs_abi_version(fd, &version, &features), -ENOTTY);
  expect("set_lease", leasefs_set_lease(fd, 0, 0, LEASEFS_LEASE_READ, 0, 0, 0, &id), -ENOTTY);
  expect("convert_lease", leasefs_convert_lease(fd, 1, 0, 0, LEASEFS_LEASE_READ, 0, 0, 0), -ENOTTY);
  expect("release_lease", leasefs_release_lease(fd, 0, 4096), -ENOTTY);
  expect("release_all", leasefs_release_all(fd), -ENOTTY);
  expect("get_lease", leasefs_get_lease(fd, 0, &info), -ENOTTY);
  expect("list_leases", leasefs_list_leases(fd, 0, &info, 1, &count, &more), -ENOTTY);
  expect("read_events", leasefs_read_events(fd, 0, 0, events, 2, &count, &lost), -ENOTTY);
  expect("abi_version(-1)", leasefs_abi_version(-1, NULL, NULL), -EBADF);
  expect("set_lease(-1)", leasefs_set_lease(-1, 0, 0, LEASEFS_LEASE_READ, 0, 0, 0, NULL), -EBADF);
  struct leasefs_dax_mapping m;
  expect("dax_map", leasefs_dax_map(fd, 0, 4096, PROT_READ, MAP_SHARED, NULL, &m), -ENOTTY);
  expect("dax_confirm", leasefs_dax_confirm(fd, 0), -ENOTTY);
  expect("dax_pool_fd", leasefs_dax_pool_fd(fd, 0), -ENOTTY);
  expect("dax_map(-1)", leasefs_dax_map(-1, 0, 4096, PROT_READ, MAP_SHARED, NULL, &m), -EBADF);
  close(fd);
  return failures == 0 ? 0 : 1;
}
