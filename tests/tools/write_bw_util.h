// Helpers of the leasefs-write-bw tests: the tool run as real child
// processes (a server in the background, a client), and checks of its
// perftest-shaped output.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace leasefs::testing {

// The leasefs-write-bw binary (meson passes its path at compile time).
std::string WriteBwBin();

// A TCP port nobody listens on right now (bound and closed: a small race,
// which a port taken meanwhile shows as the server's bind error).
uint16_t FreePort();

// leasefs-write-bw run in the background with stdout and stderr on pipes.
// The destructor SIGKILLs and reaps it if it still runs.
class WriteBw {
 public:
  explicit WriteBw(std::vector<std::string> args);
  ~WriteBw();
  WriteBw(const WriteBw&) = delete;
  WriteBw& operator=(const WriteBw&) = delete;

  // Reads stdout until it holds `text`; false after timeout_ms.
  bool WaitFor(const std::string& text, int timeout_ms = 10000);
  // Waits up to timeout_ms for the exit and reads the rest of the output.
  // Returns the exit status (128 + signal), or -1 on timeout (it is then
  // killed).
  int Wait(int timeout_ms = 60000);

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  void Drain(int timeout_ms);

  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
};

// The server's "waiting" banner.
inline constexpr const char* kWaitingBanner = "* Waiting for client to connect... *";

// Runs a server with server_args, waits for its banner, then a client with
// client_args against 127.0.0.1; both on a fresh exchange port. Fills
// *server and *client with their exit statuses (see WriteBw::Wait).
struct Pair {
  int server_status = -1, client_status = -1;
  std::string server_out, server_err, client_out, client_err;
};
Pair RunPair(std::vector<std::string> server_args, std::vector<std::string> client_args);

// perftest's result rows in `out`: the lines between the column header and
// the result line after it. Each row is re-printed with perftest's format
// from the numbers read back; *well_formed is false if any row differs byte
// for byte from that.
struct ParsedRow {
  uint64_t size = 0, iterations = 0;
  double peak = 0, avg = 0, rate = 0;
  std::string text;
};
std::vector<ParsedRow> ResultRows(const std::string& out, bool gbits, bool* well_formed);

}  // namespace leasefs::testing
