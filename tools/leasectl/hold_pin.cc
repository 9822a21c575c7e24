#include "tools/leasectl/hold_pin.h"

#include <cerrno>
#include <utility>

#include <fmt/core.h>

namespace leasefs::leasectl {

Result<HeldPin> HeldPin::Make(int fd, uint64_t offset, uint64_t length, uint32_t provider) {
  HeldPin p;
  p.fd_ = fd;
  if (const int rc = leasefs_pin_context_open(fd, &p.ctx_); rc != 0)
    return Status::Error(-rc, "opening a pin context");
  const uint32_t flags =
      provider == LEASEFS_PIN_SOFTNIC ? LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ : 0;
  if (const int rc = leasefs_pin_register(fd, &p.ctx_, offset, length, provider, flags, &p.id_,
                                          &p.rkey_);
      rc != 0)
    return Status::Error(-rc, "registering the range");
  leasefs_pin_info info{};
  if (leasefs_pin_get_info(fd, &info) == 0 && (info.flags & LEASEFS_PIN_INFO_SOFTNIC) != 0) {
    info.softnic_address[sizeof(info.softnic_address) - 1] = '\0';
    p.softnic_ = fmt::format("{}:{}", info.softnic_address, info.softnic_port);
  }
  return p;
}

HeldPin::~HeldPin() { (void)Drop(); }

HeldPin::HeldPin(HeldPin&& o) noexcept
    : fd_(o.fd_),
      ctx_(std::exchange(o.ctx_, leasefs_pin_context{-1, 0, {}})),
      id_(std::exchange(o.id_, 0)),
      rkey_(o.rkey_),
      softnic_(std::move(o.softnic_)) {}

HeldPin& HeldPin::operator=(HeldPin&& o) noexcept {
  if (this != &o) {
    (void)Drop();
    fd_ = o.fd_;
    ctx_ = std::exchange(o.ctx_, leasefs_pin_context{-1, 0, {}});
    id_ = std::exchange(o.id_, 0);
    rkey_ = o.rkey_;
    softnic_ = std::move(o.softnic_);
  }
  return *this;
}

Result<HeldPin::Notice> HeldPin::NextNotice() {
  if (ctx_.fd < 0) return Notice{};
  Notice n;
  const int rc = leasefs_pin_wait_fenced(&ctx_, 0, &n.pin, &n.rkey);
  if (rc == 0) {
    n.kind = Notice::kFenced;
    return n;
  }
  if (rc == -ETIMEDOUT) return Notice{};
  if (rc == -EPIPE || rc == -ECONNRESET) {
    leasefs_pin_context_close(&ctx_);
    return Notice{Notice::kClosed, 0, 0};
  }
  return Status::Error(-rc, "reading the pin context");
}

Status HeldPin::Drop() {
  Status s;
  if (id_ != 0 && ctx_.fd >= 0) {
    if (const int rc = leasefs_pin_unregister(fd_, &ctx_, id_); rc != 0)
      s = Status::Error(-rc, "unregistering the pin");
  }
  id_ = 0;
  leasefs_pin_context_close(&ctx_);
  return s;
}

}  // namespace leasefs::leasectl
