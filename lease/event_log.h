// EventLog: the numbered events of a lease table, of which the last `kept`
// are kept (LEASEFS_IOC_EVENTS). Not thread-safe; the table's mutex guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "base/clock.h"
#include "lease/lease_table.h"

namespace leasefs::lease {

class EventLog {
 public:
  explicit EventLog(size_t kept) : kept_(kept) {}

  // Numbers `e` (seq) and stamps it (time), forgetting the oldest event when
  // `kept` are held.
  void Append(Event e) {
    e.seq = next_seq_++;
    e.time = static_cast<uint64_t>(NowNs());
    if (events_.size() == kept_) events_.pop_front();
    events_.push_back(e);
  }

  // The sequence number of the last event appended (0: none yet).
  uint64_t last_seq() const { return next_seq_ - 1; }

  // Up to `max` events after `after`, in order; *lost is how many events
  // after `after` are forgotten already.
  std::vector<Event> After(uint64_t after, size_t max, uint64_t* lost) const {
    const uint64_t first = events_.empty() ? next_seq_ : events_.front().seq;
    *lost = after + 1 < first ? first - after - 1 : 0;
    std::vector<Event> out;
    const uint64_t skip = after + 1 > first ? after + 1 - first : 0;
    for (uint64_t i = skip; i < events_.size() && out.size() < max; ++i) {
      out.push_back(events_[i]);
    }
    return out;
  }

 private:
  const size_t kept_;
  std::deque<Event> events_;
  uint64_t next_seq_ = 1;
};

}  // namespace leasefs::lease
