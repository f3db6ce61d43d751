#!/bin/sh
# Not a test: sums up the strace files tools/seccomp/trace-on.sh made, one line per thread
# kind and call: SECCOMP-TRACE KIND CALL COUNT FIRST-CASE. A thread's kind is told from what
# it does (KVM_RUN: vcpu; epoll_wait off the main thread: event-loop; accept or getpeername:
# api; the rest: serial), and only its calls after its seccomp() count (what runs once the
# filter is on; the main thread's goes on once the VM runs). ioctl requests, socket domains,
# fcntl commands and mmap/mprotect protections are spelled out, as the filters check them.
#@ timeout 600
#@ l1-python
#@ expect-line ^SECCOMP-TRACE-DONE files=[1-9]
python3 - <<'PY'
import collections, glob, os, re
seen = collections.defaultdict(collections.Counter)
first = {}
call = re.compile(r'^([a-z_0-9]+)\((.*)')
files = sorted(glob.glob("/tmp/seccomp-trace/*.*.*"))
for path in files:
    case, pid, tid = os.path.basename(path).rsplit(".", 2)
    calls = []
    with open(path, errors="replace") as f:
        for line in f:
            m = call.match(line)
            if not m:
                continue
            name, rest = m.groups()
            args = rest.split(", ")
            if name == "ioctl" and len(args) > 1:
                name += " " + args[1].split(")")[0]
            elif name in ("socket", "fcntl") and len(args) > 1:
                name += " " + (args[0] if name == "socket" else args[1].split(")")[0])
            elif name == "mmap" and len(args) > 2:
                name += " " + args[2]
            elif name == "mprotect" and len(args) > 2:
                name += " " + args[2].split(")")[0]
            calls.append(name)
    plain = {c.split()[0] for c in calls}
    if tid == pid:
        kind = "main"
    elif "ioctl KVM_RUN" in calls:
        kind = "vcpu"
    elif plain & {"epoll_wait", "epoll_pwait"}:
        kind = "event-loop"
    elif plain & {"accept", "accept4", "getpeername"}:
        kind = "api"
    else:
        kind = "serial-or-other"
    filtered = [i for i, c in enumerate(calls) if c == "seccomp"]
    calls = calls[filtered[-1] + 1:] if filtered else []
    for c in calls:
        seen[kind][c] += 1
        first.setdefault((kind, c), case)
for kind in sorted(seen):
    for c, n in sorted(seen[kind].items()):
        print(f"SECCOMP-TRACE {kind} {c.replace(' ', ':')} {n} {first[(kind, c)]}")
print(f"SECCOMP-TRACE-DONE files={len(files)}")
PY
