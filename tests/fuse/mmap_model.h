// The randomized model run of shared mappings (docs/mmap.md, "Tests"): ops on
// one file through a descriptor and a shared mapping of it, every byte
// checked against an in-memory model after every step. Used by
// tests/fuse/mmap_test.cc (plain mmap on a test mount) and by
// tests/run/mmap_model_main.cc (the same run as a program of its own, under
// leasefs-run, where the mapping is DAX).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {

// A shared read-write mapping of `len` bytes of `fd`; unmapped on scope exit.
class Mapping {
 public:
  Mapping(int fd, size_t len);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  char* get() const { return p_; }
  int err() const { return err_; }

 private:
  char* p_ = nullptr;
  size_t len_;
  int err_ = 0;
};

std::string Str(const char* p, size_t n);

// A leasefs range ioctl (LEASEFS_IOC_COLLAPSE_RANGE, _INSERT_RANGE...) on
// `fd`: 0 or errno.
int Range(int fd, unsigned long cmd, uint64_t off, uint64_t len);
// LEASEFS_IOC_CLONE_RANGE of src [src_off, +len) to dest at dest_off: 0 or errno.
int Clone(int src, uint64_t src_off, uint64_t len, int dest, uint64_t dest_off);

// The file's bytes as they must be.
class Model {
 public:
  void Write(size_t off, const std::string& d);
  void Truncate(size_t n) { data_.resize(n, '\0'); }
  void Punch(size_t off, size_t len);
  void Collapse(size_t off, size_t len) { data_.erase(off, len); }
  void Insert(size_t off, size_t len) { data_.insert(off, std::string(len, '\0')); }
  const std::string& data() const { return data_; }
  size_t size() const { return data_.size(); }

 private:
  std::string data_;
};

// One randomized run: ops on file `dir`/r through `fd` and a mapping of
// kCap bytes, the model checked through another descriptor and the mapping
// after every step. `dir`/o is the source of clones and copies.
class RandomRun {
 public:
  static constexpr size_t kBlock = 4096;
  static constexpr size_t kCap = 1 << 20;             // the mapping's length
  static constexpr size_t kMaxSize = 96 * kBlock;     // the file never grows past this

  RandomRun(const std::string& dir, uint64_t seed);

  // Step `i`: one random op, then the checks. Returns "" or the step and
  // difference that failed.
  std::string Step(int i);
  // The mapping (null if mmap failed) and the file's size as the model has it.
  const char* mapping() const { return map_->get(); }
  size_t size() const { return model_.size(); }
  // munmap, then mmap again (also one of the random ops).
  void Remap();

 private:
  size_t Below(size_t n);
  std::string Do();

  std::mt19937_64 rng_;
  Fd fd_, check_, other_;
  std::string other_data_;
  Model model_;
  std::unique_ptr<Mapping> map_;
};

}  // namespace leasefs::testing
