// Running a tool as a real child with its output on a pseudo-terminal, on
// pipes, or on both (stderr a terminal, stdout a pipe), to see what it
// draws where a person watches and what a script gets.
#pragma once

#include <string>
#include <vector>

namespace leasefs::testing {

enum class Output {
  kTerminal,     // stdin, stdout and stderr the terminal (a person at it)
  kPipes,        // stdout and stderr pipes of their own (a script)
  kStdoutPiped,  // stderr the terminal, stdout a pipe (out=$(tool ...))
};

struct TtyRun {
  int code = -1;         // exit status, 128 + signal if one ended it
  std::string terminal;  // the bytes written to the terminal, unchanged
  std::string out, err;  // the bytes written to the pipes
};

// Runs argv[0] with argv to its end (at most 120 s, then SIGKILL). The
// terminal is `columns` wide and passes bytes through unchanged (output
// post-processing off: no "\n" to "\r\n"), and is the child's controlling
// terminal. REQUIREs the pty, pipes and fork.
TtyRun RunWithOutput(const std::vector<std::string>& argv, Output where,
                     unsigned short columns = 80);

// What a progress line drew (tools/common/progress.h): the text of each
// redraw ("\r" TEXT "\x1b[K") in order, and everything else the tool
// wrote, which must come while no line is drawn, that is after the erase
// ("\r\x1b[K"). `clean` is false when the bytes do not parse that way:
// a redraw without its "\x1b[K", an erase with no line drawn, text over a
// drawn line, or a line still drawn at the end.
struct ProgressDraws {
  std::vector<std::string> lines;
  std::string printed;
  bool clean = true;
};
ProgressDraws ParseProgress(const std::string& terminal);

}  // namespace leasefs::testing
