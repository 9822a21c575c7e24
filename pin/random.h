// Unguessable bytes for the credentials pin/ hands out (rkeys, context
// tokens), from the kernel's generator.
#pragma once

#include <sys/random.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace leasefs::pin {

// Fills p[0, n) (a signal may interrupt the kernel; it asks again).
// Errors: the errno of getrandom.
inline Status RandomBytes(void* p, size_t n) {
  auto* out = static_cast<uint8_t*>(p);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = getrandom(out + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("getrandom");
    }
    got += static_cast<size_t>(r);
  }
  return Status::Ok();
}

}  // namespace leasefs::pin
