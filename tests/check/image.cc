#include "tests/check/image.h"

#include <dirent.h>
#include <xxhash.h>

#include <cstring>
#include <stdexcept>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/format.h"
#include "engine/superblock.h"

namespace leasefs::testing {

using namespace layout;

namespace {

void Require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

}  // namespace

Image::Image(size_t bytes) : Image(bytes, engine::FormatOptions{}) {}

Image::Image(size_t bytes, const engine::FormatOptions& fo)
    : media_(engine::SimMedia::Create(bytes)) {
  Require(engine::Format(*media_, fo).ok(), "format");
  std::memcpy(&sb_, media_->base(), sizeof(sb_));
  next_block_ = sb_.data_start;
}

void Image::SetMarks(uint64_t inodes, uint64_t refcount_blocks) {
  for (uint64_t copy : {0, 1}) {
    super(copy)->inode_mark = engine::EncodeMark(sb_, engine::kInodeMarkField, inodes);
    super(copy)->refcount_mark =
        engine::EncodeMark(sb_, engine::kRefcountMarkField, refcount_blocks);
  }
}

namespace {

// The marks a pool holds (a fresh SimMedia is zero past them: nothing
// needs zeroing when they rise).
engine::Marks MarksOf(const char* pool, const Superblock& sb) {
  const engine::MarkCopies c = engine::ReadMarkCopies(pool, sb);
  return {c.inode_mark().value_or(sb.inode_count), c.refcount_mark().value_or(sb.refcount_blocks)};
}

}  // namespace

Image::Image(std::unique_ptr<engine::SimMedia> media) : media_(std::move(media)) {
  std::memcpy(&sb_, media_->base(), sizeof(sb_));
  next_block_ = sb_.total_blocks;  // nothing is known to be free
}

Image Image::Load(const std::vector<char>& bytes) {
  return Image(engine::SimMedia::FromImage(bytes));
}

Superblock* Image::super(uint64_t copy) { return reinterpret_cast<Superblock*>(block(copy)); }

Inode* Image::inode(uint64_t ino) { return reinterpret_cast<Inode*>(block(sb_.inode_start)) + ino; }

char* Image::block(uint64_t pool_block) { return base() + pool_block * kBlockSize; }

uint32_t* Image::refcount(uint64_t pool_block) {
  return reinterpret_cast<uint32_t*>(block(sb_.refcount_start)) + (pool_block - sb_.data_start);
}

QuarantineRecord* Image::quarantine(uint64_t index) {
  return reinterpret_cast<QuarantineRecord*>(block(sb_.quarantine_start)) + index;
}

Extent* Image::inline_extent(uint64_t ino, uint32_t slot) {
  return reinterpret_cast<Extent*>(inode(ino)->inline_area) + slot;
}

uint64_t Image::offset(const void* p) const {
  return static_cast<uint64_t>(static_cast<const char*>(p) - media_->base());
}

uint64_t Image::AllocBlocks(uint32_t count) {
  Require(next_block_ + count <= sb_.total_blocks, "out of blocks");
  const uint64_t b = next_block_;
  next_block_ += count;
  const engine::Marks m = MarksOf(base(), sb_);
  const uint64_t need =
      (next_block_ - sb_.data_start + kRefcountsPerBlock - 1) / kRefcountsPerBlock;
  if (sb_.version >= kFormatVersion && need > m.refcount_blocks) SetMarks(m.inodes, need);
  return b;
}

uint64_t Image::NewInode(uint32_t mode) {
  while (next_ino_ < sb_.inode_count && inode(next_ino_)->mode != 0) ++next_ino_;
  Require(next_ino_ < sb_.inode_count, "out of inodes");
  const uint64_t ino = next_ino_++;
  const engine::Marks m = MarksOf(base(), sb_);
  if (sb_.version >= kFormatVersion && ino >= m.inodes)
    SetMarks((ino / kInodesPerBlock + 1) * kInodesPerBlock, m.refcount_blocks);
  Inode* in = inode(ino);
  *in = Inode{};
  in->mode = mode;
  in->atime_ns = in->mtime_ns = in->ctime_ns = in->btime_ns = 1'700'000'000'000'000'000;
  in->generation = 1;
  return ino;
}

uint64_t Image::Mkdir(uint64_t parent, const std::string& name) {
  const uint64_t ino = NewInode(S_IFDIR | 0755);
  inode(ino)->nlink = 2;
  inode(ino)->parent = parent;
  AddEntry(parent, name, ino, DT_DIR);
  ++inode(parent)->nlink;
  return ino;
}

uint64_t Image::Create(uint64_t parent, const std::string& name, uint32_t blocks) {
  const uint64_t ino = NewInode(S_IFREG | 0644);
  Link(parent, name, ino);
  if (blocks != 0) {
    AddExtent(ino, 0, AllocBlocks(blocks), blocks);
    inode(ino)->size = uint64_t{blocks} * kBlockSize;
  }
  return ino;
}

uint64_t Image::Symlink(uint64_t parent, const std::string& name, const std::string& target) {
  const uint64_t ino = NewInode(S_IFLNK | 0777);
  Inode* in = inode(ino);
  in->size = target.size();
  if (target.size() <= kInodeInlineBytes) {
    in->flags = kInodeInlineData;
    std::memcpy(in->inline_area, target.data(), target.size());
  } else {
    const uint64_t b = AllocBlocks(1);
    std::memcpy(block(b), target.data(), target.size());
    AddExtent(ino, 0, b, 1);
  }
  Link(parent, name, ino);
  return ino;
}

uint64_t Image::Mknod(uint64_t parent, const std::string& name, uint32_t mode) {
  const uint64_t ino = NewInode(mode);
  Link(parent, name, ino);
  return ino;
}

void Image::Link(uint64_t dir, const std::string& name, uint64_t ino) {
  AddEntry(dir, name, ino, static_cast<uint8_t>(IFTODT(inode(ino)->mode)));
  ++inode(ino)->nlink;
}

uint64_t Image::FileBlock(uint64_t ino, uint64_t index) {
  auto find = [&](const Extent* slots, uint32_t n) -> uint64_t {
    for (uint32_t i = 0; i < n; ++i) {
      const Extent& e = slots[i];
      if (e.length != 0 && index >= e.file_block && index - e.file_block < e.length)
        return e.pool_block + (index - e.file_block);
    }
    return 0;
  };
  if (uint64_t b = find(inline_extent(ino, 0), kInlineExtents)) return b;
  for (uint64_t c = inode(ino)->extent_block; c != 0;) {
    auto* eb = reinterpret_cast<ExtentBlock*>(block(c));
    if (uint64_t b = find(eb->slots, kExtentsPerBlock)) return b;
    c = eb->header.next_block;
  }
  return 0;
}

uint64_t Image::AddEntry(uint64_t dir, const std::string& name, uint64_t ino, uint8_t type) {
  const uint32_t need = DirEntrySlots(static_cast<uint32_t>(name.size()));
  const uint64_t nblocks = inode(dir)->size / kBlockSize;
  for (uint64_t k = 0;; ++k) {
    uint64_t b;
    if (k < nblocks) {
      b = FileBlock(dir, k);
    } else {
      b = AllocBlocks(1);
      std::memset(block(b), 0, kBlockSize);
      DirBlockHeader h{};
      std::memcpy(h.magic, kDirBlockMagic, sizeof(h.magic));
      h.owner_ino = dir;
      h.block_index = k;
      std::memcpy(block(b), &h, sizeof(h));
      AddExtent(dir, k, b, 1);
      inode(dir)->size += kBlockSize;
    }
    uint32_t run = 0;
    for (uint32_t s = 1; s < kDirSlotsPerBlock;) {
      auto* h = reinterpret_cast<DirEntryHeader*>(block(b) + s * kDirSlotSize);
      if (h->ino != 0) {
        s += h->slot_count;
        run = 0;
        continue;
      }
      ++run;
      ++s;
      if (run < need) continue;
      const uint32_t first = s - run;
      char* at = block(b) + first * kDirSlotSize;
      DirEntryHeader e{
          ino, static_cast<uint8_t>(need), type, static_cast<uint8_t>(name.size()), {}};
      std::memcpy(at, &e, sizeof(e));
      std::memcpy(at + sizeof(e), name.data(), name.size());
      return offset(at);
    }
  }
}

DirEntryHeader* Image::FindEntry(uint64_t dir, const std::string& name) {
  for (uint64_t k = 0; k < inode(dir)->size / kBlockSize; ++k) {
    char* b = block(FileBlock(dir, k));
    for (uint32_t s = 1; s < kDirSlotsPerBlock;) {
      auto* h = reinterpret_cast<DirEntryHeader*>(b + s * kDirSlotSize);
      if (h->ino == 0) {
        ++s;
        continue;
      }
      if (std::string(reinterpret_cast<char*>(h + 1), h->name_len) == name) return h;
      s += h->slot_count;
    }
  }
  return nullptr;
}

Extent* Image::AddExtent(uint64_t ino, uint64_t file_block, uint64_t pool_block, uint32_t length,
                         uint32_t flags) {
  Extent* slot = nullptr;
  for (uint32_t i = 0; i < kInlineExtents && !slot; ++i) {
    if (inline_extent(ino, i)->length == 0) slot = inline_extent(ino, i);
  }
  for (uint64_t c = inode(ino)->extent_block; c != 0 && !slot;) {
    auto* eb = reinterpret_cast<ExtentBlock*>(block(c));
    for (uint32_t i = 0; i < kExtentsPerBlock && !slot; ++i) {
      if (eb->slots[i].length == 0) slot = &eb->slots[i];
    }
    c = eb->header.next_block;
  }
  if (!slot) slot = &reinterpret_cast<ExtentBlock*>(block(AddChainBlock(ino)))->slots[0];
  *slot = Extent{file_block, pool_block, length, flags};
  inode(ino)->blocks += length;
  for (uint32_t i = 0; i < length; ++i) ++*refcount(pool_block + i);
  return slot;
}

uint64_t Image::AddChainBlock(uint64_t ino) {
  const uint64_t b = AllocBlocks(1);
  auto* eb = reinterpret_cast<ExtentBlock*>(block(b));
  std::memset(eb, 0, sizeof(*eb));
  std::memcpy(eb->header.magic, kExtentBlockMagic, sizeof(eb->header.magic));
  eb->header.owner_ino = ino;
  uint64_t* link = &inode(ino)->extent_block;
  while (*link != 0) link = &reinterpret_cast<ExtentBlock*>(block(*link))->header.next_block;
  *link = b;
  ++*refcount(b);
  return b;
}

uint64_t Image::SetXattrs(uint64_t ino,
                          const std::vector<std::pair<std::string, std::string>>& attrs) {
  const uint64_t b = AllocBlocks(1);
  char* p = block(b);
  std::memset(p, 0, kBlockSize);
  XattrBlockHeader h{};
  std::memcpy(h.magic, kXattrBlockMagic, sizeof(h.magic));
  h.owner_ino = ino;
  uint32_t off = sizeof(h);
  for (const auto& [name, value] : attrs) {
    const XattrEntryHeader e{static_cast<uint8_t>(name.size()), 0,
                             static_cast<uint16_t>(value.size())};
    std::memcpy(p + off, &e, sizeof(e));
    std::memcpy(p + off + sizeof(e), name.data(), name.size());
    std::memcpy(p + off + sizeof(e) + name.size(), value.data(), value.size());
    off += (sizeof(e) + name.size() + value.size() + 3) & ~size_t{3};
    ++h.entry_count;
  }
  h.used_bytes = off - sizeof(h);
  std::memcpy(p, &h, sizeof(h));
  inode(ino)->xattr_block = b;
  ++*refcount(b);
  return b;
}

uint32_t Image::AddQuarantine(uint64_t pool_block, uint32_t length, uint64_t map_id) {
  for (uint32_t i = 0;; ++i) {
    if (quarantine(i)->length != 0) continue;
    QuarantineRecord r{};
    r.pool_block = pool_block;
    r.length = length;
    r.map_id = map_id;
    r.ino = 99;
    r.owner_pid = 7;
    *quarantine(i) = r;
    for (uint32_t j = 0; j < length; ++j)
      if (*refcount(pool_block + j) == 0) *refcount(pool_block + j) = 1;
    return i;
  }
}

void Image::CommitWithoutApplying(
    const std::vector<std::pair<uint64_t, std::vector<char>>>& copies) {
  std::vector<char> body;
  for (const auto& [dest, bytes] : copies) {
    JournalRecord rec{kRecCopy, 0, static_cast<uint32_t>(bytes.size()), dest};
    const size_t at = body.size();
    body.resize(at + sizeof(rec) + (bytes.size() + 7) / 8 * 8, 0);
    std::memcpy(body.data() + at, &rec, sizeof(rec));
    std::memcpy(body.data() + at + sizeof(rec), bytes.data(), bytes.size());
  }
  auto* h = reinterpret_cast<JournalHeader*>(block(sb_.journal_start));
  std::memcpy(block(sb_.journal_start + 1), body.data(), body.size());
  JournalHeader n{};
  std::memcpy(n.magic, kJournalMagic, sizeof(n.magic));
  n.seq = h->seq + 1;
  n.body_bytes = body.size();
  n.body_xxh64 = XXH64(body.data(), body.size(), n.seq);
  n.record_count = static_cast<uint32_t>(copies.size());
  n.header_xxh64 = XXH64(&n, offsetof(JournalHeader, header_xxh64), 0);
  *h = n;
}

Tree BuildTree(Image& img) {
  Tree t{};
  t.dir = img.Mkdir(kRootIno, "dir");
  t.file = img.Create(t.dir, "file", 3);
  t.xattr = img.SetXattrs(t.file, {{"user.a", "1"}, {"user.bb", "22"}});
  img.Link(kRootIno, "hard", t.file);
  t.sub = img.Mkdir(t.dir, "sub");
  t.deep = img.Create(t.sub, "deep", 1);
  t.shortlink = img.Symlink(kRootIno, "short", "dir/file");
  t.longlink = img.Symlink(kRootIno, "long", std::string(200, 'x'));
  t.fifo = img.Mknod(kRootIno, "fifo", S_IFIFO | 0600);
  t.chr = img.Mknod(kRootIno, "chr", S_IFCHR | 0600);
  img.inode(t.chr)->rdev = 0x0103;
  t.frag = img.Create(kRootIno, "frag");
  for (uint32_t i = 0; i < 10; ++i) img.AddExtent(t.frag, 2 * i, img.AllocBlocks(1), 1);
  img.AddExtent(t.frag, 40, img.AllocBlocks(2), 2, kExtentUnwritten);
  img.inode(t.frag)->size = 19 * kBlockSize + 100;
  t.chain = img.inode(t.frag)->extent_block;
  t.clone = img.Create(kRootIno, "clone");
  const Extent shared = *img.inline_extent(t.file, 0);
  img.AddExtent(t.clone, 0, shared.pool_block, shared.length);
  img.inode(t.clone)->size = 3 * kBlockSize;
  t.big = img.Mkdir(kRootIno, "big");
  for (int i = 0; i < 70; ++i)
    img.Create(t.big,
               "a-name-long-enough-to-need-two-directory-slots-in-any-case-" + std::to_string(i));
  t.quarantined = img.AllocBlocks(2);
  img.AddQuarantine(t.quarantined, 2);
  return t;
}

check::CheckReport Check(Image& img, bool repair, bool preen) {
  check::CheckOptions opts;
  opts.repair = repair;
  opts.preen = preen;
  auto r = check::CheckPool(img.media(), opts);
  if (!r.ok()) throw std::runtime_error("CheckPool: " + r.status().ToString());
  return *std::move(r);
}

namespace {

std::vector<std::string> Select(const check::CheckReport& r, bool notes) {
  std::vector<std::string> out;
  for (const auto& f : r.findings) {
    if ((f.kind == check::Finding::kNote) == notes) out.push_back(f.where + ": " + f.what);
  }
  return out;
}

}  // namespace

std::vector<std::string> Problems(const check::CheckReport& r) { return Select(r, false); }
std::vector<std::string> Notes(const check::CheckReport& r) { return Select(r, true); }

void ExpectRepaired(Image& img, const std::vector<std::string>& problems) {
  const std::vector<char> before = img.Snapshot();
  const check::CheckReport look = Check(img);
  CHECK(Problems(look) == problems);
  CHECK(look.errors == problems.size());
  CHECK(look.ExitCode() == (problems.empty() ? 0 : 4));
  CHECK(img.Snapshot() == before);  // a check writes nothing

  const check::CheckReport fix = Check(img, /*repair=*/true);
  CHECK(Problems(fix) == problems);
  CHECK(fix.errors == 0);
  CHECK(fix.repaired == problems.size());
  CHECK(fix.ExitCode() == (problems.empty() ? 0 : 1));

  const check::CheckReport again = Check(img);
  CHECK(Problems(again).empty());
  CHECK(again.clean());
}

}  // namespace leasefs::testing
