// What every leasefs ioctl handler needs of its argument: the kernel passes
// restricted ioctls with the command's encoded size, but a caller can encode
// any size in a number of its own making, so each handler copies its struct
// only when the size is exactly its own.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "engine/layout.h"

namespace leasefs::daemon::ioctl_args {

inline constexpr uint64_t kBlock = layout::kBlockSize;
// The largest file offset a caller may name (off_t's range).
inline constexpr uint64_t kMaxOff = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

// Copies the ioctl's input into *out if it is exactly a T.
template <typename T>
bool ReadArg(const void* in, size_t in_size, T* out) {
  if (in_size != sizeof(T) || in == nullptr) return false;
  std::memcpy(out, in, sizeof(T));
  return true;
}

}  // namespace leasefs::daemon::ioctl_args
