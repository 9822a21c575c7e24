// See mmap_model.h.
#include "tests/fuse/mmap_model.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "leasefs/ioctl.h"

namespace leasefs::testing {

namespace {
constexpr size_t B = RandomRun::kBlock;
size_t Blocks(size_t bytes) { return bytes / B; }
}  // namespace

Mapping::Mapping(int fd, size_t len) : len_(len) {
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  err_ = p == MAP_FAILED ? errno : 0;
  p_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

Mapping::~Mapping() {
  if (p_ != nullptr) munmap(p_, len_);
}

std::string Str(const char* p, size_t n) { return std::string(p, n); }

int Range(int fd, unsigned long cmd, uint64_t off, uint64_t len) {
  leasefs_range r{};
  r.offset = off;
  r.length = len;
  return ioctl(fd, cmd, &r) == 0 ? 0 : errno;
}

int Clone(int src, uint64_t src_off, uint64_t len, int dest, uint64_t dest_off) {
  leasefs_clone_range c{};
  c.src_fd = src;
  c.src_offset = src_off;
  c.src_length = len;
  c.dest_offset = dest_off;
  return ioctl(dest, LEASEFS_IOC_CLONE_RANGE, &c) == 0 ? 0 : errno;
}

void Model::Write(size_t off, const std::string& d) {
  if (data_.size() < off + d.size()) data_.resize(off + d.size(), '\0');
  data_.replace(off, d.size(), d);
}

void Model::Punch(size_t off, size_t len) {
  if (off >= data_.size()) return;
  len = std::min(len, data_.size() - off);
  data_.replace(off, len, std::string(len, '\0'));
}

RandomRun::RandomRun(const std::string& dir, uint64_t seed)
    : rng_(seed),
      fd_(open((dir + "/r").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644)),
      check_(open((dir + "/r").c_str(), O_RDONLY)),
      other_(open((dir + "/o").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644)) {
  other_data_ = Pattern(kMaxSize, seed ^ 0x55);
  PwriteAll(other_.get(), other_data_, 0);
  Remap();
}

std::string RandomRun::Step(int i) {
  std::string what = Do();
  std::ostringstream at;
  at << "step " << i << " (" << what << ")";
  if (map_->get() == nullptr) return at.str() + ": mmap failed";
  struct stat st{};
  fstat(check_.get(), &st);  // as a program learns a size another process set
  if (static_cast<size_t>(st.st_size) != model_.size())
    return at.str() + ": size " + std::to_string(st.st_size) + " want " +
           std::to_string(model_.size());
  if (std::string d = Diff(PreadAll(check_.get(), kMaxSize * 2, 0), model_.data()); !d.empty())
    return at.str() + ": read: " + d;
  if (std::string d = Diff(Str(map_->get(), model_.size()), model_.data()); !d.empty())
    return at.str() + ": mapping: " + d;
  return "";
}

size_t RandomRun::Below(size_t n) {
  return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
}

void RandomRun::Remap() {
  map_.reset();  // the old one goes first, as munmap then mmap would
  map_ = std::make_unique<Mapping>(fd_.get(), kCap);
}

std::string RandomRun::Do() {
  const size_t size = model_.size();
  std::ostringstream w;
  switch (Below(11)) {
    case 0: {  // a store through the mapping, inside the file
      if (size == 0) return "nothing";
      const size_t off = Below(size), len = 1 + Below(std::min<size_t>(size - off, 3 * B));
      const std::string d = Pattern(len, rng_());
      std::memcpy(map_->get() + off, d.data(), len);
      model_.Write(off, d);
      w << "mapped write " << off << "+" << len;
      break;
    }
    case 1: {  // a load through the mapping
      const size_t off = Below(size + 1), len = Below(size - off + 1);
      w << "mapped read " << off << "+" << len;
      if (Str(map_->get() + off, len) != model_.data().substr(off, len)) w << " MISMATCH";
      break;
    }
    case 2: {  // pwrite, sometimes extending the file
      const size_t off = Below(std::min(size + 2 * B, kMaxSize - 3 * B));
      const size_t len = 1 + Below(3 * B);
      const std::string d = Pattern(len, rng_());
      PwriteAll(fd_.get(), d, static_cast<off_t>(off));
      model_.Write(off, d);
      w << "pwrite " << off << "+" << len;
      break;
    }
    case 3: {  // pread
      const size_t off = Below(size + 1), len = Below(size - off + 1);
      w << "pread " << off << "+" << len;
      if (PreadAll(fd_.get(), len, static_cast<off_t>(off)) != model_.data().substr(off, len))
        w << " MISMATCH";
      break;
    }
    case 4: {  // ftruncate, growing or shrinking
      const size_t n = Below(kMaxSize);
      w << "ftruncate " << n << " " << Err(ftruncate(fd_.get(), static_cast<off_t>(n)));
      model_.Truncate(n);
      break;
    }
    case 5: {  // punch a hole
      const size_t off = Below(size + 1), len = 1 + Below(4 * B);
      w << "punch " << off << "+" << len << " "
        << Err(fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         static_cast<off_t>(off), static_cast<off_t>(len)));
      model_.Punch(off, len);
      break;
    }
    case 6: {  // collapse whole blocks inside the file
      if (Blocks(size) < 2) return "nothing";
      const size_t off = Below(Blocks(size) - 1) * B;
      const size_t len = (1 + Below(Blocks(size) - off / B - 1)) * B;
      if (off + len >= size) return "nothing";
      w << "collapse " << off << "+" << len << " "
        << ErrnoName(Range(fd_.get(), LEASEFS_IOC_COLLAPSE_RANGE, off, len));
      model_.Collapse(off, len);
      break;
    }
    case 7: {  // insert whole blocks
      const size_t len = (1 + Below(4)) * B;
      if (Blocks(size) == 0 || size + len > kMaxSize) return "nothing";
      const size_t off = Below(Blocks(size)) * B;
      w << "insert " << off << "+" << len << " "
        << ErrnoName(Range(fd_.get(), LEASEFS_IOC_INSERT_RANGE, off, len));
      model_.Insert(off, len);
      break;
    }
    case 8: {  // clone whole blocks of the other file in
      const size_t len = (1 + Below(6)) * B;
      const size_t src = Below(Blocks(kMaxSize) - 6) * B;
      const size_t dest = Below(std::min(Blocks(size), Blocks(kMaxSize) - 6) + 1) * B;
      w << "clone " << src << "+" << len << "->" << dest << " "
        << ErrnoName(Clone(other_.get(), src, len, fd_.get(), dest));
      model_.Write(dest, other_data_.substr(src, len));
      break;
    }
    case 9: {  // copy_file_range from the other file, any alignment
      const size_t len = 1 + Below(3 * B), src = Below(kMaxSize - len);
      const size_t dest = Below(std::min(size + B, kMaxSize - len));
      loff_t s = static_cast<loff_t>(src), d = static_cast<loff_t>(dest);
      const ssize_t n = copy_file_range(other_.get(), &s, fd_.get(), &d, len, 0);
      w << "copy_file_range " << src << "+" << len << "->" << dest << " " << n;
      model_.Write(dest, other_data_.substr(src, static_cast<size_t>(std::max<ssize_t>(n, 0))));
      break;
    }
    default:
      Remap();
      w << "remap";
      break;
  }
  return w.str();
}

}  // namespace leasefs::testing
