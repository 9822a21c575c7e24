// Result<T>: a T, or the Status saying why there is none (g++ 12 has no
// std::expected).
#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "base/status.h"

namespace leasefs {

template <typename T>
class [[nodiscard]] Result {
 public:
  // REQUIRES: !status.ok()
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok());
  }
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return std::holds_alternative<T>(v_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace leasefs

#define LFS_CONCAT_INNER_(a, b) a##b
#define LFS_CONCAT_(a, b) LFS_CONCAT_INNER_(a, b)

// Declares or assigns `lhs` from the value of `rexpr` (a Result<T>), or returns
// its Status from the enclosing function.
#define LFS_ASSIGN_OR_RETURN(lhs, rexpr) \
  LFS_ASSIGN_OR_RETURN_IMPL_(LFS_CONCAT_(lfs_result_, __LINE__), lhs, rexpr)
#define LFS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
