// POSIX ACLs: the value format and rules (engine/acl.h) against the kernel's
// (fs/posix_acl.c), hostile values, and the engine's use of them through the
// xattr calls, inheritance and the permission check.
#include "engine/acl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using acl::Acl;
using acl::Entry;

constexpr uint32_t U = acl::kUndefinedId;

// Short text for a list, as getfacl's short form: "u::rw-,u:1000:r--,...".
Acl Text(const std::string& text) {
  Acl a;
  size_t b = 0;
  while (b < text.size()) {
    size_t e = text.find(',', b);
    if (e == std::string::npos) e = text.size();
    const std::string item = text.substr(b, e - b);
    b = e + 1;
    const size_t c1 = item.find(':'), c2 = item.rfind(':');
    const std::string tag = item.substr(0, c1), id = item.substr(c1 + 1, c2 - c1 - 1);
    const std::string perm = item.substr(c2 + 1);
    Entry en;
    en.perm = (perm[0] == 'r' ? 4 : 0) | (perm[1] == 'w' ? 2 : 0) | (perm[2] == 'x' ? 1 : 0);
    en.id = id.empty() ? U : static_cast<uint32_t>(std::stoul(id));
    if (tag == "u") en.tag = id.empty() ? acl::kUserObj : acl::kUser;
    if (tag == "g") en.tag = id.empty() ? acl::kGroupObj : acl::kGroup;
    if (tag == "m") en.tag = acl::kMask;
    if (tag == "o") en.tag = acl::kOther;
    a.push_back(en);
  }
  return a;
}

std::string Value(const std::string& text) { return acl::Encode(Text(text)); }

int ParseErr(const std::string& value) { return acl::Parse(value).status().err(); }

int Err(const Status& s) { return s.err(); }
template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

mode_t ModeOf(Filesystem& fs, Ino ino) {
  auto e = fs.GetAttr(ino);
  REQUIRE(e.ok());
  return e->attr.st_mode & 07777;
}

void Chmod(Filesystem& fs, const Cred& c, Ino ino, mode_t mode) {
  SetAttrArgs a;
  a.valid = SetAttrArgs::kMode;
  a.mode = mode;
  REQUIRE(fs.SetAttr(c, ino, a).ok());
}

TEST_SUITE("acl") {
  TEST_CASE("ACL format: a valid list parses and encodes to the same bytes") {
    const std::string v = Value("u::rw-,u:7:r--,u:1000:rwx,g::r--,g:5:-w-,m::rwx,o::---");
    auto a = acl::Parse(v);
    REQUIRE(a.ok());
    CHECK(a->size() == 7u);
    CHECK(acl::Encode(*a) == v);
    CHECK(v.size() == 4u + 7 * 8);
    // Unnamed entries' ids are ignored and written as ACL_UNDEFINED_ID.
    std::string odd = Value("u::rw-,g::r--,o::r--");
    std::memset(odd.data() + 4 + 4, 0, 4);
    auto b = acl::Parse(odd);
    REQUIRE(b.ok());
    CHECK(acl::Encode(*b) == Value("u::rw-,g::r--,o::r--"));
  }

  TEST_CASE("ACL format: malformed values are EINVAL") {
    const std::string good = Value("u::rw-,u:1000:r--,g::r--,m::r--,o::---");
    CHECK(ParseErr(good.substr(0, 3)) == EINVAL);                // shorter than the header
    CHECK(ParseErr(good.substr(0, good.size() - 1)) == EINVAL);  // truncated entry
    CHECK(ParseErr(good.substr(0, 4)) == EINVAL);                // header alone
    CHECK(ParseErr("") == EINVAL);
    std::string v1 = good;
    v1[0] = 1;  // version 1
    CHECK(ParseErr(v1) == EINVAL);
    CHECK(ParseErr(Value("u::rw-,g::r--")) == EINVAL);                           // no OTHER
    CHECK(ParseErr(Value("g::r--,u::rw-,o::---")) == EINVAL);                    // unsorted tags
    CHECK(ParseErr(Value("u::rw-,u::rw-,g::r--,o::---")) == EINVAL);             // two USER_OBJ
    CHECK(ParseErr(Value("u::rw-,u:5:r--,u:5:rw-,g::r--,m::rw-,o::---")) == EINVAL);  // dup
    CHECK(ParseErr(Value("u::rw-,u:9:r--,u:5:rw-,g::r--,m::rw-,o::---")) == EINVAL);  // unsorted
    CHECK(ParseErr(Value("u::rw-,g::r--,g:5:r--,g:5:r--,m::r--,o::---")) == EINVAL);
    CHECK(ParseErr(Value("u::rw-,u:1000:r--,g::r--,o::---")) == EINVAL);  // no MASK
    CHECK(ParseErr(Value("u::rw-,g::r--,g:3:r--,o::---")) == EINVAL);     // no MASK
    CHECK(ParseErr(Value("u::rw-,g::r--,o::---,m::r--")) == EINVAL);      // MASK after OTHER
    CHECK(ParseErr(Value("u::rw-,g::r--,m::r--,m::r--,o::---")) == EINVAL);
    CHECK(ParseErr(Value("u::rw-,g::r--,o::---,o::---")) == EINVAL);
    CHECK(ParseErr(Value("u::rw-,u:4294967295:r--,g::r--,m::r--,o::---")) == EINVAL);
    Acl bad_tag = Text("u::rw-,g::r--,o::---");
    bad_tag[1].tag = 0x40;
    CHECK(ParseErr(acl::Encode(bad_tag)) == EINVAL);
    Acl bad_perm = Text("u::rw-,g::r--,o::---");
    bad_perm[0].perm = 8;
    CHECK(ParseErr(acl::Encode(bad_perm)) == EINVAL);
    // Sorted distinct ids are fine, and a MASK without named entries too.
    CHECK(acl::Parse(Value("u::rw-,u:1:r--,u:2:r--,g::r--,g:1:r--,m::r--,o::---")).ok());
    CHECK(acl::Parse(Value("u::rw-,g::r--,m::r--,o::---")).ok());
    // More than a page: E2BIG, as the kernel's FUSE client answers.
    std::string big = Value("u::rw-,g::r--,o::---");
    big.resize(acl::kMaxValueBytes + 4, '\0');
    CHECK(ParseErr(big) == E2BIG);
  }

  TEST_CASE("ACL format: random and mutated values never crash the parser") {
    std::mt19937_64 rng(13);
    const std::string good = Value("u::rw-,u:1:r--,u:1000:rwx,g::r--,g:7:rw-,m::rwx,o::r--");
    int ok = 0;
    for (int i = 0; i < 20000; ++i) {
      std::string v;
      if (i % 2 == 0) {
        v.resize(rng() % 80);
        for (char& ch : v) ch = static_cast<char>(rng());
        if (v.size() >= 4 && i % 4 == 0) std::memcpy(v.data(), good.data(), 4);
      } else {
        v = good;
        const int flips = 1 + static_cast<int>(rng() % 3);
        for (int f = 0; f < flips; ++f) v[rng() % v.size()] ^= static_cast<char>(1u << (rng() % 8));
        if (rng() % 5 == 0) v.resize(rng() % v.size());
      }
      auto a = acl::Parse(v);
      if (!a.ok()) {
        CHECK((a.status().err() == EINVAL || a.status().err() == E2BIG));
        continue;
      }
      ++ok;
      // Whatever parses is a list the rules can use, and encodes stably.
      CHECK(acl::Parse(acl::Encode(*a)).ok());
      mode_t m = 0755;
      Acl copy = *a;
      acl::CreateMasq(&copy, &m);
      (void)acl::Permits(*a, 1, 1, {2, [](gid_t) { return true; }}, R_OK);
    }
    CHECK(ok > 0);
  }

  TEST_CASE("ACL rules: mode equivalence, mode bits, chmod") {
    CHECK(acl::EquivalentToMode(Text("u::rw-,g::r--,o::---")));
    CHECK_FALSE(acl::EquivalentToMode(Text("u::rw-,g::r--,m::r--,o::---")));
    CHECK_FALSE(acl::EquivalentToMode(Text("u::rw-,u:5:r--,g::r--,m::r--,o::---")));
    CHECK(acl::ModeBits(Text("u::rwx,g::r-x,o::--x")) == 0751);
    // With a MASK, the group bits are the mask's.
    CHECK(acl::ModeBits(Text("u::rw-,u:5:rwx,g::r--,m::rwx,o::---")) == 0670);
    Acl a = Text("u::rw-,u:5:rwx,g::r--,m::rwx,o::---");
    acl::ApplyMode(&a, 0604);
    CHECK(a == Text("u::rw-,u:5:rwx,g::r--,m::---,o::r--"));
    Acl b = Text("u::rw-,g::r--,o::---");
    acl::ApplyMode(&b, 0751);
    CHECK(b == Text("u::rwx,g::r-x,o::--x"));
    CHECK(acl::FromMode(0640) == Text("u::rw-,g::r--,o::---"));
  }

  TEST_CASE("ACL rules: inheritance narrows by the mode asked for (posix_acl_create_masq)") {
    Acl a = Text("u::rwx,u:5:rwx,g::r-x,m::rwx,o::r-x");
    mode_t m = S_IFREG | 0666;
    CHECK(acl::CreateMasq(&a, &m));
    CHECK(m == (S_IFREG | 0664));
    CHECK(a == Text("u::rw-,u:5:rwx,g::r-x,m::rw-,o::r--"));
    // Equivalent to a mode: nothing to store.
    Acl b = Text("u::rwx,g::r-x,o::---");
    mode_t d = S_IFDIR | S_ISGID | 0777;
    CHECK_FALSE(acl::CreateMasq(&b, &d));
    CHECK(d == (S_IFDIR | S_ISGID | 0750));
  }

  TEST_CASE("ACL rules: the check of a caller who is not the owner (posix_acl_permission)") {
    const Acl a = Text("u::rwx,u:10:rw-,u:11:rwx,g::r--,g:20:-w-,g:21:r-x,m::r-x,o::--x");
    auto as = [](uid_t uid, std::vector<gid_t> groups) {
      return acl::Asker{uid, [groups](gid_t g) {
                          return std::find(groups.begin(), groups.end(), g) != groups.end();
                        }};
    };
    // Named users: their entry, masked.
    CHECK(acl::Permits(a, 1, 2, as(10, {}), R_OK));
    CHECK_FALSE(acl::Permits(a, 1, 2, as(10, {}), W_OK));  // the mask has no w
    CHECK(acl::Permits(a, 1, 2, as(11, {}), R_OK | X_OK));
    // A named user entry decides even if a group would grant more.
    CHECK_FALSE(acl::Permits(a, 1, 2, as(10, {21}), X_OK));
    // Groups: one matching entry must grant all, masked.
    CHECK(acl::Permits(a, 1, 2, as(30, {2}), R_OK));
    CHECK_FALSE(acl::Permits(a, 1, 2, as(30, {20}), W_OK));  // masked away
    CHECK(acl::Permits(a, 1, 2, as(30, {20, 21}), R_OK | X_OK));
    CHECK_FALSE(acl::Permits(a, 1, 2, as(30, {2, 20}), R_OK | W_OK));  // no single entry
    // A matching group that grants nothing shuts OTHER out.
    CHECK_FALSE(acl::Permits(a, 1, 2, as(30, {20}), X_OK));
    // Others.
    CHECK(acl::Permits(a, 1, 2, as(30, {}), X_OK));
    CHECK_FALSE(acl::Permits(a, 1, 2, as(30, {}), R_OK));
    // Without a MASK (no named entries): GROUP_OBJ as is.
    const Acl b = Text("u::rw-,g::rw-,o::---");
    CHECK(acl::Permits(b, 1, 2, as(30, {2}), R_OK | W_OK));
  }

  TEST_CASE("ACL on an inode: setting one sets the mode in the same call; equivalent ones are "
            "not stored") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f", 0644);
    REQUIRE(fs->SetXattr(kRoot, f, "system.posix_acl_access",
                         Value("u::rw-,u:1000:rwx,g::r--,m::rwx,o::---"), 0)
                .ok());
    CHECK(ModeOf(*fs, f) == 0670);
    CHECK(*fs->GetXattr(kRoot, f, "system.posix_acl_access") ==
          Value("u::rw-,u:1000:rwx,g::r--,m::rwx,o::---"));
    CHECK(*fs->ListXattr(kRoot, f) == std::string("system.posix_acl_access\0", 24));
    // An equivalent list replaces the stored one by the mode.
    REQUIRE(fs->SetXattr(kRoot, f, "system.posix_acl_access", Value("u::rwx,g::r-x,o::r--"), 0)
                .ok());
    CHECK(ModeOf(*fs, f) == 0754);
    CHECK(Err(fs->GetXattr(kRoot, f, "system.posix_acl_access")) == ENODATA);
    CHECK(fs->ListXattr(kRoot, f)->empty());
    // Removing a list the file does not have succeeds, as on ext4.
    CHECK(fs->RemoveXattr(kRoot, f, "system.posix_acl_access").ok());
    CHECK(fs->RemoveXattr(kRoot, f, "system.posix_acl_default").ok());
  }

  TEST_CASE("ACL on an inode: chmod shows in the list; the list's other bits stay") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f", 0644);
    REQUIRE(fs->SetXattr(kRoot, f, "system.posix_acl_access",
                         Value("u::rw-,u:1000:rwx,g::r--,m::rwx,o::---"), 0)
                .ok());
    Chmod(*fs, kRoot, f, 0640);
    CHECK(*fs->GetXattr(kRoot, f, "system.posix_acl_access") ==
          Value("u::rw-,u:1000:rwx,g::r--,m::r--,o::---"));
    // The named entry is masked to r--.
    CHECK(fs->Access(Cred(1000, 1000), f, R_OK).ok());
    CHECK(Err(fs->Access(Cred(1000, 1000), f, W_OK)) == EACCES);
    Chmod(*fs, kRoot, f, 0670);
    CHECK(fs->Access(Cred(1000, 1000), f, R_OK | W_OK | X_OK).ok());
    // Removing the list leaves the mode, mask bits and all.
    REQUIRE(fs->RemoveXattr(kRoot, f, "system.posix_acl_access").ok());
    CHECK(ModeOf(*fs, f) == 0670);
    CHECK(Err(fs->Access(Cred(1000, 1000), f, R_OK)) == EACCES);
  }

  TEST_CASE("ACL on an inode: who may set, and where") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d", 0777);
    const Cred alice(1000, 1000), bob(1001, 1001);
    auto f = fs->Create(alice, d, "f", 0644, O_RDWR);
    REQUIRE(f.ok());
    const Ino ino = f->attr.st_ino;
    const std::string v = Value("u::rw-,u:1001:rw-,g::r--,m::rw-,o::---");
    CHECK(Err(fs->SetXattr(bob, ino, "system.posix_acl_access", v, 0)) == EPERM);
    CHECK(Err(fs->RemoveXattr(bob, ino, "system.posix_acl_access")) == EPERM);
    CHECK(fs->SetXattr(alice, ino, "system.posix_acl_access", v, 0).ok());
    CHECK(fs->Access(bob, ino, R_OK | W_OK).ok());
    // Reading a list needs no permission at all.
    CHECK(fs->GetXattr(Cred(1002, 1002), ino, "system.posix_acl_access").ok());
    // Default ACLs only on directories.
    CHECK(Err(fs->SetXattr(alice, ino, "system.posix_acl_default", v, 0)) == EACCES);
    CHECK(fs->RemoveXattr(alice, ino, "system.posix_acl_default").ok());
    auto l = fs->Symlink(kRoot, 1, "l", "d/f");
    REQUIRE(l.ok());
    CHECK(Err(fs->SetXattr(kRoot, l->attr.st_ino, "system.posix_acl_access", v, 0)) ==
          EOPNOTSUPP);
    CHECK(Err(fs->SetXattr(alice, ino, "system.posix_acl_access", "junk", 0)) == EINVAL);
    CHECK(Err(fs->SetXattr(alice, ino, "system.other", "x", 0)) == EOPNOTSUPP);
  }

  TEST_CASE("ACL on an inode: setgid goes when the setter is not in the group") {
    auto fs = MustMount(FormattedPool());
    const Cred alice(1000, 1000);
    const Ino d = MustMkdir(*fs, 1, "d", 0777);
    auto f = fs->Create(alice, d, "f", 02775, O_RDWR);
    REQUIRE(f.ok());
    const Ino ino = f->attr.st_ino;
    SetAttrArgs a;
    a.valid = SetAttrArgs::kGid;
    a.gid = 50;
    REQUIRE(fs->SetAttr(kRoot, ino, a).ok());
    Chmod(*fs, kRoot, ino, 02775);
    const std::string v = Value("u::rwx,u:7:r--,g::r-x,m::r-x,o::r-x");
    REQUIRE(fs->SetXattr(alice, ino, "system.posix_acl_access", v, 0).ok());
    CHECK(ModeOf(*fs, ino) == 0755);
    Chmod(*fs, kRoot, ino, 02775);
    REQUIRE(fs->SetXattr(Cred(1000, 1000, 0, [] { return std::vector<gid_t>{50}; }), ino,
                         "system.posix_acl_access", v, 0)
                .ok());
    CHECK(ModeOf(*fs, ino) == 02755);
  }

  TEST_CASE("ACL inheritance: files and directories take the parent's default ACL; the umask "
            "applies only without one") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d", 0755);
    const std::string dflt = Value("u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---");
    REQUIRE(fs->SetXattr(kRoot, d, "system.posix_acl_default", dflt, 0).ok());
    Cred c = Cred::Root();
    c.set_umask(077);
    auto f = fs->Create(c, d, "f", 0666, O_RDWR);
    REQUIRE(f.ok());
    CHECK((f->attr.st_mode & 07777) == 0660);
    CHECK(*fs->GetXattr(kRoot, f->attr.st_ino, "system.posix_acl_access") ==
          Value("u::rw-,u:1000:rwx,g::r-x,m::rw-,o::---"));
    CHECK(Err(fs->GetXattr(kRoot, f->attr.st_ino, "system.posix_acl_default")) == ENODATA);
    auto sub = fs->Mkdir(c, d, "sub", 0777);
    REQUIRE(sub.ok());
    CHECK((sub->attr.st_mode & 07777) == 0770);
    CHECK(*fs->GetXattr(kRoot, sub->attr.st_ino, "system.posix_acl_access") ==
          Value("u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---"));
    CHECK(*fs->GetXattr(kRoot, sub->attr.st_ino, "system.posix_acl_default") == dflt);
    auto fifo = fs->Mknod(c, d, "p", S_IFIFO | 0644, 0);
    REQUIRE(fifo.ok());
    CHECK((fifo->attr.st_mode & 07777) == 0640);
    auto link = fs->Symlink(c, d, "l", "f");
    REQUIRE(link.ok());
    CHECK((link->attr.st_mode & 07777) == 0777);
    CHECK(fs->ListXattr(kRoot, link->attr.st_ino)->empty());
    // Elsewhere the umask applies, and nothing is stored.
    auto g = fs->Create(c, 1, "g", 0666, O_RDWR);
    REQUIRE(g.ok());
    CHECK((g->attr.st_mode & 07777) == 0600);
    CHECK(fs->ListXattr(kRoot, g->attr.st_ino)->empty());
    // O_TMPFILE inherits as any create does.
    auto t = fs->Tmpfile(c, d, 0640, O_RDWR);
    REQUIRE(t.ok());
    CHECK((t->attr.st_mode & 07777) == 0640);
    CHECK(*fs->GetXattr(kRoot, t->attr.st_ino, "system.posix_acl_access") ==
          Value("u::rw-,u:1000:rwx,g::r-x,m::r--,o::---"));
    auto t2 = fs->Tmpfile(c, 1, 0666, O_RDWR);
    REQUIRE(t2.ok());
    CHECK((t2->attr.st_mode & 07777) == 0600);
    // A minimal default ACL yields a file with no access ACL.
    REQUIRE(fs->SetXattr(kRoot, d, "system.posix_acl_default", Value("u::rwx,g::r-x,o::r-x"), 0)
                .ok());
    auto h = fs->Create(c, d, "h", 0666, O_RDWR);
    REQUIRE(h.ok());
    CHECK((h->attr.st_mode & 07777) == 0644);
    CHECK(fs->ListXattr(kRoot, h->attr.st_ino)->empty());
  }

  TEST_CASE("ACL check: named users and groups, the mask, and the kernel's mask-of-none rule") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f", 0644);
    const Cred nobody(65534, 65534), staff(2000, 2000, 0, [] { return std::vector<gid_t>{50}; });
    REQUIRE(fs->SetXattr(kRoot, f, "system.posix_acl_access",
                         Value("u::rw-,u:65534:rw-,g::---,g:50:r--,m::rw-,o::---"), 0)
                .ok());
    CHECK(fs->Access(nobody, f, R_OK | W_OK).ok());
    CHECK(Err(fs->Open(nobody, f, O_RDWR | O_TRUNC)) == 0);
    CHECK(fs->Access(staff, f, R_OK).ok());
    CHECK(Err(fs->Access(staff, f, W_OK)) == EACCES);
    CHECK(Err(fs->Access(Cred(3000, 3000), f, R_OK)) == EACCES);
    // A mask of --- (group bits 0): the kernel skips the ACL and others'
    // bits apply, to named users too.
    Chmod(*fs, kRoot, f, 0604);
    CHECK(fs->Access(nobody, f, R_OK).ok());
    CHECK(Err(fs->Access(nobody, f, W_OK)) == EACCES);
    // The owner's bits decide for the owner, whatever the list says.
    const Cred alice(1000, 1000);
    SetAttrArgs own;
    own.valid = SetAttrArgs::kUid | SetAttrArgs::kGid;
    own.uid = own.gid = 1000;
    REQUIRE(fs->SetAttr(kRoot, f, own).ok());
    Chmod(*fs, alice, f, 0064);
    CHECK(Err(fs->Access(alice, f, R_OK)) == EACCES);
    CHECK(fs->Access(nobody, f, R_OK | W_OK).ok());
  }

  TEST_CASE("ACL: lists and modes survive remount") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino d = MustMkdir(*fs, 1, "d", 0755);
    const std::string dflt = Value("u::rwx,g::r-x,g:9:rwx,m::rwx,o::---");
    REQUIRE(fs->SetXattr(kRoot, d, "system.posix_acl_default", dflt, 0).ok());
    const Ino f = MustCreate(*fs, d, "f", 0640);
    fs->Unmount();
    std::vector<char> img = raw->Snapshot();
    fs.reset();
    auto again = MountImage(img);
    CHECK(*again->GetXattr(kRoot, d, "system.posix_acl_default") == dflt);
    CHECK(*again->GetXattr(kRoot, f, "system.posix_acl_access") ==
          Value("u::rw-,g::r-x,g:9:rwx,m::r--,o::---"));
    CHECK(ModeOf(*again, f) == 0640);
  }
}

}  // namespace
}  // namespace leasefs::engine
