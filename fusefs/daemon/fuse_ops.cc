// The operations table: one thin noexcept adapter per FUSE request, each
// calling a Server::Do* method through ReplyOnce (exactly one reply, no
// exception into libfuse).
#include <cerrno>

#include "fusefs/daemon/reply.h"
#include "fusefs/daemon/server.h"

namespace leasefs::daemon {

namespace {

// Runs `call` on the request's Server under the ReplyOnce contract.
template <typename Call>
void Serve(fuse_req_t req, Call&& call) noexcept {
  ReplyOnce(req, [&] { return call(Server::Of(req)); });
}

void Init(void* userdata, fuse_conn_info* conn) noexcept {
  static_cast<Server*>(userdata)->DoInit(conn);
}

// Teardown (Server::Shutdown, Filesystem::Unmount) happens in main once the
// loop returned: DESTROY is not sent for every unmount, nor called at all if
// INIT never arrived.
void Destroy(void*) noexcept {}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Serve(req, [&](Server& s) { return s.DoLookup(req, parent, name); });
}

void ForgetNoReply(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept {
  try {
    Server::Of(req).DoForget(ino, nlookup);
  } catch (...) {
    // The reference leaks until the next mount reclaims the inode.
  }
}

void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept {
  ForgetNoReply(req, ino, nlookup);
  fuse_reply_none(req);
}

void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept {
  for (size_t i = 0; i < count; ++i) ForgetNoReply(req, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoGetAttr(req, ino); });
}

void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
             fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoSetAttr(req, ino, *attr, to_set, fi); });
}

void Readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  Serve(req, [&](Server& s) { return s.DoReadlink(req, ino); });
}

void Mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) noexcept {
  Serve(req, [&](Server& s) { return s.DoMknod(req, parent, name, mode, rdev); });
}

void Mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
  Serve(req, [&](Server& s) { return s.DoMkdir(req, parent, name, mode); });
}

void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Serve(req, [&](Server& s) { return s.DoUnlink(req, parent, name); });
}

void Rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Serve(req, [&](Server& s) { return s.DoRmdir(req, parent, name); });
}

void Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) noexcept {
  Serve(req, [&](Server& s) { return s.DoSymlink(req, target, parent, name); });
}

void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
            const char* new_name, unsigned flags) noexcept {
  Serve(req, [&](Server& s) { return s.DoRename(req, parent, name, new_parent, new_name, flags); });
}

void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) noexcept {
  Serve(req, [&](Server& s) { return s.DoLink(req, ino, new_parent, new_name); });
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoOpen(req, ino, fi); });
}

void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
            fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoCreate(req, parent, name, mode, fi); });
}

void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoRead(req, ino, size, off); });
}

void WriteBuf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* bufv, off_t off,
              fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoWriteBuf(req, ino, bufv, off, fi); });
}

// Writes are durable when WRITE is answered, so a FLUSH has nothing to
// flush; opens set noflush except under close_with_pins=block-close, where a
// close may wait for pins.
void Flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoFlush(req, fi); });
}

// Sent when the last descriptor of an open file description is closed (or
// its process died), asynchronously: nobody waits for the reply.
void Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  try {
    if (Server::Of(req).DoRelease(req, fi)) return;  // answered by a worker
  } catch (...) {
    // Nothing to tell anyone: the file is closed either way.
  }
  fuse_reply_err(req, 0);
}

void Poll(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, fuse_pollhandle* ph) noexcept {
  Serve(req, [&](Server& s) { return s.DoPoll(req, ino, fi, ph); });
}

void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoFsync(req, ino, datasync); });
}

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoOpenDir(req, ino, fi); });
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoReadDir(req, ino, size, off, /*plus=*/false); });
}

void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoReadDir(req, ino, size, off, /*plus=*/true); });
}

void ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info*) noexcept { fuse_reply_err(req, 0); }

void FsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoFsync(req, ino, datasync); });
}

void StatFs(fuse_req_t req, fuse_ino_t) noexcept {
  Serve(req, [&](Server& s) { return s.DoStatFs(req); });
}

void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags) noexcept {
  Serve(req, [&](Server& s) { return s.DoSetXattr(req, ino, name, value, size, flags); });
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Serve(req, [&](Server& s) { return s.DoGetXattr(req, ino, name, size); });
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  Serve(req, [&](Server& s) { return s.DoListXattr(req, ino, size); });
}

void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  Serve(req, [&](Server& s) { return s.DoRemoveXattr(req, ino, name); });
}

void Access(fuse_req_t req, fuse_ino_t ino, int mask) noexcept {
  Serve(req, [&](Server& s) { return s.DoAccess(req, ino, mask); });
}

void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
               fuse_file_info* fi) noexcept {
  Serve(req, [&](Server& s) { return s.DoFallocate(req, ino, mode, off, len, fi); });
}

void Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) noexcept {
  Serve(req, [&](Server& s) { return s.DoLseek(req, ino, off, whence); });
}

void CopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                   fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                   int flags) noexcept {
  Serve(req, [&](Server& s) {
    return s.DoCopyFileRange(req, ino_in, off_in, ino_out, off_out, fi_out, len, flags);
  });
}

void Ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info* fi,
           unsigned flags, const void* in, size_t in_size, size_t out_size) noexcept {
  Serve(req, [&](Server& s) { return s.DoIoctl(req, ino, cmd, fi, flags, in, in_size, out_size); });
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = Init;
  ops.destroy = Destroy;
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.forget_multi = ForgetMulti;
  ops.getattr = GetAttr;
  ops.setattr = SetAttr;
  ops.readlink = Readlink;
  ops.mknod = Mknod;
  ops.mkdir = Mkdir;
  ops.unlink = Unlink;
  ops.rmdir = Rmdir;
  ops.symlink = Symlink;
  ops.rename = Rename;
  ops.link = Link;
  ops.open = Open;
  ops.create = Create;
  ops.read = Read;
  ops.write_buf = WriteBuf;
  ops.flush = Flush;
  ops.release = Release;
  ops.fsync = Fsync;
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;
  ops.readdirplus = ReadDirPlus;
  ops.releasedir = ReleaseDir;
  ops.fsyncdir = FsyncDir;
  ops.statfs = StatFs;
  ops.setxattr = SetXattr;
  ops.getxattr = GetXattr;
  ops.listxattr = ListXattr;
  ops.removexattr = RemoveXattr;
  ops.access = Access;
  ops.fallocate = Fallocate;
  ops.lseek = Lseek;
  ops.copy_file_range = CopyFileRange;
  ops.ioctl = Ioctl;
  ops.poll = Poll;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& Server::Ops() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace leasefs::daemon
