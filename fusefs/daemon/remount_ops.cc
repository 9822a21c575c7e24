// LEASEFS_IOC_REMOUNT: the daemon's part of `mount -o remount,...`
// (include/leasefs/ioctl.h, docs/mount.md). The kernel's part, mount(2)
// with MS_REMOUNT, is made by the command that sends this (remount.cc).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <linux/capability.h>

#include "fusefs/daemon/ioctl_args.h"
#include "fusefs/daemon/server.h"
#include "lease/process.h"
#include "leasefs/ioctl.h"

namespace leasefs::daemon {

namespace {

using ioctl_args::ReadArg;

// A remount changes the mount for everybody: only who may remount it in the
// kernel (root with CAP_SYS_ADMIN in the daemon's user namespace) may
// change the daemon's part. The caller is blocked in this ioctl, so its
// thread id names it while we look.
bool MayRemount(const fuse_ctx& caller) {
  return caller.uid == 0 && lease::HasCapability(caller.pid, CAP_SYS_ADMIN);
}

uint32_t AtimeAbi(const DaemonOptions& o) {
  switch (EngineOptions(o).atime) {
    case engine::AtimeMode::kStrict:
      return LEASEFS_ATIME_STRICT;
    case engine::AtimeMode::kNever:
      return LEASEFS_ATIME_NEVER;
    case engine::AtimeMode::kRelatime:
      break;
  }
  return LEASEFS_ATIME_RELATIME;
}

leasefs_mount_state StateAbi(const DaemonOptions& o) {
  leasefs_mount_state st{};
  st.read_only = o.read_only ? 1 : 0;
  st.atime = AtimeAbi(o);
  st.nodiratime = EngineOptions(o).nodiratime ? 1 : 0;
  return st;
}

void SetMessage(leasefs_remount* out, std::string_view msg) {
  const size_t n = std::min(msg.size(), sizeof(out->message) - 1);
  std::memcpy(out->message, msg.data(), n);
  out->message[n] = '\0';
}

}  // namespace

int Server::DoRemount(fuse_req_t req, fuse_ino_t ino, const void* in, size_t in_size,
                      size_t out_size) {
  auto r = std::make_unique<leasefs_remount>();
  if (!ReadArg(in, in_size, r.get()) || out_size < sizeof(*r)) return EINVAL;
  if (ino != FUSE_ROOT_ID) return EINVAL;
  if ((r->flags & ~LEASEFS_REMOUNT_DRY_RUN) != 0) return EINVAL;
  if (r->before.reserved != 0 || r->after.reserved != 0) return EINVAL;
  if (std::memchr(r->options, '\0', sizeof(r->options)) == nullptr) return EINVAL;
  if (!MayRemount(*fuse_req_ctx(req))) return EPERM;
  const bool dry_run = (r->flags & LEASEFS_REMOUNT_DRY_RUN) != 0;

  auto out = std::make_unique<leasefs_remount>();
  out->flags = r->flags;
  MutexLock l(&remount_mu_);
  out->before = StateAbi(mount_options_);
  DaemonOptions next;
  Status s = PlanRemount(mount_options_, SplitOptionList(r->options), getuid(), getgid(), &next);
  if (s.ok()) s = fs_->SetReadOnly(next.read_only, dry_run);
  if (s.ok() && !dry_run) {
    const engine::MountOptions mo = EngineOptions(next);
    fs_->SetAtime(mo.atime, mo.nodiratime);
    mount_options_ = next;
  }
  out->after = s.ok() ? StateAbi(next) : out->before;
  out->error = s.ok() ? 0 : s.err();
  if (!s.ok()) SetMessage(out.get(), s.message());
  fuse_reply_ioctl(req, 0, out.get(), sizeof(*out));
  return 0;
}

}  // namespace leasefs::daemon
