// In a sanitizer build the programs these tests run under leasefs-run are
// instrumented too, and ASan refuses to start when a preloaded library (the
// shim) comes before its runtime. The shim is uninstrumented and calls on to
// the next mmap, which is ASan's: the order is harmless, so the tests tell
// ASan not to check it, through the environment their children inherit.
#pragma once

#include <cstdlib>
#include <string>

namespace leasefs::testing {

#if defined(__SANITIZE_ADDRESS__)
inline const bool kAsanOrderRelaxed = [] {
  const char* old = std::getenv("ASAN_OPTIONS");
  std::string opts = old != nullptr && *old != '\0' ? std::string(old) + ":" : std::string();
  opts += "verify_asan_link_order=0";
  return setenv("ASAN_OPTIONS", opts.c_str(), 1) == 0;
}();
#endif

}  // namespace leasefs::testing
