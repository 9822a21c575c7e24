// The lazily initialized inode and refcount tables of format version 3
// (docs/pool_format.md "Lazily initialized tables", docs/scaling.md): what
// mkfs initializes and writes, how the marks rise, damaged marks, and the
// upgrade of a version-2 pool.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/check/check.h"
#include "engine/layout.h"
#include "engine/superblock.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;

layout::Superblock SuperOf(const char* pool, uint64_t copy = 0) {
  layout::Superblock sb;
  std::memcpy(&sb, pool + copy * kBlockSize, sizeof(sb));
  return sb;
}

// The marks both copies hold; a damaged copy reads as 0.
std::vector<uint64_t> MarkWords(const char* pool) {
  const MarkCopies c = ReadMarkCopies(pool, SuperOf(pool));
  return {c.inodes[0].value_or(0), c.inodes[1].value_or(0), c.refcount_blocks[0].value_or(0),
          c.refcount_blocks[1].value_or(0)};
}

std::string FsckProblems(Media& m, bool repair = false) {
  check::CheckOptions o;
  o.repair = repair;
  auto r = check::CheckPool(m, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  std::string out;
  for (const auto& f : r->findings)
    if (f.kind != check::Finding::kNote) out += f.ToString() + "\n";
  return out;
}

// A sparse pool file in /dev/shm, removed when the test ends.
struct SparsePool {
  std::string path;
  explicit SparsePool(uint64_t bytes) {
    path = "/dev/shm/leasefs-tables-test-" + std::to_string(getpid()) + "-" +
           std::to_string(bytes >> 30);
    unlink(path.c_str());
    MapOptions mo;
    mo.create = true;
    mo.create_size = bytes;
    auto m = OpenPool(path, mo);
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  }
  ~SparsePool() { unlink(path.c_str()); }
  std::unique_ptr<PoolMedia> Open() const {
    auto m = OpenPool(path, MapOptions{});
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    return std::move(m).value();
  }
  uint64_t AllocatedBytes() const {
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
};

TEST_SUITE("tables") {
  TEST_CASE("Tables: mkfs of a big sparse pool writes 259 blocks, whatever its size") {
    for (const uint64_t gib : {64, 1024}) {
      CAPTURE(gib);
      SparsePool pool(gib << 30);
      REQUIRE(pool.AllocatedBytes() == 0);
      {
        auto m = pool.Open();
        REQUIRE(Format(*m, FormatOptions{}).ok());
      }
      // The two superblock copies, the journal header, the quarantine table
      // (128 blocks), the first 1024 inode slots (64 blocks) and the first
      // 64 refcount blocks: nothing else.
      CHECK(pool.AllocatedBytes() == (2 + 1 + 128 + 64 + 64) * kBlockSize);
      auto m = pool.Open();
      const layout::Superblock sb = SuperOf(m->base());
      CHECK(sb.version == 3);
      CHECK(sb.inode_count == (gib << 30) / 16384);
      CHECK(MarkWords(m->base()) == std::vector<uint64_t>{1024, 1024, 64, 64});
      CHECK(FsckProblems(*m) == "");
      MountReport report;
      auto fs = Filesystem::Mount(std::move(m), MountOptions{}, &report);
      REQUIRE(fs.ok());
      CHECK(report.inode_mark == 1024);
      CHECK(report.refcount_mark == 64);
      const struct statvfs st = (*fs)->StatFs();
      CHECK(st.f_files == sb.inode_count - 1);
      CHECK(st.f_ffree == sb.inode_count - 2);  // all but the root
      CHECK(st.f_blocks == sb.data_blocks);
      (*fs)->Unmount();
      // The mount wrote the superblock's mutable area only.
      CHECK(pool.AllocatedBytes() == (2 + 1 + 128 + 64 + 64) * kBlockSize);
    }
  }

  TEST_CASE("Tables: the marks of a big pool rise as files and blocks are used") {
    SparsePool pool(uint64_t{64} << 30);
    {
      auto m = pool.Open();
      FormatOptions fo;
      fo.init_inodes = 16;  // (the default 1024 would take 1023 creates to fill)
      REQUIRE(Format(*m, fo).ok());
    }
    {
      auto fs = Filesystem::Mount(pool.Open(), MountOptions{});
      REQUIRE(fs.ok());
      Filesystem& f = **fs;
      // Slots 2-15 fill the initialized part; the next create raises the
      // mark by 64 slots (a quarter, at least 64).
      for (int i = 2; i < 16; ++i) MustCreate(f, 1, "f" + std::to_string(i));
      CHECK(f.TableMarks() == Marks{16, 64});
      CHECK(MustCreate(f, 1, "f16") == 16);
      CHECK(f.TableMarks() == Marks{80, 64});
      // 300 MiB of preallocated blocks reach past the first 256 MiB: the
      // refcount mark rises by what they need, and at least a quarter.
      const Ino big = MustCreate(f, 1, "big");
      REQUIRE(f.Fallocate(kRoot, big, 0, 0, uint64_t{300} << 20).ok());
      CHECK(f.TableMarks() == Marks{80, 80});
      const struct statvfs st = f.StatFs();
      CHECK(st.f_ffree == st.f_files - 17);
      f.Unmount();
    }
    auto m = pool.Open();
    CHECK(MarkWords(m->base()) == std::vector<uint64_t>{80, 80, 80, 80});
    CHECK(FsckProblems(*m) == "");
    MountReport report;
    auto fs = Filesystem::Mount(std::move(m), MountOptions{}, &report);
    REQUIRE(fs.ok());
    CHECK(report.inode_mark == 80);
    CHECK(report.refcount_mark == 80);
    CHECK(report.inodes_in_use == 17);
    (*fs)->Unmount();
  }

  TEST_CASE("Tables: the inode mark rises by a quarter, at least 64 slots, to the table's end") {
    FormatOptions fo;
    fo.init_inodes = 16;
    SUBCASE("geometrically") {
      SimMedia* raw = nullptr;
      auto fs = MustMount(FormattedPool(64 << 20, fo), &raw);
      std::vector<uint64_t> seen{fs->TableMarks().inodes};
      for (int i = 0; i < 700; ++i) {
        MustCreate(*fs, 1, "f" + std::to_string(i));
        if (fs->TableMarks().inodes != seen.back()) seen.push_back(fs->TableMarks().inodes);
      }
      CHECK(seen == std::vector<uint64_t>{16, 80, 144, 208, 272, 352, 448, 560, 704});
      CHECK(MarkWords(raw->base())[0] == 704);
      CHECK(MarkWords(raw->base())[1] == 704);
    }
    SUBCASE("until the table is full: ENOSPC for whatever needs an inode, nothing lost") {
      SimMedia* raw = nullptr;
      auto fs = MustMount(FormattedPool(8 << 20, fo), &raw);  // 512 slots
      for (int i = 2; i < 511; ++i) MustCreate(*fs, 1, "f" + std::to_string(i));
      const Ino d = MustMkdir(*fs, 1, "d");
      CHECK(d == 511);
      CHECK(fs->TableMarks().inodes == 512);
      CHECK(fs->StatFs().f_ffree == 0);
      const std::string tree = Observe(*fs);
      const uint64_t bfree = fs->StatFs().f_bfree;
      CHECK(fs->Create(kRoot, 1, "one-more", 0644, O_RDWR).status().err() == ENOSPC);
      CHECK(fs->Mkdir(kRoot, d, "sub", 0755).status().err() == ENOSPC);
      // (a target this long takes a block, which must come back)
      CHECK(fs->Symlink(kRoot, d, "l", std::string(4000, 't')).status().err() == ENOSPC);
      CHECK(fs->Mknod(kRoot, d, "fifo", S_IFIFO | 0644, 0).status().err() == ENOSPC);
      CHECK(fs->Tmpfile(kRoot, d, 0644, O_RDWR).status().err() == ENOSPC);
      // The whiteout needs an inode: the rename does not happen at all.
      CHECK(fs->Rename(kRoot, 1, "f2", d, "f2", RENAME_WHITEOUT).err() == ENOSPC);
      CHECK(Observe(*fs) == tree);
      CHECK(fs->StatFs().f_bfree == bfree);
      CHECK(fs->TableMarks().inodes == 512);
      // What needs no new inode still works, and a freed slot is taken again.
      REQUIRE(fs->Link(kRoot, 2, d, "hard").ok());
      REQUIRE(fs->Unlink(kRoot, 1, "f3").ok());
      fs->Forget(3, 1);
      CHECK(MustCreate(*fs, d, "again") == 3);
      CHECK(fs->StatFs().f_ffree == 0);
      fs->Unmount();
      CHECK(FsckProblems(*raw) == "");
    }
  }

  // The daemon serves with several threads: creates, writes, clones and
  // unlinks from each, while both marks rise under them. Every file must
  // keep its own inode and blocks; the mount's refcount check and fsck see
  // any block or slot handed out twice.
  TEST_CASE(
      "Tables: threads creating, writing, cloning and unlinking across raises of both marks") {
    SparsePool pool(uint64_t{256} << 20);
    {
      auto m = pool.Open();
      FormatOptions fo;
      fo.init_inodes = 16;
      fo.init_data_bytes = 4 << 20;  // 1024 data blocks
      REQUIRE(Format(*m, fo).ok());
    }
    constexpr int kThreads = 4, kFiles = 120;
    constexpr uint64_t kBlocks = 4;
    std::vector<std::map<std::string, Ino>> kept(kThreads);
    std::atomic<int> failures{0};
    Marks marks;
    {
      auto fs = Filesystem::Mount(pool.Open(), MountOptions{});
      REQUIRE(fs.ok());
      Filesystem& f = **fs;
      auto create = [&f, &failures](const std::string& name) -> Ino {
        auto e = f.Create(kRoot, 1, name, 0644, O_RDWR);
        if (!e.ok()) ++failures;
        return e.ok() ? e->attr.st_ino : 0;
      };
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          const std::string data(kBlocks * kBlockSize, static_cast<char>('a' + t));
          std::vector<std::string> names;
          for (int i = 0; i < kFiles; ++i) {
            const std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
            const Ino ino = create(name);
            if (ino == 0) continue;
            iovec iov{const_cast<char*>(data.data()), data.size()};
            auto w = f.Write(kRoot, ino, 0, &iov, 1);
            if (!w.ok() || *w != data.size()) ++failures;
            kept[t][name] = ino;
            if (i % 5 == 4) {  // a clone shares the blocks: refcount 2
              const Ino c = create("c" + name);
              auto r = f.CloneRange(kRoot, ino, 0, c, 0, data.size());
              if (c == 0 || !r.ok()) ++failures;
              kept[t]["c" + name] = c;
            }
            // Every other file goes again: its slot and blocks are reused.
            if (i % 2 == 1) {
              const std::string gone = "t" + std::to_string(t) + "-" + std::to_string(i - 1);
              if (kept[t].count(gone) == 0 || !f.Unlink(kRoot, 1, gone).ok()) ++failures;
              f.Forget(kept[t][gone], 1);
              kept[t].erase(gone);
            }
          }
        });
      }
      for (std::thread& th : threads) th.join();
      marks = f.TableMarks();
      f.Unmount();
    }
    CHECK(failures.load() == 0);
    // 4 x (60 files + 24 clones) + the root: the inode mark rose from 16
    // several times; 4 x 84 x 4 blocks in use (the clones share theirs)
    // and as many freed, past the first 1024 blocks: the refcount mark rose.
    CHECK(marks.inodes > 300);
    CHECK(marks.refcount_blocks > 1);
    auto m = pool.Open();
    CHECK(MarkWords(m->base()) == std::vector<uint64_t>{marks.inodes, marks.inodes,
                                                        marks.refcount_blocks,
                                                        marks.refcount_blocks});
    CHECK(FsckProblems(*m) == "");
    MountReport report;
    auto fs = Filesystem::Mount(std::move(m), MountOptions{}, &report);
    REQUIRE_MESSAGE(fs.ok(), fs.status().ToString());
    CHECK(report.inodes_in_use == 1 + kThreads * (kFiles / 2 + kFiles / 5));
    std::map<Ino, std::string> owners;
    for (int t = 0; t < kThreads; ++t) {
      for (const auto& [name, ino] : kept[t]) {
        CAPTURE(name);
        CHECK(owners.emplace(ino, name).second);
        CHECK(MustLookup(**fs, 1, name) == ino);
        CHECK(ReadAll(**fs, ino) == std::string(kBlocks * kBlockSize, static_cast<char>('a' + t)));
      }
    }
    (*fs)->Unmount();
  }

  TEST_CASE("Tables: mkfs options fix the inode table, initialized whole") {
    auto marks = [](const FormatOptions& fo) {
      auto m = FormattedPool(64 << 20, fo);
      return MarkWords(m->base());
    };
    FormatOptions fo;
    CHECK(marks(fo) == std::vector<uint64_t>{1024, 1024, 16, 16});
    fo.geometry.inode_count = 2000;  // -N 2000: 2001 slots, rounded up to 2016
    CHECK(marks(fo) == std::vector<uint64_t>{2016, 2016, 16, 16});
    fo.geometry.inode_count = 0;
    fo.geometry.bytes_per_inode = 4096;  // -i 4096
    CHECK(marks(fo) == std::vector<uint64_t>{16384, 16384, 15, 15});
    fo.init_inodes = 100;  // -i 4096 --initial-inodes 100
    fo.init_data_bytes = 5 << 20;
    CHECK(marks(fo) == std::vector<uint64_t>{112, 112, 2, 2});
    fo.geometry.bytes_per_inode = 512;
    auto m = SimMedia::Create(64 << 20);
    CHECK(Format(*m, fo).err() == EINVAL);
  }

  TEST_CASE("Tables: asked to initialize more than the tables hold, mkfs initializes them whole") {
    // Near 2^64 the rounding up to a block of slots overflowed: a mark of
    // 0 slots (and 1 refcount block), which no mount accepts.
    FormatOptions fo;
    fo.init_inodes = UINT64_MAX;
    fo.init_data_bytes = UINT64_MAX;
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(64 << 20, fo), &raw);
    CHECK(fs->TableMarks() == Marks{4096, 16});
    CHECK(MarkWords(raw->base()) == std::vector<uint64_t>{4096, 4096, 16, 16});
    fo.init_inodes = UINT64_MAX - 14;  // rounds up to 2^64 exactly
    fo.init_data_bytes = 5000;         // under one refcount block's data
    auto m = FormattedPool(64 << 20, fo);
    CHECK(MarkWords(m->base()) == std::vector<uint64_t>{4096, 4096, 1, 1});
  }

  TEST_CASE("Tables: a slot is handed out with generation 1 first, and never 0") {
    FormatOptions fo;
    fo.init_inodes = 16;
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(8 << 20, fo), &raw);
    for (int i = 2; i < 16; ++i) MustCreate(*fs, 1, "f" + std::to_string(i));
    const Ino a = MustCreate(*fs, 1, "a");  // past the first mark: a zeroed slot
    REQUIRE(a == 16);
    const uint32_t salt = fs->GetAttr(1)->generation ^ 1;  // the root's is 1
    CHECK((fs->GetAttr(a)->generation ^ salt) == 1);
    REQUIRE(fs->Unlink(kRoot, 1, "a").ok());
    fs->Forget(a, 1);
    // The freed slot keeps its generation; the next owner takes the next.
    CHECK(MustCreate(*fs, 1, "b") == a);
    CHECK((fs->GetAttr(a)->generation ^ salt) == 2);
    REQUIRE(fs->Unlink(kRoot, 1, "b").ok());
    fs->Forget(a, 1);
    fs->Unmount();
    // A slot freed at generation 2^32 - 1 wraps to 1, not to 0 (which
    // would read as a slot never allocated).
    std::vector<char> img = raw->Snapshot();
    const layout::Superblock sb = SuperOf(img.data());
    auto* in = reinterpret_cast<layout::Inode*>(img.data() + sb.inode_start * kBlockSize) + a;
    in->generation = UINT32_MAX;
    fs.reset();
    auto again = MountImage(img);
    CHECK(MustCreate(*again, 1, "c") == a);
    CHECK((again->GetAttr(a)->generation ^ salt) == 1);
  }

  TEST_CASE("Tables: a damaged copy of a mark is read past, and mended by a writable mount") {
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(64 << 20), &raw);
    MustCreate(*fs, 1, "f");
    fs->Unmount();
    std::vector<char> img = raw->Snapshot();
    fs.reset();
    auto* primary = reinterpret_cast<layout::Superblock*>(img.data());
    auto* backup = reinterpret_cast<layout::Superblock*>(img.data() + kBlockSize);
    SUBCASE("the primary's inode mark") {
      primary->inode_mark ^= uint64_t{1} << 50;  // the check code no longer holds
      CHECK(MarkWords(img.data()) == std::vector<uint64_t>{0, 1024, 16, 16});
      {
        MountOptions ro;
        ro.read_only = true;
        auto m = SimMedia::FromImage(img);
        SimMedia* r = m.get();
        auto f = Filesystem::Mount(std::move(m), ro);
        REQUIRE(f.ok());
        CHECK((*f)->TableMarks() == Marks{1024, 16});
        CHECK(r->Snapshot() == img);
      }
      SimMedia* r = nullptr;
      auto f = MustMount(SimMedia::FromImage(img), &r);
      CHECK(MarkWords(r->base()) == std::vector<uint64_t>{1024, 1024, 16, 16});
    }
    SUBCASE("a backup behind the primary (a crash between the two stores of a raise)") {
      backup->inode_mark = EncodeMark(*backup, kInodeMarkField, 16);
      SimMedia* r = nullptr;
      auto f = MustMount(SimMedia::FromImage(img), &r);
      CHECK(f->TableMarks() == Marks{1024, 16});
      CHECK(MarkWords(r->base()) == std::vector<uint64_t>{1024, 1024, 16, 16});
    }
    SUBCASE("both copies: refused, naming the command") {
      primary->refcount_mark = backup->refcount_mark = 0;
      auto f = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
      REQUIRE_FALSE(f.ok());
      CHECK(f.status().err() == EUCLEAN);
      CHECK(std::string(f.status().message()) ==
            "superblock: the refcount table's mark is damaged in both copies: run "
            "fsck.leasefs -y");
      auto m = SimMedia::FromImage(img);
      CHECK(FsckProblems(*m, /*repair=*/true) ==
            "repaired: superblock: the refcount table's mark is damaged in both copies (set it "
            "to 1 refcount blocks, past every block referenced)\n");
      CHECK(FsckProblems(*m) == "");
      CHECK(MarkWords(m->base()) == std::vector<uint64_t>{1024, 1024, 1, 1});
    }
  }

  TEST_CASE("Tables: a mount refuses what lies past a mark, and fsck -y raises the mark") {
    FormatOptions fo;
    fo.init_inodes = 16;
    fo.init_data_bytes = 4 << 20;
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(64 << 20, fo), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, std::string(kBlockSize, 'x'));
    fs->Unmount();
    std::vector<char> img = raw->Snapshot();
    fs.reset();
    const layout::Superblock sb = SuperOf(img.data());
    SUBCASE("an extent past the refcount mark") {
      auto* in = reinterpret_cast<layout::Inode*>(img.data() + sb.inode_start * kBlockSize) + f;
      auto* e = reinterpret_cast<layout::Extent*>(in->inline_area);
      const uint64_t old = e->pool_block, moved = sb.data_start + 3000;
      e->pool_block = moved;
      std::memcpy(img.data() + moved * kBlockSize, img.data() + old * kBlockSize, kBlockSize);
      auto m = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
      REQUIRE_FALSE(m.ok());
      CHECK(std::string(m.status().message()) ==
            "block " + std::to_string(moved) +
                " is referenced but lies past the refcount table's mark (1 refcount blocks): run "
                "fsck.leasefs -y");
      auto media = SimMedia::FromImage(img);
      const std::string b = std::to_string(sb.data_start);
      CHECK(FsckProblems(*media, true) ==
            "repaired: superblock: block " + std::to_string(moved) +
                " is referenced but lies past the refcount table's mark (1 refcount blocks: "
                "blocks " +
                b + "-" + std::to_string(sb.data_start + 1023) +
                ") (raised it to 3 refcount blocks; the refcounts it then covers are checked)\n"
                "repaired: block " +
                std::to_string(old) +
                ": refcount 1 but nothing references it (leaked) (set it to 0)\n"
                "repaired: block " +
                std::to_string(moved) +
                ": refcount 0 but 1 reference (in use but marked free) (set it to 1)\n");
      CHECK(FsckProblems(*media) == "");
      auto again = MustMount(SimMedia::FromImage(media->Snapshot()));
      CHECK(again->TableMarks() == Marks{16, 3});
      CHECK(ReadAll(*again, f) == std::string(kBlockSize, 'x'));
    }
    SUBCASE("a reach record past the refcount mark: kept, the mark raised over it") {
      auto* rec = reinterpret_cast<layout::QuarantineRecord*>(img.data() +
                                                              sb.quarantine_start * kBlockSize);
      const uint64_t at = sb.data_start + 3000;
      *rec = layout::QuarantineRecord{at, 2, 0, 7, f, 0, 1, 0, 0, 0};
      auto m = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
      REQUIRE_FALSE(m.ok());
      CHECK(std::string(m.status().message()) ==
            "quarantine record 0 covers block " + std::to_string(at + 1) +
                ", past the refcount table's mark (1 refcount blocks): run fsck.leasefs -y");
      auto media = SimMedia::FromImage(img);
      const std::string b = std::to_string(sb.data_start);
      CHECK(FsckProblems(*media, true) ==
            "repaired: superblock: block " + std::to_string(at + 1) +
                " is referenced but lies past the refcount table's mark (1 refcount blocks: "
                "blocks " +
                b + "-" + std::to_string(sb.data_start + 1023) +
                ") (raised it to 3 refcount blocks; the refcounts it then covers are checked)\n"
                "repaired: blocks " +
                std::to_string(at) + "-" + std::to_string(at + 1) +
                ": refcount 0 but 1 reference (in use but marked free) (set it to 1)\n");
      CHECK(FsckProblems(*media) == "");
      auto again = MustMount(SimMedia::FromImage(media->Snapshot()));
      CHECK(again->TableMarks() == Marks{16, 3});
      const auto* kept = reinterpret_cast<const layout::QuarantineRecord*>(
          media->base() + sb.quarantine_start * kBlockSize);
      CHECK(kept->pool_block == at);
      CHECK(kept->length == 2);
    }
    SUBCASE("an entry naming a slot past the inode mark") {
      const uint64_t dir_block =
          reinterpret_cast<layout::Extent*>(
              reinterpret_cast<layout::Inode*>(img.data() + sb.inode_start * kBlockSize)[1]
                  .inline_area)
              ->pool_block;
      auto* entry = reinterpret_cast<layout::DirEntryHeader*>(img.data() + dir_block * kBlockSize +
                                                              layout::kDirSlotSize);
      REQUIRE(entry->ino == f);
      entry->ino = 100;
      auto m = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
      REQUIRE_FALSE(m.ok());
      CHECK(std::string(m.status().message()) ==
            "directory 1: entry 'f' names inode 100, past the inode table's mark (16 slots): run "
            "fsck.leasefs -y");
    }
  }

  // fsck -y needs a slot and a block for /lost+found where every
  // initialized one is taken: it initializes more, over whatever the pool
  // held there (here: garbage, as on a device formatted over an older
  // filesystem), and stores the raised marks.
  TEST_CASE("Tables: fsck -y makes /lost+found past both marks, over garbage") {
    FormatOptions fo;
    fo.init_inodes = 16;
    fo.init_data_bytes = 4 << 20;  // 1024 data blocks
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(16 << 20, fo), &raw);
    for (int i = 2; i < 16; ++i) MustCreate(*fs, 1, "f" + std::to_string(i));
    // The root's directory block and these 1023 take every covered block.
    REQUIRE(fs->Fallocate(kRoot, 15, 0, 0, 1023 * kBlockSize).ok());
    REQUIRE(fs->TableMarks() == Marks{16, 1});
    REQUIRE(fs->StatFs().f_ffree == fs->StatFs().f_files - 15);
    fs->Unmount();
    std::vector<char> img = raw->Snapshot();
    fs.reset();
    const layout::Superblock sb = SuperOf(img.data());
    std::memset(img.data() + sb.inode_start * kBlockSize + 16 * sizeof(layout::Inode), 0xa5,
                (sb.inode_count - 16) * sizeof(layout::Inode));
    std::memset(img.data() + (sb.refcount_start + 1) * kBlockSize, 0xa5,
                (sb.refcount_blocks - 1) * kBlockSize);
    std::memset(img.data() + (sb.data_start + 1024) * kBlockSize, 0xa5,
                (sb.data_blocks - 1024) * kBlockSize);
    // The root's entry for f2 names inode 0: fsck removes it, and inode 2
    // goes to /lost+found.
    auto* inodes = reinterpret_cast<layout::Inode*>(img.data() + sb.inode_start * kBlockSize);
    const uint64_t dir_block = reinterpret_cast<layout::Extent*>(inodes[1].inline_area)->pool_block;
    auto* entry = reinterpret_cast<layout::DirEntryHeader*>(img.data() + dir_block * kBlockSize +
                                                            layout::kDirSlotSize);
    REQUIRE(entry->ino == 2);
    entry->ino = 0;
    {
      auto n = SimMedia::FromImage(img);
      // (-n creates /lost+found only in its count, past the mark too.)
      CHECK(FsckProblems(*n) ==
            "error: inode 1: free slot (block 0, slot 1) has slot_count 1\n"
            "error: inode 2: nlink 1 but no directory entry names it\n");
    }
    auto m = SimMedia::FromImage(img);
    CHECK(FsckProblems(*m, /*repair=*/true) ==
          "repaired: inode 1: free slot (block 0, slot 1) has slot_count 1 (zeroed the slot)\n"
          "repaired: inode 2: nlink 1 but no directory entry names it (moved it to /lost+found "
          "as #2)\n");
    CHECK(FsckProblems(*m) == "");
    CHECK(MarkWords(m->base()) == std::vector<uint64_t>{32, 32, 2, 2});
    SimMedia* r = nullptr;
    auto again = MustMount(SimMedia::FromImage(m->Snapshot()), &r);
    const Ino lf = MustLookup(*again, 1, "lost+found");
    CHECK(lf == 16);
    CHECK(MustLookup(*again, lf, "#2") == 2);
    CHECK(again->TableMarks() == Marks{32, 2});
    // The slots the raise initialized are free: the next creates take them.
    CHECK(MustCreate(*again, 1, "g") == 17);
    again->Unmount();
    CHECK(FsckProblems(*r) == "");

    // A crash anywhere in that repair (the marks are stored after the
    // journal has zeroed what they cover and made /lost+found there) leaves
    // a pool that the next fsck -y mends the same way.
    auto media = SimMedia::FromImage(img);
    FsckProblems(*media, true);
    const uint64_t points = media->persist_points();
    REQUIRE(points >= 3);
    for (uint64_t point = 1; point <= points; ++point) {
      for (bool torn : {false, true}) {
        CAPTURE(point);
        CAPTURE(torn);
        auto crashing = SimMedia::FromImage(img);
        crashing->ArmCrash(point);
        FsckProblems(*crashing, true);
        REQUIRE(crashing->crashed());
        auto after = SimMedia::FromImage(crashing->CrashImage(point, torn));
        FsckProblems(*after, true);
        CHECK(FsckProblems(*after) == "");
        auto f = MustMount(SimMedia::FromImage(after->Snapshot()));
        CHECK(MustLookup(*f, MustLookup(*f, 1, "lost+found"), "#2") == 2);
        CHECK(f->TableMarks() == Marks{32, 2});
      }
    }
  }

  // A version-2 pool: what the previous leasefs made (both tables
  // initialized whole; no marks; version 2 in both copies).
  std::vector<char> V2(const std::vector<char>& v3) {
    std::vector<char> img = v3;
    for (uint64_t copy : {0, 1}) {
      auto* sb = reinterpret_cast<layout::Superblock*>(img.data() + copy * kBlockSize);
      sb->version = layout::kFormatVersionV2;
      sb->inode_mark = sb->refcount_mark = 0;
      sb->checksum = SuperblockChecksum(*sb);
    }
    return img;
  }

  TEST_CASE(
      "Tables: a version-2 pool is upgraded at its first writable mount, marks just past use") {
    FormatOptions whole;
    whole.init_inodes = uint64_t{1} << 40;
    whole.init_data_bytes = uint64_t{1} << 50;
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(64 << 20, whole), &raw);
    for (int i = 2; i < 1102; ++i) MustCreate(*fs, 1, "f" + std::to_string(i));
    // Slots 1050-1101 were used and are free again: they keep their
    // generation, so the mark must stay past them.
    for (int i = 1050; i < 1102; ++i) {
      REQUIRE(fs->Unlink(kRoot, 1, "f" + std::to_string(i)).ok());
      fs->Forget(static_cast<Ino>(i), 1);
    }
    const std::string tree = Observe(*fs);
    fs->Unmount();
    const std::vector<char> v2 = V2(raw->Snapshot());
    fs.reset();
    {
      auto m = SimMedia::FromImage(v2);
      CHECK(FsckProblems(*m) == "");
    }
    SUBCASE("read-only: nothing is written") {
      MountOptions ro;
      ro.read_only = true;
      auto m = SimMedia::FromImage(v2);
      SimMedia* r = m.get();
      MountReport report;
      auto f = Filesystem::Mount(std::move(m), ro, &report);
      REQUIRE(f.ok());
      CHECK_FALSE(report.upgraded);
      CHECK((*f)->TableMarks() == Marks{4096, 16});
      CHECK(Observe(**f) == tree);
      CHECK(r->Snapshot() == v2);
    }
    SUBCASE("read-only, the primary torn by a crash in the upgrade: read by its backup") {
      std::vector<char> torn;
      {
        SimMedia* r = nullptr;
        auto f = MustMount(SimMedia::FromImage(v2), &r);
        f->Unmount();
        torn = r->Snapshot();
      }
      // The crash kept the primary's old version word and its new checksum
      // (each 8-byte word is old or new): a writable mount restores it from
      // the backup, and so must a read-only one, in memory.
      reinterpret_cast<layout::Superblock*>(torn.data())->version = layout::kFormatVersionV2;
      MountOptions ro;
      ro.read_only = true;
      MountReport report;
      auto f = Filesystem::Mount(SimMedia::FromImage(torn), ro, &report);
      REQUIRE_MESSAGE(f.ok(), f.status().ToString());
      CHECK_FALSE(report.upgraded);
      CHECK((*f)->TableMarks() == Marks{1104, 16});
      CHECK(Observe(**f) == tree);
    }
    SUBCASE("writable") {
      SimMedia* r = nullptr;
      MountReport report;
      auto f = MustMount(SimMedia::FromImage(v2), &r, &report);
      CHECK(report.upgraded);
      CHECK(SuperOf(r->base(), 0).version == 3);
      CHECK(SuperOf(r->base(), 1).version == 3);
      CHECK(f->TableMarks() == Marks{1104, 16});
      CHECK(MarkWords(r->base()) == std::vector<uint64_t>{1104, 1104, 16, 16});
      CHECK(Observe(*f) == tree);
      CHECK(f->StatFs().f_ffree == 4095 - 1049);
      CHECK(MustCreate(*f, 1, "new") == 1050);
      f->Unmount();
      CHECK(FsckProblems(*r) == "");
    }
    SUBCASE("fsck -y repairs it as version 2; the next writable mount upgrades it") {
      // The root's entry for f2 names inode 0: fsck removes it and moves
      // inode 2 to a new /lost+found, in slot 1050 (free, generation 1).
      std::vector<char> img = v2;
      const layout::Superblock sb = SuperOf(img.data());
      auto* inodes = reinterpret_cast<layout::Inode*>(img.data() + sb.inode_start * kBlockSize);
      const uint64_t dir_block =
          reinterpret_cast<layout::Extent*>(inodes[1].inline_area)->pool_block;
      auto* entry = reinterpret_cast<layout::DirEntryHeader*>(img.data() + dir_block * kBlockSize +
                                                              layout::kDirSlotSize);
      REQUIRE(entry->ino == 2);
      entry->ino = 0;
      auto m = SimMedia::FromImage(img);
      CHECK(FsckProblems(*m, /*repair=*/true) != "");
      CHECK(FsckProblems(*m) == "");
      // Still version 2 in both copies, the words that are marks in
      // version 3 untouched (reserved: 0).
      for (uint64_t copy : {0, 1}) {
        CAPTURE(copy);
        CHECK(SuperOf(m->base(), copy).version == layout::kFormatVersionV2);
        CHECK(SuperOf(m->base(), copy).inode_mark == 0);
        CHECK(SuperOf(m->base(), copy).refcount_mark == 0);
      }
      const std::vector<char> repaired = m->Snapshot();
      {
        MountOptions ro;
        ro.read_only = true;
        auto f = Filesystem::Mount(SimMedia::FromImage(repaired), ro);
        REQUIRE_MESSAGE(f.ok(), f.status().ToString());
        const Ino lf = MustLookup(**f, 1, "lost+found");
        CHECK(lf == 1050);
        CHECK(MustLookup(**f, lf, "#2") == 2);
      }
      SimMedia* r = nullptr;
      MountReport report;
      auto f = MustMount(SimMedia::FromImage(repaired), &r, &report);
      CHECK(report.upgraded);
      CHECK(f->TableMarks() == Marks{1104, 16});
      CHECK(MustLookup(*f, MustLookup(*f, 1, "lost+found"), "#2") == 2);
      f->Unmount();
      CHECK(FsckProblems(*r) == "");
    }
  }
}

}  // namespace
}  // namespace leasefs::engine
