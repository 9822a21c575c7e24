// The exec calls of libleasefs_run.so: each drops the process's DAX mappings
// first (BeforeExec, shim.h), then calls the real one. glibc's execl*,
// execvp and friends reach execve inside libc, not through the interposable
// symbol, so each has its own interposer.
#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>

#include "tools/run/shim.h"

#define LEASEFS_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using ExecveFn = int (*)(const char*, char* const[], char* const[]);
using ExecvFn = int (*)(const char*, char* const[]);
using FexecveFn = int (*)(int, char* const[], char* const[]);

// The next definition of `name`, resolved on first use into *slot (a race
// resolves it twice, to the same value; no function-local static, whose
// guard would need libstdc++).
template <typename Fn>
Fn Next(Fn* slot, const char* name) {
  Fn fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (fn == nullptr) {
    fn = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
    __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
  }
  return fn;
}

ExecveFn g_execve, g_execvpe;
ExecvFn g_execv, g_execvp;
FexecveFn g_fexecve;

// How many arguments an execl-style call passes after `arg`, the NULL
// excluded (`arg` counted).
size_t CountArgs(const char* arg, va_list ap) {
  size_t n = 0;
  for (const char* a = arg; a != nullptr; a = va_arg(ap, const char*)) ++n;
  return n;
}

// Fills argv[0 .. n] (the last one NULL) from `arg` and `ap`.
void FillArgs(const char* arg, va_list ap, size_t n, char** argv) {
  argv[0] = const_cast<char*>(arg);
  for (size_t i = 1; i < n; ++i) argv[i] = va_arg(ap, char*);
  argv[n] = nullptr;
}

}  // namespace

LEASEFS_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
  leasefs::run::BeforeExec();
  const ExecveFn real = Next(&g_execve, "execve");
  return real(path, argv, envp);
}

LEASEFS_EXPORT int execv(const char* path, char* const argv[]) {
  leasefs::run::BeforeExec();
  const ExecvFn real = Next(&g_execv, "execv");
  return real(path, argv);
}

LEASEFS_EXPORT int execvp(const char* file, char* const argv[]) {
  leasefs::run::BeforeExec();
  const ExecvFn real = Next(&g_execvp, "execvp");
  return real(file, argv);
}

LEASEFS_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
  leasefs::run::BeforeExec();
  const ExecveFn real = Next(&g_execvpe, "execvpe");
  return real(file, argv, envp);
}

LEASEFS_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
  leasefs::run::BeforeExec();
  const FexecveFn real = Next(&g_fexecve, "fexecve");
  return real(fd, argv, envp);
}

// The execl family: the argument vector on the stack (alloca: no malloc on
// the way to an exec, which may follow a fork of a threaded program).
#define LEASEFS_ARGV(arg, ap, argv)                                             \
  va_list count_ap;                                                           \
  va_copy(count_ap, ap);                                                      \
  const size_t argc = CountArgs(arg, count_ap);                               \
  va_end(count_ap);                                                           \
  char** argv = static_cast<char**>(__builtin_alloca((argc + 1) * sizeof(char*))); \
  FillArgs(arg, ap, argc, argv)

LEASEFS_EXPORT int execl(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  LEASEFS_ARGV(arg, ap, argv);
  va_end(ap);
  return execv(path, argv);
}

LEASEFS_EXPORT int execlp(const char* file, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  LEASEFS_ARGV(arg, ap, argv);
  va_end(ap);
  return execvp(file, argv);
}

LEASEFS_EXPORT int execle(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  LEASEFS_ARGV(arg, ap, argv);
  char* const* envp = va_arg(ap, char* const*);
  va_end(ap);
  return execve(path, argv, envp);
}
