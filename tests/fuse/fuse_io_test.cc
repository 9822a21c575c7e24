// The daemon's own read of /dev/fuse (fusefs/daemon/fuse_io.cc), fed the
// requests libfuse 3.14 does not know, well-formed and not, over a socket
// pair standing in for the device: FUSE_STATX is answered with the exact
// bytes of fuse_statx_out, FUSE_TMPFILE goes on as the CREATE it stands for,
// and short or inconsistent requests get EINVAL while the read goes on to
// the next request. No mount, no root.
#include "fusefs/daemon/fuse_io.h"

#include <linux/fuse.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace leasefs::daemon {
namespace {

constexpr uint32_t kOpTmpfile = 51, kOpStatx = 52;
constexpr uint64_t kKnownIno = 7;

// The statx callback: inode 7 exists, everything else is ENOENT.
int FakeStatx(void* userdata, uint64_t nodeid, StatxAttr* out) {
  *static_cast<int*>(userdata) += 1;
  if (nodeid != kKnownIno) return ENOENT;
  out->st.st_ino = kKnownIno;
  out->st.st_mode = S_IFCHR | 0640;
  out->st.st_nlink = 3;
  out->st.st_uid = 1000;
  out->st.st_gid = 2000;
  out->st.st_rdev = makedev(12, 34);
  out->st.st_size = 5;
  out->st.st_blocks = 8;
  out->st.st_blksize = 4096;
  out->st.st_mtim = {1700000000, 5};
  out->btime = {1600000000, 123456789};
  out->attr_timeout = 1.5;
  return 0;
}

std::string Request(uint32_t opcode, uint64_t unique, uint64_t nodeid, const std::string& args,
                    int len_delta = 0) {
  fuse_in_header h{};
  h.len = static_cast<uint32_t>(sizeof(h) + args.size() + len_delta);
  h.opcode = opcode;
  h.unique = unique;
  h.nodeid = nodeid;
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h)) + args;
}

std::string StatxIn() { return std::string(24, '\0'); }

std::string CreateIn(const std::string& name) {
  fuse_create_in in{};
  in.flags = 02 | 020000000;  // O_RDWR | O_TMPFILE's directory bit
  in.mode = 0600;
  in.umask = 022;
  return std::string(reinterpret_cast<const char*>(&in), sizeof(in)) + name;
}

template <typename T>
T At(const std::string& s, size_t off) {
  T v{};
  REQUIRE(off + sizeof(T) <= s.size());
  std::memcpy(&v, s.data() + off, sizeof(T));
  return v;
}

// One socket pair: `kernel` is the test's end, `device` the io's.
struct Wire {
  int kernel = -1, device = -1;
  int statx_calls = 0;
  explicit Wire(bool init_done = true) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    kernel = sv[0];
    device = sv[1];
    SetUpIoForTest(FakeStatx, init_done);
  }
  ~Wire() {
    close(kernel);
    close(device);
  }
  void Send(const std::string& msg) const {
    REQUIRE(write(kernel, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
  }
  // What the io hands to libfuse next.
  std::string ReadForLibfuse() {
    std::vector<char> buf(1 << 16);
    const ssize_t n = ReadRequestForTest(device, buf.data(), buf.size(), &statx_calls);
    REQUIRE(n >= 0);
    return std::string(buf.data(), static_cast<size_t>(n));
  }
  // A reply the io sent the kernel.
  std::string Reply() const {
    char buf[4096];
    const ssize_t n = read(kernel, buf, sizeof(buf));
    REQUIRE(n >= 0);
    return std::string(buf, static_cast<size_t>(n));
  }
};

// A request the io must leave to libfuse, sent after the one under test,
// so that the read returns.
const std::string kGetattr = Request(FUSE_GETATTR, 99, 1, std::string(16, '\0'));

TEST_SUITE("fuse_io") {
  TEST_CASE("FUSE_STATX: answered with fuse_statx_out, birth time included; the read goes on") {
    Wire w;
    w.Send(Request(kOpStatx, 42, kKnownIno, StatxIn()));
    w.Send(kGetattr);
    CHECK(w.ReadForLibfuse() == kGetattr);
    const std::string r = w.Reply();
    REQUIRE(r.size() == 16 + 288);
    CHECK(At<uint32_t>(r, 0) == 16 + 288);  // fuse_out_header.len
    CHECK(At<int32_t>(r, 4) == 0);          // error
    CHECK(At<uint64_t>(r, 8) == 42);        // unique
    const size_t out = 16, sx = out + 32;
    CHECK(At<uint64_t>(r, out) == 1);                  // attr_valid
    CHECK(At<uint32_t>(r, out + 8) == 500'000'000);  // attr_valid_nsec
    CHECK(At<uint32_t>(r, sx) == (STATX_BASIC_STATS | STATX_BTIME));
    CHECK(At<uint32_t>(r, sx + 4) == 4096);              // blksize
    CHECK(At<uint32_t>(r, sx + 16) == 3);                // nlink
    CHECK(At<uint32_t>(r, sx + 20) == 1000);             // uid
    CHECK(At<uint32_t>(r, sx + 24) == 2000);             // gid
    CHECK(At<uint16_t>(r, sx + 28) == (S_IFCHR | 0640));  // mode
    CHECK(At<uint64_t>(r, sx + 32) == kKnownIno);
    CHECK(At<uint64_t>(r, sx + 40) == 5);     // size
    CHECK(At<uint64_t>(r, sx + 48) == 8);     // blocks
    CHECK(At<int64_t>(r, sx + 80) == 1600000000);  // btime
    CHECK(At<uint32_t>(r, sx + 88) == 123456789);
    CHECK(At<int64_t>(r, sx + 112) == 1700000000);  // mtime
    CHECK(At<uint32_t>(r, sx + 120) == 5);
    CHECK(At<uint32_t>(r, sx + 128) == 12);  // rdev_major
    CHECK(At<uint32_t>(r, sx + 132) == 34);  // rdev_minor
    CHECK(w.statx_calls == 1);
  }

  TEST_CASE("FUSE_STATX before the INIT reply's write has returned is answered here too") {
    // The kernel queues requests as soon as it has read the INIT reply;
    // one that reached libfuse would get ENOSYS, and the kernel would never
    // send a STATX (or TMPFILE) again on this mount.
    Wire w(/*init_done=*/false);
    w.Send(Request(kOpStatx, 43, kKnownIno, StatxIn()));
    w.Send(kGetattr);
    // REQUIRE: had the STATX been handed on, no reply would ever come.
    REQUIRE(w.ReadForLibfuse() == kGetattr);
    const std::string r = w.Reply();
    REQUIRE(r.size() == 16 + 288);
    CHECK(At<int32_t>(r, 4) == 0);
    CHECK(At<uint64_t>(r, 8) == 43);
    CHECK(w.statx_calls == 1);
  }

  TEST_CASE("FUSE_STATX: a node id that names nothing gets the callback's ENOENT alone") {
    Wire w;
    for (uint64_t nodeid : {uint64_t{0}, uint64_t{8}, ~uint64_t{0}}) {
      CAPTURE(nodeid);
      w.Send(Request(kOpStatx, 43, nodeid, StatxIn()));
      w.Send(kGetattr);
      CHECK(w.ReadForLibfuse() == kGetattr);
      const std::string r = w.Reply();
      REQUIRE(r.size() == 16);
      CHECK(At<uint32_t>(r, 0) == 16);
      CHECK(At<int32_t>(r, 4) == -ENOENT);
      CHECK(At<uint64_t>(r, 8) == 43);
    }
  }

  TEST_CASE("Short or inconsistent requests get EINVAL, reach neither libfuse nor the engine") {
    Wire w;
    SUBCASE("FUSE_STATX without its arguments") {
      w.Send(Request(kOpStatx, 44, kKnownIno, std::string(23, '\0')));
    }
    SUBCASE("FUSE_STATX whose length says more than was read") {
      w.Send(Request(kOpStatx, 44, kKnownIno, StatxIn(), 100));
    }
    SUBCASE("FUSE_STATX whose length says less than was read") {
      w.Send(Request(kOpStatx, 44, kKnownIno, StatxIn(), -8));
    }
    SUBCASE("FUSE_TMPFILE without a name") {
      w.Send(Request(kOpTmpfile, 44, 1, CreateIn("")));
    }
    SUBCASE("FUSE_TMPFILE cut inside fuse_create_in") {
      w.Send(Request(kOpTmpfile, 44, 1, CreateIn("/").substr(0, 9)));
    }
    w.Send(kGetattr);
    CHECK(w.ReadForLibfuse() == kGetattr);
    const std::string r = w.Reply();
    REQUIRE(r.size() == 16);
    CHECK(At<int32_t>(r, 4) == -EINVAL);
    CHECK(At<uint64_t>(r, 8) == 44);
    CHECK(w.statx_calls == 0);
  }

  TEST_CASE("FUSE_TMPFILE goes on to libfuse as a CREATE of the name \"/\", arguments unchanged") {
    Wire w;
    const std::string args = CreateIn(std::string("/\0", 2));
    w.Send(Request(kOpTmpfile, 45, 1, args));
    const std::string got = w.ReadForLibfuse();
    REQUIRE(got.size() == sizeof(fuse_in_header) + args.size());
    CHECK(At<uint32_t>(got, offsetof(fuse_in_header, opcode)) == FUSE_CREATE);
    CHECK(At<uint64_t>(got, offsetof(fuse_in_header, unique)) == 45);
    CHECK(got.substr(sizeof(fuse_in_header)) == args);
    // Whatever name the kernel gave, libfuse's create sees "/" only.
    w.Send(Request(kOpTmpfile, 46, 1, CreateIn(std::string("xyz\0", 4))));
    const std::string renamed = w.ReadForLibfuse();
    CHECK(std::string(renamed.c_str() + sizeof(fuse_in_header) + sizeof(fuse_create_in)) ==
          kTmpfileName);
  }

  TEST_CASE("Every other request passes untouched, however short") {
    Wire w;
    const std::string odd = Request(FUSE_LOOKUP, 47, 1, "name", 5);
    w.Send(odd);
    CHECK(w.ReadForLibfuse() == odd);
    w.Send(std::string(10, 'x'));  // shorter than a header: libfuse's to refuse
    CHECK(w.ReadForLibfuse() == std::string(10, 'x'));
  }
}

}  // namespace
}  // namespace leasefs::daemon
