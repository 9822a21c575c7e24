// leasefs daemon: placeholder until the FUSE adapter lands (issue 2, in progress).
#include <cstdio>
int main() {
  std::fprintf(stderr, "leasefs: not built yet\n");
  return 1;
}
