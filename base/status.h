// Status: the outcome of an operation that can fail, as an errno value plus a
// human-readable message. Success carries no message and costs one int.
//
// leasefs speaks errno at every boundary that matters (FUSE replies, tool exit
// messages), so the code space is errno's own; corruption uses EUCLEAN
// ("Structure needs cleaning"), as ext4 and XFS do.
#pragma once

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>

namespace leasefs {

class [[nodiscard]] Status {
 public:
  // OK.
  Status() noexcept = default;

  static Status Ok() noexcept { return Status(); }
  // An error with errno value `err` (> 0) and an optional explanation.
  static Status Error(int err, std::string_view msg = {});
  // The pool's contents violate the on-media format (EUCLEAN).
  static Status Corruption(std::string_view msg) { return Error(EUCLEAN, msg); }
  // Error from a system call: `what` names the call, errno is read now.
  static Status FromErrno(std::string_view what);

  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  bool ok() const noexcept { return err_ == 0; }
  // errno value; 0 when ok().
  int err() const noexcept { return err_; }
  bool IsCorruption() const noexcept { return err_ == EUCLEAN; }
  // The explanation given at construction (may be empty).
  std::string_view message() const noexcept {
    return msg_ ? std::string_view(*msg_) : std::string_view();
  }
  // "OK", or "<strerror>: <message>".
  std::string ToString() const;

  // Returns a copy with `context` prepended to the message ("context: msg").
  Status Annotate(std::string_view context) const;

 private:
  Status(int err, std::unique_ptr<std::string> msg) noexcept : err_(err), msg_(std::move(msg)) {}

  int err_ = 0;
  std::unique_ptr<std::string> msg_;
};

}  // namespace leasefs

// Evaluates `expr` (a Status); returns it from the enclosing function if it
// is not OK.
#define LFS_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::leasefs::Status lfs_status_ = (expr);    \
    if (!lfs_status_.ok()) return lfs_status_; \
  } while (0)
