#!/usr/bin/env python3
"""bench-restore: snapshot restore against guest RAM size, kestrel next to QEMU (issue 9's "start-up
is not proportional to guest RAM", and "<= 0.5x QEMU's -incoming from a file in the same run").
For each size, tests/guests/dirty_pages (which touches 12 MiB whatever the size) is booted,
paused after two passes and saved:
  kestrel  through the API: PUT /snapshot/create (Full), then ROUNDS fresh kestrel processes each
           PUT /snapshot/load with resume_vm;
  qemu     microvm with KVM, the same guest: QMP stop + migrate to "exec:cat > FILE", then
           ROUNDS fresh QEMUs with -incoming "exec:cat FILE" and QMP cont once it has loaded.
Reported per VMM, medians: the save, the file's allocated MiB, exec -> running (kestrel: the
load's 204 with resume_vm; QEMU: `cont` answered — process start, API/QMP and the load, up to
the guest's first instruction) and exec -> the guest's next pass line (that plus up to one
pass of the guest's own work); kestrel also load -> 204. Informational, never a pass/fail. Needs a KVM character device that runs the tiny
guests (this machine's, or the nested host's) and qemu-system-x86_64 for the QEMU column.

usage: tools/bench-restore.py [BUILD_DIR (default build)]
  env: SIZES ("16 1024 4096" MiB), ROUNDS (5), VMMS ("kestrel qemu")"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(root, "tests", "api"))
sys.path.insert(0, os.path.join(root, "tests", "kvm"))
from api_client import Kestrel  # noqa: E402
import kvm_snapshot_case as ks  # noqa: E402

build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build")
vmm = os.path.join(build, "vmm", "kestrel")
guest = os.path.join(build, "tests", "guests", "dirty_pages.elf")
rounds = int(os.environ.get("ROUNDS", "5"))
opts = ("--serial", "stdio", "--debug-exit")

QEMU = shutil.which("qemu-system-x86_64")
vmms = os.environ.get("VMMS", "kestrel qemu").split()


def check_restored(v, out):
    """The guest carried on from its snapshot (pass 2 or later), not booted afresh."""
    p = ks.whole_passes(out)
    if not p or p[0] < 2 or b"dirty_pages: start" in out or b"bad page" in out:
        sys.exit(f"bench-restore: {v}'s restored guest did not carry on: {out[:200]!r}")


def kestrel_round(mib, tmp):
    """(create ms, file MiB, [load->204 ms], [exec->next pass ms])"""
    state, mem = os.path.join(tmp, "s.state"), os.path.join(tmp, "s.mem")
    with Kestrel(vmm, os.path.join(tmp, "a.sock"), *opts) as k:
        k.wait_ready()
        for method, url, body in [("PUT", "/boot-source", {"kernel_image_path": guest}),
                                  ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mib}),
                                  ("PUT", "/actions", {"action_type": "InstanceStart"})]:
            if k.api.request(method, url, body).status != 204:
                sys.exit(f"bench-restore: {method} {url} refused")
        if not ks.wait_passes(k, 2):
            sys.exit(f"bench-restore: the guest did not run ({mib} MiB)")
        k.api.patch("/vm", {"state": "Paused"})
        t = time.monotonic()
        if k.api.put("/snapshot/create", {"snapshot_path": state, "mem_file_path": mem}).status != 204:
            sys.exit("bench-restore: snapshot refused")
        create_ms = (time.monotonic() - t) * 1e3
        k.stop()
    loads, runs, nexts = [], [], []
    for _ in range(rounds):
        t0 = time.monotonic()
        with Kestrel(vmm, os.path.join(tmp, "b.sock"), *opts) as k:
            k.wait_ready()
            t = time.monotonic()
            if k.api.put("/snapshot/load", ks.load_body(state, mem)).status != 204:
                sys.exit("bench-restore: load refused")
            loads.append((time.monotonic() - t) * 1e3)
            runs.append((time.monotonic() - t0) * 1e3)
            seen = len(ks.whole_passes(k.out))
            while len(ks.whole_passes(k.out)) <= seen and time.monotonic() - t < 60:
                time.sleep(0.001)
            nexts.append((time.monotonic() - t0) * 1e3)
            k.stop()
            check_restored("kestrel", k.out)
    return create_ms, os.stat(mem).st_blocks * 512 >> 20, loads, runs, nexts


class Qemu:
    """QEMU microvm running the guest, its serial output collected, QMP on a unix socket."""

    def __init__(self, mib, qmp, *extra):
        self.cmd = [QEMU, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", str(mib),
                    "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                    "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", guest,
                    "-qmp", f"unix:{qmp},server=on,wait=off", *extra]
        self.qmp_path, self.out = qmp, b""
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        threading.Thread(target=self._pump, daemon=True).start()
        self.sock = None

    def _pump(self):
        while chunk := self.proc.stdout.read1(65536):
            self.out += chunk

    def qmp(self, cmd, **arguments):
        if self.sock is None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.sock.connect(self.qmp_path)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("bench-restore: no QMP socket")
                    time.sleep(0.001)
            self.f = self.sock.makefile("rwb")
            self.f.readline()  # greeting
            self.qmp("qmp_capabilities")
        msg = {"execute": cmd}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r or "error" in r:
                return r

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def qemu_round(mib, tmp):
    """(save ms, file MiB, [], [exec->next pass ms])"""
    f = os.path.join(tmp, "q.state")
    q = Qemu(mib, os.path.join(tmp, "q.qmp"))
    deadline = time.monotonic() + 60
    while len(ks.whole_passes(q.out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    if len(ks.whole_passes(q.out)) < 2:
        sys.exit(f"bench-restore: the guest did not run under QEMU ({mib} MiB)")
    q.qmp("stop")
    t = time.monotonic()
    q.qmp("migrate", uri=f"exec:cat > {f}")
    while q.qmp("query-migrate")["return"].get("status") not in ("completed", "failed"):
        time.sleep(0.001)
    save_ms = (time.monotonic() - t) * 1e3
    q.stop()
    runs, nexts = [], []
    for _ in range(rounds):
        t0 = time.monotonic()
        q = Qemu(mib, os.path.join(tmp, "r.qmp"), "-incoming", f"exec:cat {f}")
        while q.qmp("query-status")["return"].get("status") == "inmigrate" and time.monotonic() - t0 < 60:
            time.sleep(0.001)
        q.qmp("cont")
        runs.append((time.monotonic() - t0) * 1e3)
        while not ks.whole_passes(q.out) and time.monotonic() - t0 < 60:
            time.sleep(0.001)
        nexts.append((time.monotonic() - t0) * 1e3)
        q.stop()
        check_restored("qemu", q.out)
    return save_ms, os.stat(f).st_blocks * 512 >> 20, [], runs, nexts


med = lambda v: f"{statistics.median(v):.1f}" if v else "-"
print(f"{'guest RAM':>10} {'VMM':<8} {'save ms':>8} {'file MiB':>9} {'load->204 ms':>13} {'exec->running ms':>17} "
      f"{'exec->next pass ms':>19}")
for mib in (int(x) for x in os.environ.get("SIZES", "16 1024 4096").split()):
    row = {}
    for v in vmms:
        if v == "qemu" and not QEMU:
            print(f"{mib:>6} MiB qemu     (no qemu-system-x86_64)")
            continue
        tmp = tempfile.mkdtemp(prefix="kbres-")
        try:
            save, size, loads, runs, nexts = (kestrel_round if v == "kestrel" else qemu_round)(mib, tmp)
            row[v] = (statistics.median(runs), statistics.median(nexts))
            print(f"{mib:>6} MiB {v:<8} {save:>8.1f} {size:>9} {med(loads):>13} {med(runs):>17} {med(nexts):>19}",
                  flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if "kestrel" in row and "qemu" in row:
        print(f"{mib:>6} MiB kestrel/QEMU: exec -> running {row['kestrel'][0] / row['qemu'][0]:.2f}, "
              f"exec -> next pass {row['kestrel'][1] / row['qemu'][1]:.2f}", flush=True)
