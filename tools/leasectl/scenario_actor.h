// The processes of a scenario (`leasectl scenario`): each actor is a real
// process, forked from leasectl, that does what it is told one request at a
// time and answers with the result. It keeps its own descriptors, DAX
// mappings and pin contexts between requests, under names the scenario
// gives them ("F", "ctx"), so the daemon sees exactly what a program doing
// those system calls would make it see.
//
// The channel is a SOCK_SEQPACKET socket pair; a request and its reply are
// one JSON object each. An actor also sends notices of its own on it (a
// break signal arrived, a lease was released in answer, a child exited),
// which the coordinator collects as they come.
//
// Requests ({"op": ..., arguments}; names are the actor's own):
//   open path flags(r|w|rw, ",nonblock", ",creat") as   close fd
//   lease fd type(read|write) flags([exclusive,unbreakable,nonblock]) off len
//         notify(bool: a signal on a break) answer(release|ignore)
//   convert fd id type flags        unlock fd off len     getlease fd off
//   map fd off len as (DAX)  store map off text   unmap map
//   context fd as   pin fd ctx off len provider(softnic|declared)   unpin ctx id
//   context_close ctx
//   truncate path size   ftruncate fd size   fallocate fd mode off len
//   clone dst src off len dstoff   defrag fd   pwrite fd off len byte   pread fd off len
//   peer_write rkey off text (the soft NIC, as a remote peer would)
//   send what(a descriptor or context name) to(actor)   receive as
//   adopt as (the descriptor that came with this request: a link leasectl
//   made to another actor, "link NAME")
//   fork name (the child becomes actor `name`; the reply carries its channel)
//   exit code   sleep ms
// Reply: {"rc": 0 or an errno value, "err": "ETXTBSY" or "OK", "ns": time
// taken, "value": ..., "text": ...}.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace leasefs::leasectl {

using Json = nlohmann::json;

// The errno's name ("ETXTBSY"), or "OK" for 0.
std::string ErrnoName(int err);

class Actor {
 public:
  // Forks actor `name`, working on files under `mnt`. With `uid` other than
  // -1 it runs as that user (and group) instead (root only).
  static Result<Actor> Spawn(const std::string& name, const std::string& mnt,
                             uid_t uid = static_cast<uid_t>(-1));
  // An actor some other actor forked: its pid and channel (the "fork" reply).
  Actor(std::string name, pid_t pid, UniqueFd channel);

  Actor(Actor&&) noexcept = default;
  Actor& operator=(Actor&&) noexcept = default;

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

  // Sends a request, with descriptor `fd` when >= 0 (SCM_RIGHTS). Errors:
  // the channel's (EPIPE: the actor is gone).
  Status Send(const Json& request, int fd = -1);
  // Waits up to timeout_ms (-1: forever) for the reply to the request sent;
  // notices met on the way go to *notices. nullopt: no reply yet (still
  // working, or blocked), or the actor is gone (then gone() is true). A
  // reply that carries a descriptor (fork) has it in *passed.
  std::optional<Json> Reply(int timeout_ms, std::vector<Json>* notices, UniqueFd* passed = nullptr);
  // Collects the notices that have come, without waiting.
  void Drain(std::vector<Json>* notices);

  bool gone() const { return gone_; }
  // Whether the process has ended (its pidfd is readable).
  bool Exited() const;
  // Sends `sig` through its pidfd (no risk of a reused pid).
  int Signal(int sig) const;

 private:
  Actor(std::string name, pid_t pid, UniqueFd channel, UniqueFd pidfd);

  std::string name_;
  pid_t pid_ = -1;
  UniqueFd channel_;
  UniqueFd pidfd_;
  bool gone_ = false;
};

}  // namespace leasefs::leasectl
