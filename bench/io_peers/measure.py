#!/usr/bin/env python3
"""measure.py CMD ARG...: runs the command and prints, on its last line,
"MEASURE wall=<s> cpu=<s> rss=<KB>": wall-clock seconds, user+system CPU
seconds of the process and the children it waited for, and its peak
resident set size.  The command's own output is passed through."""
import os
import sys
import time

start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
sys.stdout.flush()
print("MEASURE wall=%.6f cpu=%.6f rss=%d status=%d" % (
    wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
    os.waitstatus_to_exitcode(status)), flush=True)
