"""kvm suite: Full snapshots through the API (PUT /snapshot/create, PUT /snapshot/load), run by
run-kvm-tests with tests/guests/dirty_pages, which checks every page of its 12 MiB on each
pass and counts its passes in its own RAM (exit 91 through --debug-exit if a page lost what it
held).

snapshot_cycle: kestrel A boots the guest through the API and lets it run; a snapshot while it
  runs is refused (NotAllowed); paused, it is snapshotted (Full) and A ends. Then three times a
  new kestrel process loads the last snapshot and the guest carries on: its first whole pass
  line is the one after the last the previous process printed (or the next, when the pause
  split a line; the second restore is `kestrel run --restore` and its snapshot `kestrel
  snapshot`), it never starts over ("dirty_pages: start") and never reports a lost page;
  after a few more passes it is paused and snapshotted again. Also shown: the memory file is
  sparse (zero pages are holes); a state file with one byte changed, one whose vCPU was saved
  with another CPUID (another host's CPU), a memory file of the wrong size, a memory file that
  does not exist and a device-state file (no config section) are each
  refused with a clear 400, after which that same kestrel loads the good snapshot; with
  resume_vm false the restored VM stays paused (its RAM digest equal 0.5 s apart, no output)
  until PATCH /vm Resumed; a second load into a kestrel that runs a VM is refused; and one word
  changed in a memory file makes the restored guest report that page (exit 91), so the
  guest's check can fail.
snapshot_diff: the guest with track_dirty_pages and 2 vCPUs: a Full snapshot, more passes, then a Diff and a
  Full of the same paused moment; `kestrel snapshot-merge` of the Diff onto a copy of the first
  Full's memory file gives exactly the second Full's memory; a second Diff at once holds no page
  (tracking restarts at each snapshot); the Diff's state file alone is refused by load (merge
  first); the merged snapshot restores in a new process and the guest carries on. A Diff of a
  VM without track_dirty_pages is refused.
snapshot_pit: the guest under --pit (KVM's PIC/IOAPIC/PIT saved as section kvm-irqchip)
  snapshotted and restored with `kestrel run --restore`; it carries on."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from api_client import Kestrel, ProtocolError  # noqa: E402
import state_file  # noqa: E402  (beside this file)
from kvm_api_case import Checks  # noqa: E402

PASS_RE = re.compile(rb"^pass ([0-9a-f]{8})$")
WAIT = 120.0  # seconds for a few passes, generous for the nested host
CYCLES = 3


def whole_passes(out):
    """Pass numbers of the whole "pass XXXXXXXX" lines in `out` (a line cut by a pause and
    finished by the next process does not match)."""
    return [int(m.group(1), 16) for line in out.split(b"\n") if (m := PASS_RE.match(line))]


def wait_passes(k, at_least, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = whole_passes(k.out)
        if p and p[-1] >= at_least:
            return True
        if k.proc.poll() is not None or b"bad page" in k.out:
            return False
        time.sleep(0.05)
    return False


def load_body(state, mem, resume=True):
    return {"snapshot_path": state, "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": resume}


def refusals(c, k, tmp, state, mem):
    """Bad snapshots offered to a fresh kestrel: each refused, nothing built."""
    data = open(state, "rb").read()
    bad = os.path.join(tmp, "bad.state")
    with open(bad, "wb") as f:
        f.write(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x01]) + data[len(data) // 2 + 1:])
    c.status(k.api.put("/snapshot/load", load_body(bad, mem)), 400, "load of a state file with a byte changed",
             "BadRequest", "checksum mismatch")
    short = os.path.join(tmp, "short.mem")
    with open(mem, "rb") as src, open(short, "wb") as dst:
        dst.write(src.read(8 << 20))
    c.status(k.api.put("/snapshot/load", load_body(state, short)), 400, "load with an 8 MiB memory file",
             "BadRequest", "memory file has 8388608 bytes")
    c.status(k.api.put("/snapshot/load", load_body(state, os.path.join(tmp, "none.mem"))), 400,
             "load with a missing memory file", "BadRequest", "none.mem")
    # Another host's CPU: vcpu/0's saved CPUID with one bit changed (leaf 0's max leaf), the
    # file well formed: refused before anything is built.
    header, sections = state_file.parse(data)
    i = [s[0] for s in sections].index("vcpu/0")
    payload = bytearray(sections[i][2])
    payload[4 + 12] ^= 0x01  # cpuid count, then entry 0: function, index, flags, eax
    sections[i] = (sections[i][0], sections[i][1], bytes(payload))
    other_cpu = os.path.join(tmp, "other-cpu.state")
    with open(other_cpu, "wb") as f:
        f.write(state_file.build(header, sections))
    c.status(k.api.put("/snapshot/load", load_body(other_cpu, mem)), 400, "load of a snapshot from another CPU",
             "BadRequest", "the CPUID it was saved with differs from this host's (leaf 0x0 index 0: eax")
    c.status(k.api.get("/"), 200, "GET / after the refused loads")
    c.expect(k.api.get("/").json.get("state") == "Not started",
             f"after refused loads the instance is {k.api.get('/').json.get('state')!r}, not 'Not started'")


def run_snapshot_cycle(args, guest, tmp):
    c = Checks()
    details = []
    state, mem = os.path.join(tmp, "s0.state"), os.path.join(tmp, "s0.mem")
    opts = ("--serial", "stdio", "--debug-exit")
    with Kestrel(args.vmm, os.path.join(tmp, "a.sock"), *opts) as k:
        k.wait_ready()
        for method, url, body in [("PUT", "/boot-source", {"kernel_image_path": guest}),
                                  ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 16}),
                                  ("PUT", "/actions", {"action_type": "InstanceStart"})]:
            c.status(k.api.request(method, url, body), 204, f"{method} {url}")
        if not c.expect(wait_passes(k, 3), f"the guest did not reach pass 3: {k.out[-300:]!r}"):
            k.stop()
            return False, "; ".join(c.problems), k.stderr_text()[-1500:]
        c.status(k.api.put("/snapshot/create", {"snapshot_path": state, "mem_file_path": mem}), 400,
                 "snapshot while running", "NotAllowed", "only taken while paused")
        c.status(k.api.patch("/vm", {"state": "Paused"}), 204, "PATCH /vm Paused")
        c.status(k.api.put("/snapshot/create", {"snapshot_path": state, "mem_file_path": mem}), 204,
                 "PUT /snapshot/create")
        c.status(k.api.put("/vm/device-state/save", {"path": os.path.join(tmp, "dev.state")}), 204,
                 "PUT /vm/device-state/save")
        last = whole_passes(k.out)[-1]
        code, _ = k.stop()
        c.expect(code == 143, f"kestrel A exited {code}, expected 143")
    st = os.stat(mem)
    c.expect(st.st_size == 16 << 20, f"memory file has {st.st_size} bytes, expected 16 MiB")
    c.expect(st.st_blocks * 512 < st.st_size, f"memory file is not sparse: {st.st_blocks * 512} bytes allocated")
    details.append(f"A: pass {last}; memory file {st.st_blocks * 512 >> 10} KiB allocated of 16384")

    for cycle in range(1, CYCLES + 1):
        resume = cycle != CYCLES  # the last one is loaded paused
        # Cycle 2 goes through the command line: `kestrel run --restore`, `kestrel snapshot`.
        cli = cycle == 2
        extra = ("--restore", state, "--restore-mem", mem) if cli else ()
        with Kestrel(args.vmm, os.path.join(tmp, f"k{cycle}.sock"), *extra, *opts) as k:
            k.wait_ready()
            if cycle == 1:
                refusals(c, k, tmp, state, mem)
                c.status(k.api.put("/snapshot/load", load_body(os.path.join(tmp, "dev.state"), mem)), 400,
                         "load of a device-state file", "BadRequest", "no 'config' section")
            if not cli:
                c.status(k.api.put("/snapshot/load", load_body(state, mem, resume)), 204, f"load #{cycle}")
            c.status(k.api.put("/snapshot/load", load_body(state, mem, resume)), 400, f"second load #{cycle}",
                     "NotAllowed", "already running")
            if not resume:
                info = k.api.get("/").json
                c.expect(info.get("state") == "Paused", f"load with resume_vm false: state {info.get('state')!r}")
                d1 = k.api.get("/vm/ram-digest").json.get("sha256")
                out_before = len(k.out)
                time.sleep(0.5)
                d2 = k.api.get("/vm/ram-digest").json.get("sha256")
                c.expect(d1 and d1 == d2, f"restored paused VM: RAM digest changed ({d1} -> {d2})")
                c.expect(len(k.out) == out_before, "restored paused VM printed while paused")
                c.status(k.api.patch("/vm", {"state": "Resumed"}), 204, "PATCH /vm Resumed after a paused load")
            ok = c.expect(wait_passes(k, last + 3), f"cycle {cycle}: the guest did not pass {last + 3} after the "
                                                    f"restore: {k.out[-300:]!r}")
            passes = whole_passes(k.out)
            c.expect(b"dirty_pages: start" not in k.out, f"cycle {cycle}: the guest started over")
            c.expect(b"bad page" not in k.out, f"cycle {cycle}: the guest lost a page: "
                                               f"{k.out[k.out.find(b'bad page'):][:80]!r}")
            if ok:
                c.expect(passes[0] in (last + 1, last + 2),
                         f"cycle {cycle}: first pass after the restore is {passes[0]}, expected {last + 1}")
                state, mem = os.path.join(tmp, f"s{cycle}.state"), os.path.join(tmp, f"s{cycle}.mem")
                if cli:
                    r = subprocess.run([args.vmm, "snapshot", "--api-sock", k.sock, state, mem, "--keep-paused"],
                                       capture_output=True, text=True, timeout=120)
                    c.expect(r.returncode == 0 and os.path.exists(state),
                             f"kestrel snapshot exited {r.returncode}: {r.stderr.strip()[-300:]}")
                    c.expect(k.api.get("/").json.get("state") == "Paused",
                             "kestrel snapshot --keep-paused: the VM is not paused")
                else:
                    c.status(k.api.patch("/vm", {"state": "Paused"}), 204, f"cycle {cycle}: PATCH /vm Paused")
                    c.status(k.api.put("/snapshot/create", {"snapshot_path": state, "mem_file_path": mem}), 204,
                             f"cycle {cycle}: PUT /snapshot/create")
                how = " (run --restore, kestrel snapshot)" if cli else "" if resume else " (paused)"
                details.append(f"restore {cycle}{how}: passes {passes[0]}..{passes[-1]}")
                last = whole_passes(k.out)[-1]
            code, _ = k.stop()
            c.expect(code == 143, f"cycle {cycle}: kestrel exited {code}, expected 143 "
                                  f"({k.stderr_text().strip()[-300:]})")
            if c.problems:
                break
    if not c.problems:
        # The guest's own check can fail: one word changed in the memory file is reported.
        lost = os.path.join(tmp, "lost.mem")
        shutil.copyfile(mem, lost)
        with open(lost, "r+b") as f:
            f.seek(0x300000)
            word = f.read(4)
            f.seek(0x300000)
            f.write(bytes([word[0] ^ 0xff]) + word[1:])
        with Kestrel(args.vmm, os.path.join(tmp, "lost.sock"), *opts) as k:
            k.wait_ready()
            c.status(k.api.put("/snapshot/load", load_body(state, lost)), 204, "load with a page changed")
            code, _ = k.stop(timeout=WAIT) if k.wait_for_output(b"bad page 00300000", WAIT) else k.stop()
            c.expect(b"bad page 00300000" in k.out and code == 91,
                     f"a changed page in the memory file: exit {code}, output {k.out[-120:]!r} "
                     "(expected 'bad page 00300000' and exit 91)")
            details.append("a page changed in the memory file: the guest says so (exit 91)")
    if c.problems:
        return False, "; ".join(c.problems[:4]), "\n".join(details)
    return True, "exit 143 x4; " + "; ".join(details), ""


def same_content(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def allocated(path):
    return os.stat(path).st_blocks * 512


def run_snapshot_diff(args, guest, tmp):
    c = Checks()
    details = []
    p = {n: os.path.join(tmp, n) for n in ("b.state", "b.mem", "d.state", "d.mem", "f.state", "f.mem",
                                           "d2.state", "d2.mem", "m.state", "nt.state", "nt.mem")}
    opts = ("--serial", "stdio", "--debug-exit")
    snap = lambda k, st, mem, kind="Full": k.api.put("/snapshot/create", {  # noqa: E731
        "snapshot_path": p[st], "mem_file_path": p[mem], "snapshot_type": kind})
    with Kestrel(args.vmm, os.path.join(tmp, "d.sock"), *opts) as k:
        k.wait_ready()
        for method, url, body in [("PUT", "/boot-source", {"kernel_image_path": guest}),
                                  # two vCPUs: the second, never started, is saved and restored
                                  # waiting for its SIPI
                                  ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 16,
                                                              "track_dirty_pages": True}),
                                  ("PUT", "/actions", {"action_type": "InstanceStart"})]:
            c.status(k.api.request(method, url, body), 204, f"{method} {url}")
        if not c.expect(wait_passes(k, 3), f"the guest did not reach pass 3: {k.out[-300:]!r}"):
            k.stop()
            return False, "; ".join(c.problems), k.stderr_text()[-1500:]
        c.status(k.api.patch("/vm", {"state": "Paused"}), 204, "PATCH /vm Paused")
        c.status(snap(k, "b.state", "b.mem"), 204, "Full snapshot (the base)")
        base_pass = whole_passes(k.out)[-1]
        c.status(k.api.patch("/vm", {"state": "Resumed"}), 204, "PATCH /vm Resumed")
        c.expect(wait_passes(k, base_pass + 2), "the guest did not run on after the base snapshot")
        c.status(k.api.patch("/vm", {"state": "Paused"}), 204, "PATCH /vm Paused again")
        c.status(snap(k, "d.state", "d.mem", "Diff"), 204, "Diff snapshot")
        c.status(snap(k, "f.state", "f.mem"), 204, "Full snapshot of the same moment")
        c.status(snap(k, "d2.state", "d2.mem", "Diff"), 204, "a second Diff at once")
        last = whole_passes(k.out)[-1]
        code, _ = k.stop()
        c.expect(code == 143, f"kestrel exited {code}, expected 143")
    c.expect(allocated(p["d2.mem"]) == 0, f"a Diff with nothing changed holds {allocated(p['d2.mem'])} bytes")
    merged = os.path.join(tmp, "merged.mem")
    shutil.copyfile(p["b.mem"], merged)
    r = subprocess.run([args.vmm, "snapshot-merge", p["d.state"], p["d.mem"], merged, p["m.state"]],
                       capture_output=True, text=True, timeout=120)
    c.expect(r.returncode == 0, f"snapshot-merge exited {r.returncode}: {r.stderr.strip()[-300:]}")
    same = same_content(merged, p["f.mem"])
    c.expect(same, "base + Diff merged differs from the Full snapshot of the same moment")
    r2 = subprocess.run([args.vmm, "snapshot-merge", p["f.state"], p["f.mem"], merged, p["m.state"] + "2"],
                        capture_output=True, text=True, timeout=60)
    c.expect(r2.returncode == 1 and "is a Full snapshot, not a Diff" in r2.stderr,
             f"snapshot-merge of a Full: exit {r2.returncode}, {r2.stderr.strip()[-200:]!r}")
    details.append(f"base at pass {base_pass}, Diff at pass {last}: Diff {allocated(p['d.mem']) >> 10} KiB, "
                   f"Full {allocated(p['f.mem']) >> 10} KiB allocated; merged {'==' if same else '!='} Full; "
                   f"Diff at once {allocated(p['d2.mem'])} bytes")

    with Kestrel(args.vmm, os.path.join(tmp, "r.sock"), *opts) as k:
        k.wait_ready()
        c.status(k.api.put("/snapshot/load", load_body(p["d.state"], p["d.mem"])), 400, "load of a Diff",
                 "BadRequest", "merge it onto")
        c.status(k.api.put("/snapshot/load", load_body(p["m.state"], merged)), 204, "load of the merged snapshot")
        ok = c.expect(wait_passes(k, last + 3), f"the merged snapshot's guest did not pass {last + 3}: "
                                                f"{k.out[-200:]!r}")
        passes = whole_passes(k.out)
        if ok:
            c.expect(passes[0] in (last + 1, last + 2), f"merged restore: first pass {passes[0]}, expected {last + 1}")
            c.expect(b"bad page" not in k.out and b"dirty_pages: start" not in k.out,
                     f"merged restore: {k.out[:200]!r}")
            details.append(f"merged snapshot restored: passes {passes[0]}..{passes[-1]}")
        code, _ = k.stop()
        c.expect(code == 143, f"restored kestrel exited {code}")

    # Without tracking a Diff is refused.
    with Kestrel(args.vmm, os.path.join(tmp, "n.sock"), *opts) as k:
        k.wait_ready()
        for method, url, body in [("PUT", "/boot-source", {"kernel_image_path": guest}),
                                  ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 16}),
                                  ("PUT", "/actions", {"action_type": "InstanceStart"}),
                                  ("PATCH", "/vm", {"state": "Paused"})]:
            c.status(k.api.request(method, url, body), 204, f"{method} {url}")
        c.status(snap(k, "nt.state", "nt.mem", "Diff"), 400, "Diff without track_dirty_pages", "NotAllowed",
                 "track_dirty_pages")
        k.stop()
    if c.problems:
        return False, "; ".join(c.problems[:4]), "\n".join(details)
    return True, "; ".join(details), ""


def run_snapshot_pit(args, guest, tmp):
    """snapshot_pit: the guest booted from the command line with --pit (KVM's PIC, IOAPIC and
    PIT): its snapshot holds section kvm-irqchip and "pit": true in its configuration, and
    `kestrel run --restore` brings the guest back with them; it carries on from its pass."""
    c = Checks()
    state, mem = os.path.join(tmp, "p.state"), os.path.join(tmp, "p.mem")
    opts = ("--serial", "stdio", "--debug-exit")
    with Kestrel(args.vmm, os.path.join(tmp, "p.sock"), "--kernel", guest, "--memory", "16M", "--pit", *opts) as k:
        k.wait_ready()
        if not c.expect(wait_passes(k, 3), f"the guest did not reach pass 3: {k.out[-300:]!r}"):
            k.stop()
            return False, "; ".join(c.problems), k.stderr_text()[-1500:]
        c.expect(k.api.get("/vm/config").json.get("machine-config", {}).get("pit") is True,
                 f"GET /vm/config: {k.api.get('/vm/config').json.get('machine-config')}")
        c.status(k.api.patch("/vm", {"state": "Paused"}), 204, "PATCH /vm Paused")
        c.status(k.api.put("/snapshot/create", {"snapshot_path": state, "mem_file_path": mem}), 204,
                 "PUT /snapshot/create with --pit")
        last = whole_passes(k.out)[-1]
        k.stop()
    _, sections = state_file.parse(open(state, "rb").read())
    ids = [s[0] for s in sections]
    c.expect("kvm-irqchip" in ids and "ioapic" not in ids, f"sections {ids}")
    with Kestrel(args.vmm, os.path.join(tmp, "p2.sock"), "--restore", state, "--restore-mem", mem, *opts) as k:
        k.wait_ready()
        c.expect(wait_passes(k, last + 2), f"the restored --pit guest did not go on past {last}: {k.out[-300:]!r}")
        c.expect(b"dirty_pages: start" not in k.out and b"bad page" not in k.out, f"{k.out[:300]!r}")
        k.stop()
    return not c.problems, "; ".join(c.problems), f"A's last pass {last}; sections {ids}"


def run(args, case, guest):
    """Returns (passed, reason, details) as run_case does."""
    tmp = tempfile.mkdtemp(prefix="ksnap-")  # short: unix socket paths are limited to 107 bytes
    try:
        fn = {"snapshot_diff": run_snapshot_diff, "snapshot_pit": run_snapshot_pit}.get(case.name, run_snapshot_cycle)
        return fn(args, os.path.abspath(guest), tmp)
    except (OSError, RuntimeError, ProtocolError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}", ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
