#include "tests/support/needs.h"

#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include <sys/stat.h>

namespace leasefs::testing {

namespace {

bool Present(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return false;
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) return true;
  return S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

}  // namespace

std::string UnmetNeeds() {
  const char* needs = std::getenv("LEASEFS_TEST_NEEDS");
  std::istringstream in(needs ? needs : "");
  std::string missing;
  for (std::string path; in >> path;) {
    if (!Present(path)) missing += (missing.empty() ? "needs " : ", ") + path;
  }
  return missing;
}

}  // namespace leasefs::testing
