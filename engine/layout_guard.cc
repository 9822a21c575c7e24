// Names of layout changes, for logs and for the lease layer's events.
#include "engine/layout_guard.h"

namespace leasefs::engine {

const char* ToString(LayoutChangeKind kind) {
  switch (kind) {
    case LayoutChangeKind::kUnmap:
      return "unmap";
    case LayoutChangeKind::kAllocatingWrite:
      return "allocating-write";
    case LayoutChangeKind::kOverwrite:
      return "overwrite";
  }
  return "unknown";
}

}  // namespace leasefs::engine
