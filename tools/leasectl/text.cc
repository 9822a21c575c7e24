#include "tools/leasectl/text.h"

#include <fmt/core.h>

namespace leasefs::leasectl {

std::string Plural(uint64_t n, const char* one) {
  return fmt::format("{} {}{}", n, one, n == 1 ? "" : "s");
}

}  // namespace leasefs::leasectl
