#include "base/status.h"

#include <cstring>

namespace leasefs {

Status Status::Error(int err, std::string_view msg) {
  if (err <= 0) err = EIO;  // an error must never read as success
  return Status(err, msg.empty() ? nullptr : std::make_unique<std::string>(msg));
}

Status Status::FromErrno(std::string_view what) {
  const int saved = errno;
  return Error(saved, what);
}

Status::Status(const Status& other)
    : err_(other.err_), msg_(other.msg_ ? std::make_unique<std::string>(*other.msg_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) {
    err_ = other.err_;
    msg_ = other.msg_ ? std::make_unique<std::string>(*other.msg_) : nullptr;
  }
  return *this;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out = std::strerror(err_);
  if (msg_) {
    out += ": ";
    out += *msg_;
  }
  return out;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  if (msg_) {
    msg += ": ";
    msg += *msg_;
  }
  return Error(err_, msg);
}

}  // namespace leasefs
