#!/usr/bin/env python3
"""Runs every command of a Markdown tutorial and checks what it printed.

Each ```console block holds commands (lines starting with "$ "; a line ending
in a backslash goes on) and, under each, the output the tutorial shows. All
commands of the file run in order in one bash, so a variable, a directory or
a mount made in one block is there in the next. A command must exit 0, unless
the line after its output says "[exit N]". The comparison is line by line
after taking out what differs from run to run (times, pids, keys, scratch
paths) and runs of spaces; a shown line "..." stands for any number of lines,
and "<PID>" in a shown line for a process id the normalizing cannot tell.

Usage: tutorial_test.py [--fill] [--readme README.md] TUTORIAL.md  (with LEASECTL_BIN, LEASEFS_BIN,
MKFS_LEASEFS_BIN, FSCK_LEASEFS_BIN naming the programs; their directories go
first on PATH). Exit 0 all as shown, 1 a command failed or its output
drifted, 77 skipped (not root, or no /dev/fuse). With --readme, also fails
unless README.md's first example after its set-up commands is the tutorial's
first scenario. --fill writes what each
command printed under it where the tutorial shows nothing yet (for whoever
writes a new section; the shown output is then trimmed by hand).
"""

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

MARK = "@@tutorial-done@@"

NORMALIZE = [
    (re.compile(r"\d\d:\d\d:\d\d\.\d+"), "HH:MM:SS"),
    (re.compile(r"\d+(\.\d+)? ?(ms|s)\b"), "T"),
    (re.compile(r"\b(process|pid|holder|by) \d+"), r"\1 N"),
    (re.compile(r"rkey 0x[0-9a-f]+"), "rkey K"),
    (re.compile(r"/dev/shm/leasectl-scenario-pool-\w+"), "POOL"),
    (re.compile(r"/tmp/leasectl-scenario-\w+"), "MNT"),
    (re.compile(r"/tmp/leasefs-tutorial-\w+"), "DIR"),
    (re.compile(r"\b\d+ threads\b"), "N threads"),
    (re.compile(r"[ \t]+"), " "),
]


def normalize(line):
    for pattern, replacement in NORMALIZE:
        line = pattern.sub(replacement, line)
    return line.strip()


def parse(text):
    """[(line number, command, [shown output lines], expected exit)]"""
    steps = []
    in_block = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not in_block:
            in_block = line.strip() == "```console"
            i += 1
            continue
        if line.strip() == "```":
            in_block = False
            i += 1
            continue
        if line.startswith("$ "):
            number = i + 1
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + "\n" + lines[i]
            steps.append([number, command, [], 0])
        elif steps:
            match = re.fullmatch(r"\[exit (\d+)\]", line.strip())
            if match:
                steps[-1][3] = int(match.group(1))
            else:
                steps[-1][2].append(line)
        i += 1
    return steps


def same(shown, got):
    """A shown line may say <PID> where a process id stands."""
    if "<PID>" not in shown:
        return shown == got
    pattern = re.escape(shown).replace(re.escape("<PID>"), r"\d+")
    return re.fullmatch(pattern, got) is not None


def matches(shown, got):
    """Whether got (normalized lines) is shown, "..." matching any lines."""
    shown = [normalize(s) for s in shown]
    got = [normalize(g) for g in got]
    while shown and shown[-1] == "":
        shown.pop()
    while got and got[-1] == "":
        got.pop()

    memo = {}

    def walk(i, j):
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(shown):
            result = j == len(got)
        elif shown[i] == "...":
            result = any(walk(i + 1, k) for k in range(j, len(got) + 1))
        else:
            result = j < len(got) and same(shown[i], got[j]) and walk(i + 1, j + 1)
        memo[key] = result
        return result

    return walk(0, 0)


class Shell:
    def __init__(self, workdir, env):
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=workdir, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.buffer = b""

    def run(self, command, timeout):
        # The command reads nothing of ours (the marker must reach bash).
        script = f"{{ {command}\n}} </dev/null\necho \"{MARK} $?\"\n"
        self.proc.stdin.write(script.encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            text = self.buffer.decode(errors="replace")
            match = re.search(re.escape(MARK) + r" (\d+)\n", text)
            if match:
                self.buffer = text[match.end():].encode()
                return text[:match.start()].splitlines(), int(match.group(1))
            left = deadline - time.monotonic()
            if left <= 0:
                return text.splitlines() + [f"(no end after {timeout} s)"], -1
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return text.splitlines() + ["(the shell exited)"], -1
                self.buffer += chunk

    def kill(self):
        """Ends the shell and everything it started (its session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def unmount_under(directory):
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            target = line.split()[1]
            if target.startswith(directory):
                subprocess.run(["fusermount3", "-u", "-z", target], check=False)


def fill(path, outputs):
    """Writes outputs[line number] under each command that shows none."""
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        number = i + 1
        if number in outputs:
            while lines[i].endswith("\\"):
                i += 1
                out.append(lines[i])
            nxt = lines[i + 1] if i + 1 < len(lines) else "```"
            if nxt.startswith("$ ") or nxt.strip() == "```":
                out.extend(outputs[number])
        i += 1
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def readme_first_example(readme, tutorial_text):
    """'' if README.md's first example after the two set-up commands runs the
    tutorial's first scenario, else why not."""
    with open(readme) as f:
        text = f.read()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    setup = next((i for i, b in enumerate(blocks) if "./dev test" in b), None)
    if setup is None or setup + 1 >= len(blocks):
        return "README.md: no example after the block with ./dev demo and ./dev test"
    first = blocks[setup + 1].strip().splitlines()[0]
    wanted = re.search(r"^\$ (leasectl scenario run \S+)", tutorial_text, re.M)
    if wanted is None:
        return "the tutorial runs no scenario"
    if not first.endswith(wanted.group(1)):
        return f"README.md's first example is '{first}', the tutorial's first scenario " \
               f"'{wanted.group(1)}'"
    return ""


def main():
    args = sys.argv[1:]
    write = args[:1] == ["--fill"]
    if write:
        args = args[1:]
    readme = None
    if args[:1] == ["--readme"] and len(args) > 1:
        readme, args = args[1], args[2:]
    if len(args) != 1:
        print(__doc__)
        return 2
    sys.argv = [sys.argv[0]] + args
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("skipped: needs root and /dev/fuse")
        return 77
    with open(sys.argv[1]) as f:
        tutorial_text = f.read()
    steps = parse(tutorial_text)
    if readme:
        why = readme_first_example(readme, tutorial_text)
        if why:
            print(why)
            return 1
        print("ok: README.md's first example is the tutorial's first scenario")
    if not steps:
        print(f"{sys.argv[1]}: no commands found")
        return 1
    env = dict(os.environ)
    dirs = []
    for name in ("LEASECTL_BIN", "LEASEFS_BIN", "MKFS_LEASEFS_BIN", "FSCK_LEASEFS_BIN",
                 "LEASEFS_RUN_BIN"):
        if env.get(name):
            dirs.append(os.path.dirname(env[name]))
    env["PATH"] = ":".join(dirs + [env.get("PATH", "/usr/bin:/bin")])
    failures = 0
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="leasefs-tutorial-") as workdir:
        shell = Shell(workdir, env)
        try:
            for number, command, shown, want in steps:
                got, status = shell.run(command, timeout=180)
                outputs[number] = got + ([f"[exit {status}]"] if status else [])
                if status != want or not matches(shown, got):
                    failures += 1
                    print(f"{sys.argv[1]}:{number}: $ {command}")
                    print(f"  exit {status} (the tutorial says {want})")
                    print("  the tutorial shows:")
                    for line in shown:
                        print("    | " + line)
                    print("  it printed:")
                    for line in got:
                        print("    | " + line)
                else:
                    print(f"ok {number}: $ {command.splitlines()[0]}")
                if status == -1:
                    print("  (it did not end: the rest is not run)")
                    failures += len(steps) - steps.index([number, command, shown, want]) - 1
                    shell.kill()
                    break
        finally:
            shell.close()
            unmount_under(workdir)
    if write:
        fill(sys.argv[1], outputs)
    print(f"{len(steps) - failures} commands as shown, {failures} not")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
