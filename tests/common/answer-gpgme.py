#!/usr/bin/env python3
"""Run a command on a pseudo-terminal, acting as the person at the keyboard.

dar_static on a machine without gpg asks, on the terminal, whether to go on without GPGME;
RESTORE.txt tells the person to press Return. This does exactly that (and nothing else: any
other question is left unanswered and the command times out). Prints the terminal's output
and exits with the command's status.
"""
import os
import pty
import select
import sys
import time

QUESTION = b"INITIALIZATION FAILED FOR GPGME"
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
seen, answered, deadline = b"", 0, time.time() + 300
while time.time() < deadline:
    if not select.select([fd], [], [], 1)[0]:
        continue
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    seen += data
    sys.stdout.buffer.write(data)
    if seen.count(QUESTION) > answered:
        answered += 1
        os.write(fd, b"\r")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
