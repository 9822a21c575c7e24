// PoolFile: a fresh pool file name in /dev/shm for a test that runs
// mkfs.leasefs itself, removed when the object goes.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <string>

namespace leasefs::testing {

class PoolFile {
 public:
  // `tag` names the test in the file's name: /dev/shm/leasefs-TAG-XXXXXX.
  explicit PoolFile(const std::string& tag = "pool") {
    std::string name = "/dev/shm/leasefs-" + tag + "-XXXXXX";
    const int fd = mkstemp(name.data());
    if (fd < 0) throw std::runtime_error("mkstemp " + name);
    close(fd);
    unlink(name.c_str());  // mkfs.leasefs creates it
    path_ = name;
  }
  ~PoolFile() { unlink(path_.c_str()); }
  PoolFile(const PoolFile&) = delete;
  PoolFile& operator=(const PoolFile&) = delete;

  const std::string& path() const { return path_; }
  // The file's bytes ("" when there is no file).
  std::string Bytes() const {
    std::ifstream in(path_, std::ios::binary | std::ios::ate);
    if (!in) return "";
    std::string bytes(static_cast<size_t>(in.tellg()), '\0');
    in.seekg(0);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return bytes;
  }

 private:
  std::string path_;
};

}  // namespace leasefs::testing
