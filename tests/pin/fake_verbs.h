// A fake of pin::VerbsOps (pin/verbs_provider.h) for tests with no RDMA
// device: MRs are heap objects with lkey 1, 2, ... and rkey lkey + 100; it
// records every call, can fail the next registration or deregistration, and
// runs a test's hook at each deregistration (to look at the daemon's pins at
// that moment).
#pragma once

#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/thread_annotations.h"
#include "pin/verbs_provider.h"

namespace leasefs::pin {

class FakeVerbs final : public VerbsOps {
 public:
  ~FakeVerbs() override {
    MutexLock l(&mu_);
    for (ibv_mr* mr : live_) delete mr;
  }
  Result<ibv_mr*> RegMr(ibv_pd* pd, void* addr, size_t length, int access) override {
    MutexLock l(&mu_);
    char line[64];
    std::snprintf(line, sizeof(line), "reg %zu pages access 0x%x", length / 4096,
                  static_cast<unsigned>(access));
    calls_.emplace_back(line);
    if (int err = std::exchange(fail_reg_, 0); err != 0) return Status::Error(err, "fake reg");
    auto* mr = new ibv_mr{};
    mr->pd = pd;
    mr->addr = addr;
    mr->length = length;
    mr->lkey = ++next_key_;
    mr->rkey = mr->lkey + 100;
    live_.insert(mr);
    return mr;
  }
  Status DeregMr(ibv_mr* mr) override {
    std::function<void(uint32_t)> hook;
    {
      MutexLock l(&mu_);
      calls_.push_back("dereg " + std::to_string(mr->lkey));
      if (int err = std::exchange(fail_dereg_, 0); err != 0) {
        return Status::Error(err, "fake dereg");
      }
      hook = on_dereg_;
    }
    if (hook) hook(mr->lkey);
    MutexLock l(&mu_);
    live_.erase(mr);
    delete mr;
    return Status::Ok();
  }
  OdpCaps QueryOdp(ibv_pd*) override {
    MutexLock l(&mu_);
    ++odp_queries_;
    return odp_;
  }

  void SetOdp(OdpCaps caps) {
    MutexLock l(&mu_);
    odp_ = caps;
  }
  void FailNextReg(int err) {
    MutexLock l(&mu_);
    fail_reg_ = err;
  }
  void FailNextDereg(int err) {
    MutexLock l(&mu_);
    fail_dereg_ = err;
  }
  // Runs at each successful deregistration, before the MR is gone, with its
  // lkey, with no lock of the fake held.
  void OnDereg(std::function<void(uint32_t)> hook) {
    MutexLock l(&mu_);
    on_dereg_ = std::move(hook);
  }
  std::vector<std::string> Calls() const {
    MutexLock l(&mu_);
    return calls_;
  }
  size_t Live() const {
    MutexLock l(&mu_);
    return live_.size();
  }
  int OdpQueries() const {
    MutexLock l(&mu_);
    return odp_queries_;
  }

 private:
  mutable Mutex mu_;
  std::vector<std::string> calls_ GUARDED_BY(mu_);
  std::set<ibv_mr*> live_ GUARDED_BY(mu_);
  uint32_t next_key_ GUARDED_BY(mu_) = 0;
  int fail_reg_ GUARDED_BY(mu_) = 0;
  int fail_dereg_ GUARDED_BY(mu_) = 0;
  int odp_queries_ GUARDED_BY(mu_) = 0;
  OdpCaps odp_ GUARDED_BY(mu_);
  std::function<void(uint32_t)> on_dereg_ GUARDED_BY(mu_);
};

}  // namespace leasefs::pin
