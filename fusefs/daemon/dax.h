// DaxMaps: who has which pool blocks mapped through the DAX path, and the
// end of every mapping (docs/dax.md).
//
// The engine keeps the records themselves, persistently, in the pool's
// quarantine table (engine::Filesystem::MapForDax, DropReach): a block of a
// recorded range that its file lets go is given to no other file until the
// record goes. This class decides when a record goes: when the process that
// made the mapping confirms it dropped it (DAX_UNMAP), or when that process
// dies (seen through a pidfd by this class's own thread, within
// milliseconds). At start it takes over the records a previous daemon left:
// those whose process is gone are dropped at once, the others are watched
// like new ones.
//
// Thread safety: every method may be called from any thread. One mutex
// guards the maps; engine calls (DropReach) are made without it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "engine/filesystem.h"

namespace leasefs::daemon {

class DaxMaps {
 public:
  // Records of one non-root user may take at most this share of the pool's
  // table (EDQUOT beyond), so that no user can keep the others from DAX.
  static constexpr uint64_t kUserShareDivisor = 4;
  // Processes of one non-root user with mappings at once (a pidfd each).
  static constexpr size_t kMaxOwnersPerUser = 1024;

  // Takes over the records already in `fs`'s table (see above), then starts
  // the thread. `fs` must outlive this.
  explicit DaxMaps(engine::Filesystem* fs);
  ~DaxMaps();
  DaxMaps(const DaxMaps&) = delete;
  DaxMaps& operator=(const DaxMaps&) = delete;

  // The process a request's thread belongs to, named for the records.
  struct Process {
    engine::Filesystem::ReachOwner owner;  // owner.pid is its pid
    std::shared_ptr<UniqueFd> pidfd;
  };
  // Errors: ESRCH (gone), EPERM (outside our pid namespace: tid 0).
  static Result<Process> Identify(pid_t tid);

  // A fresh mapping id (never 0, above every id in the table).
  uint64_t NextId();

  // Before MapForDax: reserves up to `want` records of `uid`'s share and
  // returns how many (EDQUOT when none are left; ENOLCK when the user has
  // too many processes with mappings). Reserved at once, so that racing
  // calls cannot all spend the same share; Add or GiveBack settles it.
  Result<size_t> Allowance(uid_t uid, size_t want);
  // Returns a reservation that MapForDax did not use (it failed).
  void GiveBack(uid_t uid, size_t reserved);

  // After a successful MapForDax of `map_id` with `records` records (of the
  // `reserved` Allowance gave): the mapping belongs to `proc` (of user `uid`)
  // and to open file `open_file`. False if it cannot be watched (the records
  // are dropped then) or the process died meanwhile (dropped too): the
  // caller must not hand the extents out.
  struct Range {
    engine::Ino ino = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
    bool writable = false;
    // The records of a pin (docs/pins.md): they go with the pin
    // (DropPinned) or their process, never by DAX_UNMAP.
    bool pinned = false;
  };
  bool Add(const Process& proc, uid_t uid, uint64_t map_id, uint64_t open_file, size_t records,
           size_t reserved, const Range& range);

  // DAX_UNMAP by process `proc`: map_id, or all of them for 0, except the
  // records of pins. Returns the file ranges of the mappings dropped; ENOENT
  // when none matched.
  Result<std::vector<Range>> Unmap(const Process& proc, uint64_t map_id);
  // The pin that `proc`'s mapping `map_id` recorded is gone. False if there
  // was no such mapping (its process died, and it went with it).
  bool DropPinned(const Process& proc, uint64_t map_id);

  // Whether some process may still store into `ino` through a writable
  // DAX mapping made by this daemon.
  bool WritableMapped(engine::Ino ino) const;

  // The open file is closed; its mappings stay until their process drops
  // them or dies.
  void FileClosed(uint64_t open_file);

  // What the list reports about a mapping beyond the engine's record.
  struct MapInfo {
    uint64_t open_file = 0;  // 0: closed, or made before this daemon started
    bool restart = false;    // made before this daemon started
    uid_t uid = 0;           // whose share it counts against
  };
  std::map<uint64_t, MapInfo> Infos() const;

 private:
  struct Owner {
    uid_t uid = 0;
    engine::Filesystem::ReachOwner id;
    std::shared_ptr<UniqueFd> pidfd;
    uint64_t serial = 0;  // epoll key
    std::vector<uint64_t> maps;
  };
  struct Map {
    uint64_t owner_serial = 0;
    uint64_t open_file = 0;
    bool restart = false;
    size_t records = 0;
    uid_t uid = 0;
    Range range;
  };

  // The owner for `proc`, watched; created if new. nullptr if epoll fails.
  Owner* OwnerFor(const Process& proc, uid_t uid) REQUIRES(mu_);
  // Gives back `records` of `uid`'s share (none is kept for root).
  void Uncharge(uid_t uid, size_t records) REQUIRES(mu_);
  // Removes the maps of a dead owner; returns their ids (to drop, unlocked).
  std::vector<uint64_t> Bury(uint64_t serial) REQUIRES(mu_);
  // Removes `proc`'s mappings that `match` picks; returns their ids and ranges
  // (to drop, unlocked).
  void Remove(const Process& proc, const std::function<bool(uint64_t id, const Range&)>& match,
              std::vector<uint64_t>* ids, std::vector<Range>* ranges) REQUIRES(mu_);
  void DropAll(const std::vector<uint64_t>& ids);
  void ThreadLoop();
  void Adopt();

  engine::Filesystem* const fs_;
  mutable Mutex mu_;
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  uint64_t next_serial_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, Owner> owners_ GUARDED_BY(mu_);  // by serial
  std::map<uint64_t, Map> maps_ GUARDED_BY(mu_);                 // by map id
  std::unordered_map<uid_t, size_t> records_by_uid_ GUARDED_BY(mu_);
  UniqueFd epoll_;
  UniqueFd wake_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace leasefs::daemon
