// fsck.leasefs: placeholder until the checker lands (issue 2, in progress).
#include <cstdio>
int main() {
  std::fprintf(stderr, "fsck.leasefs: not built yet\n");
  return 8;
}
