// The pin of `leasectl hold --pin`: a pin context of the file's mount and one
// pin of the held range in it, unregistered and closed when it goes.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "base/status.h"
#include "lease/client/leasefs_pin.h"

namespace leasefs::leasectl {

class HeldPin {
 public:
  // Opens a pin context on the mount of `fd` (leasefs_pin_context_open) and
  // registers [offset, offset + length) of the file open as `fd` with
  // `provider` (LEASEFS_PIN_SOFTNIC: peers may write and read it;
  // LEASEFS_PIN_DECLARED). `fd` must stay open while the pin lives. Errors:
  // those of leasefs_pin_context_open and leasefs_pin_register, as errno
  // values; the message says which step failed.
  static Result<HeldPin> Make(int fd, uint64_t offset, uint64_t length, uint32_t provider);

  HeldPin() noexcept = default;
  ~HeldPin();  // Drop(), errors ignored
  HeldPin(HeldPin&& o) noexcept;
  HeldPin& operator=(HeldPin&& o) noexcept;
  HeldPin(const HeldPin&) = delete;
  HeldPin& operator=(const HeldPin&) = delete;

  uint64_t id() const { return id_; }
  uint64_t rkey() const { return rkey_; }  // 0 for DECLARED
  uint64_t context() const { return ctx_.id; }
  // The soft NIC as "ADDRESS:PORT" (PIN_INFO), "" when it is not serving.
  const std::string& softnic() const { return softnic_; }
  // The context's descriptor, to poll for POLLIN (a notice, or the daemon's
  // end of the context); -1 once the context is closed.
  int context_fd() const { return ctx_.fd; }

  // What came on the context, read without waiting.
  struct Notice {
    enum Kind { kNone, kFenced, kClosed } kind = kNone;  // kClosed: by the daemon
    uint64_t pin = 0;
    uint64_t rkey = 0;
  };
  // The next notice that has come, if any. After kClosed the context is
  // closed here too (context_fd() is -1). Errors: EPROTO (a malformed frame).
  Result<Notice> NextNotice();

  // Unregisters the pin (LEASEFS_IOC_UNPIN), then closes the context. Does
  // nothing once dropped. Errors: those of leasefs_pin_unregister; the
  // context is closed all the same, which ends its pins when the daemon
  // sees it.
  Status Drop();
  bool held() const { return id_ != 0; }

 private:
  int fd_ = -1;  // the data file's; not owned
  leasefs_pin_context ctx_{-1, 0, {}};
  uint64_t id_ = 0;
  uint64_t rkey_ = 0;
  std::string softnic_;
};

}  // namespace leasefs::leasectl
