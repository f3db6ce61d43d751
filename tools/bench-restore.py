#!/usr/bin/env python3
"""bench-restore: how a snapshot's restore time depends on guest RAM size (issue 9's "start-up
is not proportional to guest RAM"). For each size, tests/guests/dirty_pages (which touches
12 MiB whatever the size) is booted through the API, paused after two passes and snapshotted
(Full); then ROUNDS fresh kestrel processes each load it with resume_vm and the script reports
the medians of PUT /snapshot/load -> 204 and of load -> the guest's next pass line.
kestrel only: the side-by-side with QEMU's -incoming from a file is not written yet.
Informational, never a pass/fail. Needs a KVM character device that runs the tiny guests.

usage: tools/bench-restore.py [BUILD_DIR (default build)]   env: SIZES ("16 1024 4096" MiB), ROUNDS (5)"""

import os
import shutil
import statistics
import sys
import tempfile
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

print(f"{'guest RAM':>10} {'create ms':>10} {'file MiB':>9} {'load->204 ms':>13} {'load->next pass ms':>19}")
for mib in (int(x) for x in os.environ.get("SIZES", "16 1024 4096").split()):
    tmp = tempfile.mkdtemp(prefix="kbres-")
    try:
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
        loads, nexts = [], []
        for _ in range(rounds):
            with Kestrel(vmm, os.path.join(tmp, "b.sock"), *opts) as k:
                k.wait_ready()
                t = time.monotonic()
                if k.api.put("/snapshot/load", ks.load_body(state, mem)).status != 204:
                    sys.exit("bench-restore: load refused")
                loads.append((time.monotonic() - t) * 1e3)
                seen = len(ks.whole_passes(k.out))
                while len(ks.whole_passes(k.out)) <= seen and time.monotonic() - t < 60:
                    time.sleep(0.001)
                nexts.append((time.monotonic() - t) * 1e3)
                k.stop()
        print(f"{mib:>6} MiB {create_ms:>10.1f} {os.stat(mem).st_blocks * 512 >> 20:>9} "
              f"{statistics.median(loads):>13.1f} {statistics.median(nexts):>19.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
