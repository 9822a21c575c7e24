// Several processes and threads using one mount at once: every operation
// still behaves as it would alone. meson runs this binary against the
// daemon's default (one thread) and with -o threads=4.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

TEST_SUITE("fuse.concurrency") {
  TEST_CASE("Concurrency: writers of separate files in one directory each read back their bytes") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    constexpr int kThreads = 4, kFiles = 50;
    std::vector<std::string> errors(kThreads);
    std::atomic<bool> done{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t) {
      workers.emplace_back([&, t] {
        std::string& err = errors[static_cast<size_t>(t)];
        for (int i = 0; i < kFiles && err.empty(); ++i) {
          const std::string name = fs.path("d/t" + std::to_string(t) + "-" + std::to_string(i));
          const std::string data = Pattern(10000 + static_cast<size_t>(i) * 37, t * 1000 + i);
          if (std::string e = WriteFile(name, data); !e.empty())
            err = e;
          else if (ReadFile(name) != data)
            err = name + ": wrong content";
          // Every other file is renamed, every third removed again.
          if (err.empty() && i % 2 == 0 && rename(name.c_str(), (name + ".r").c_str()) != 0)
            err = name + ": rename " + ErrnoName(errno);
          if (err.empty() && i % 3 == 0 && unlink((i % 2 == 0 ? name + ".r" : name).c_str()) != 0)
            err = name + ": unlink " + ErrnoName(errno);
        }
      });
    }
    // Meanwhile, list the directory over and over; no entry may appear twice.
    int listings = 0, dup_listings = 0;
    std::thread lister([&] {
      while (!done.load()) {
        std::vector<std::string> names = ListDir(fs.path("d"));
        ++listings;
        dup_listings += std::adjacent_find(names.begin(), names.end()) != names.end();
      }
    });
    for (auto& w : workers) w.join();
    done = true;
    lister.join();
    for (int t = 0; t < kThreads; ++t) CHECK(errors[static_cast<size_t>(t)] == "");
    CHECK(listings > 0);
    CHECK(dup_listings == 0);
    // Final state: exactly the files that were neither unlinked.
    size_t want = 0;
    for (int i = 0; i < kFiles; ++i) want += i % 3 != 0;
    CHECK(ListDir(fs.path("d")).size() == want * kThreads);
    for (int t = 0; t < kThreads; ++t) {
      for (int i = 1; i < kFiles; i += 6) {  // i % 3 != 0 and odd: kept, not renamed
        const std::string name = fs.path("d/t" + std::to_string(t) + "-" + std::to_string(i));
        CHECK(Diff(ReadFile(name), Pattern(10000 + static_cast<size_t>(i) * 37, t * 1000 + i)) ==
              "");
      }
    }
  }

  TEST_CASE("Concurrency: threads writing disjoint ranges of one file") {
    TestFs fs;
    Fd fd(open(fs.path("shared").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.ok());
    constexpr int kThreads = 4, kChunks = 64;
    constexpr size_t kChunk = 12288 + 100;  // not block-aligned: neighbours share blocks
    std::vector<std::thread> workers;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      workers.emplace_back([&, t] {
        for (int c = t; c < kChunks; c += kThreads) {
          const std::string data = Pattern(kChunk, 500 + c);
          if (!PwriteAll(fd.get(), data, static_cast<off_t>(c * kChunk)).empty()) ++failures;
        }
      });
    }
    for (auto& w : workers) w.join();
    CHECK(failures == 0);
    const std::string all = PreadAll(fd.get(), kChunks * kChunk + 10, 0);
    REQUIRE(all.size() == kChunks * kChunk);
    int bad = 0;
    for (int c = 0; c < kChunks; ++c)
      bad += all.substr(c * kChunk, kChunk) != Pattern(kChunk, 500 + c);
    CHECK(bad == 0);
  }

  TEST_CASE("Concurrency: processes of different users creating in one sticky directory") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("tmp").c_str(), 0700) == 0);
    REQUIRE(chmod(fs.path("tmp").c_str(), 01777) == 0);
    const std::vector<std::string> failures =
        AsUsersAtOnce({1000, 1001, 1002}, [&](size_t u, ChildChecks& k) {
          const uid_t uid = 1000 + static_cast<uid_t>(u);
          for (int i = 0; i < 100; ++i) {
            const std::string name =
                fs.path("tmp/u" + std::to_string(uid) + "-" + std::to_string(i));
            KEQ(k, WriteFile(name, name, 0644), "");
            // Neighbours' files of the same number must be untouchable.
            const std::string other = fs.path(
                "tmp/u" + std::to_string(1000 + (uid - 1000 + 1) % 3) + "-" + std::to_string(i));
            const std::string r = SYS(unlink(other.c_str()));
            KTRUE(k, r == "EPERM" || r == "ENOENT");
          }
        });
    for (const auto& f : failures) CHECK(f == "");
    std::vector<std::string> names = ListDir(fs.path("tmp"));
    CHECK(names.size() == 300u);
    for (const auto& n : names) {
      CAPTURE(n);
      const uid_t owner = static_cast<uid_t>(std::stoul(n.substr(1, 4)));
      CHECK(Lstat(fs.path("tmp/" + n)).st_uid == owner);
    }
  }

  TEST_CASE(
      "Concurrency: processes of several users creating while the inode and refcount marks rise") {
    // 16 inode slots and the refcounts of 4 MiB initialized at mkfs (format
    // version 3): the creates of each user raise both marks while the
    // others create and unlink (docs/pool_format.md "Lazily initialized
    // tables"). No slot or block may be handed out twice.
    TestFs fs(
        {.pool_size = "64M", .mkfs_args = {"--initial-inodes", "16", "--initial-data", "4M"}});
    REQUIRE(mkdir(fs.path("tmp").c_str(), 0700) == 0);
    REQUIRE(chmod(fs.path("tmp").c_str(), 01777) == 0);
    constexpr int kUsers = 4, kFiles = 150;
    auto name = [&fs](uid_t uid, int i) {
      return fs.path("tmp/u" + std::to_string(uid) + "-" + std::to_string(i));
    };
    // 4 blocks each: the 300 kept files alone need more than 1024 blocks.
    auto data = [](uid_t uid, int i) {
      return Pattern(3 * 4096 + 1 + static_cast<size_t>(i), uid * 1000 + static_cast<uint64_t>(i));
    };
    std::vector<uid_t> uids;
    for (int u = 0; u < kUsers; ++u) uids.push_back(1000 + static_cast<uid_t>(u));
    const std::vector<std::string> failures = AsUsersAtOnce(uids, [&](size_t u, ChildChecks& k) {
      const uid_t uid = uids[u];
      for (int i = 0; i < kFiles; ++i) {
        KEQ(k, WriteFile(name(uid, i), data(uid, i), 0644), "");
        // Every other file goes again: its slot and blocks are reused.
        if (i % 2 == 1) KEQ(k, SYS(unlink(name(uid, i - 1).c_str())), "OK");
      }
    });
    for (const auto& f : failures) CHECK(f == "");
    auto check_files = [&] {
      CHECK(ListDir(fs.path("tmp")).size() == static_cast<size_t>(kUsers * kFiles / 2));
      std::map<ino_t, std::string> owners;
      for (int u = 0; u < kUsers; ++u) {
        const uid_t uid = 1000 + static_cast<uid_t>(u);
        for (int i = 1; i < kFiles; i += 2) {
          CAPTURE(name(uid, i));
          CHECK(ReadFile(name(uid, i)) == data(uid, i));
          CHECK(owners.emplace(Lstat(name(uid, i)).st_ino, name(uid, i)).second);
        }
      }
    };
    check_files();
    if (!fs.reference()) {
      // Both marks rose (each word's low 44 bits hold its value): 600
      // creates from 16 slots, more than 1024 blocks in use.
      std::ifstream pool(fs.mount()->pool(), std::ios::binary);
      uint64_t marks[2] = {};
      pool.seekg(288);
      pool.read(reinterpret_cast<char*>(marks), sizeof(marks));
      CHECK((marks[0] & ((uint64_t{1} << 44) - 1)) > 300);
      CHECK((marks[1] & ((uint64_t{1} << 44) - 1)) > 1);
      CHECK(fs.UnmountFsckRemount() == "");
      check_files();
    }
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
