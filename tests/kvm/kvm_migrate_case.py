"""kvm suite: live migration between two kestrel processes (PUT /migrate, `kestrel migrate`,
`kestrel run --incoming`), run by run-kvm-tests with tests/guests/dirty_pages (every page of
its 12 MiB checked on each pass, the pass count in its own RAM; exit 91 if a page lost what it
held).

migrate_live: kestrel A boots the guest through the API. Refused: a destination that is not
  unix:/tcp: (400), GET /migrate before any migration (400). A destination nobody listens on:
  the migration fails (GET /migrate: failed, "connecting") and the guest runs on. Fault
  injection: a destination killed (SIGKILL) in the middle of pre-copy (max_bandwidth 1 MiB/s
  keeps it there): failed, A's VM keeps running and its passes go on. Hostile streams into
  `run --incoming`: PAGES before CONFIG, and PAGES outside the guest's RAM after a good
  CONFIG: each destination answers the refusal and exits 1 naming it. Then `kestrel migrate
  --to unix:...` into a fresh destination: exit 0, A exits 0 ("migrated"), and the guest
  carries on in B from the pass after A's last (never "dirty_pages: start", never a bad page),
  B's GET / says Running."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from api_client import Kestrel, ProtocolError  # noqa: E402
from kvm_api_case import Checks  # noqa: E402
from kvm_snapshot_case import wait_passes, whole_passes  # noqa: E402


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def migration_ends(k, timeout=60):
    """GET /migrate until it is no longer connecting/precopy/stop-and-copy; its JSON."""
    deadline = time.monotonic() + timeout
    j = {}
    while time.monotonic() < deadline:
        r = k.api.get("/migrate")
        j = r.json if r.status == 200 else {}
        if j.get("phase") in ("completed", "failed", "cancelled"):
            return j
        time.sleep(0.1)
    return j


def incoming(args, tmp, name, opts):
    path = os.path.join(tmp, name + ".mig")
    k = Kestrel(args.vmm, os.path.join(tmp, name + ".sock"), "--incoming", "unix:" + path, *opts)
    if not wait_for(lambda: os.path.exists(path) or k.proc.poll() is not None, 15):
        raise RuntimeError(f"{name}: no migration socket")
    return k, path


def hostile(args, tmp, name, opts, messages):
    """Sends `messages` (bytes) to a fresh --incoming kestrel; (exit code, its answer, stderr)."""
    k, path = incoming(args, tmp, name, opts)
    with k:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(b"KESTRLMG" + struct.pack("<I", 1) + messages)
        s.settimeout(15)
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
        s.close()
        code, _ = k.stop(timeout=15)
        return code, answer, k.stderr_text()


def run_migrate_live(args, guest, tmp):
    c = Checks()
    details = []
    opts = ("--serial", "stdio", "--debug-exit")
    with Kestrel(args.vmm, os.path.join(tmp, "a.sock"), *opts, "--log-level", "info") as a:
        a.wait_ready()
        for method, url, body in [("PUT", "/boot-source", {"kernel_image_path": guest}),
                                  ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 16}),
                                  ("PUT", "/actions", {"action_type": "InstanceStart"})]:
            c.status(a.api.request(method, url, body), 204, f"{method} {url}")
        if not c.expect(wait_passes(a, 3), f"the guest did not reach pass 3: {a.out[-300:]!r}"):
            a.stop()
            return False, "; ".join(c.problems), a.stderr_text()[-1500:]
        c.status(a.api.put("/migrate", {"destination": "ftp:x"}), 400, "PUT /migrate to ftp:x", "BadRequest",
                 "is not unix:PATH or tcp:HOST:PORT")
        c.status(a.api.get("/migrate"), 400, "GET /migrate before any", "NotAllowed", "no migration")
        c.status(a.api.put("/migrate", {"destination": "unix:" + os.path.join(tmp, "nobody")}), 204,
                 "PUT /migrate to a socket nobody listens on")
        j = migration_ends(a)
        c.expect(j.get("phase") == "failed" and "connecting" in j.get("error", ""),
                 f"migration to nobody: {j}")

        # A destination that dies in the middle of pre-copy.
        b, path = incoming(args, tmp, "b1", opts)
        with b:
            c.status(a.api.put("/migrate", {"destination": "unix:" + path, "max_bandwidth": 1 << 20}), 204,
                     "PUT /migrate (1 MiB/s)")
            c.expect(wait_for(lambda: a.api.get("/migrate").json.get("pages_sent", 0) > 64, 20),
                     f"no pages went out: {a.api.get('/migrate').json}")
            c.status(a.api.patch("/vm", {"state": "Paused"}), 400, "PATCH /vm Paused during a migration",
                     "NotAllowed", "migration is under way")
            b.proc.send_signal(signal.SIGKILL)
            b.collect()
        j = migration_ends(a)
        c.expect(j.get("phase") == "failed", f"migration to a killed destination: {j}")
        details.append(f"killed destination: {j.get('error')!r} after {j.get('pages_sent')} pages")
        before = whole_passes(a.out)[-1]
        c.expect(wait_passes(a, before + 2), f"the guest stopped after the failed migration: {a.out[-200:]!r}")
        c.status(a.api.get("/"), 200, "GET / after the failed migration")
        c.expect(a.api.get("/").json.get("state") == "Running", f"A is {a.api.get('/').json}")

        # Hostile streams into --incoming: refused and named, nothing runs.
        code, answer, err = hostile(args, tmp, "b2", opts, b"\x02" + struct.pack("<QI", 0x200000, 1) + bytes(4096))
        c.expect(code == 1 and answer[:1] == b"\x01" and b"PAGES before CONFIG" in answer,
                 f"PAGES before CONFIG: exit {code}, answer {answer[:120]!r}")
        c.expect("PAGES before CONFIG" in err, f"destination's message: {err[-300:]!r}")
        cfg = json.dumps(a.api.get("/vm/config").json).encode()
        code, answer, err = hostile(args, tmp, "b3", opts,
                                    b"\x01" + struct.pack("<I", len(cfg)) + cfg +
                                    b"\x02" + struct.pack("<QI", 0xfff000, 2) + bytes(8192))
        c.expect(code == 1 and b"outside the guest's RAM" in answer,
                 f"PAGES past RAM: exit {code}, answer {answer[:160]!r}, {err[-300:]!r}")

        # The migration itself, through the command line.
        b, path = incoming(args, tmp, "b4", opts)
        with b:
            t0 = time.monotonic()
            cli = subprocess.run([args.vmm, "migrate", "--api-sock", a.sock, "--to", "unix:" + path],
                                 capture_output=True, timeout=120)
            c.expect(cli.returncode == 0, f"kestrel migrate exited {cli.returncode}: {cli.stderr[-400:]!r}")
            code, _ = a.stop(timeout=15)
            c.expect(code == 0, f"A exited {code} after migrating, expected 0")
            c.expect("the VM migrated to unix:" in a.stderr_text() and "completed" in a.stderr_text(),
                     f"A's log: {a.stderr_text()[-300:]!r}")
            last = whole_passes(a.out)[-1]
            c.expect(wait_passes(b, last + 3), f"B did not go on past pass {last}: {b.out[-300:]!r}")
            passes = whole_passes(b.out)
            c.expect(bool(passes) and passes[0] in (last, last + 1), f"B's first pass {passes[:1]} after A's {last}")
            c.expect(b"dirty_pages: start" not in b.out and b"bad page" not in b.out,
                     f"B's guest started over or lost a page: {b.out[:300]!r}")
            c.status(b.api.get("/"), 200, "GET / on B")
            c.expect(b.api.get("/").json.get("state") == "Running", f"B is {b.api.get('/').json}")
            summary = [l for l in cli.stderr.decode(errors="replace").splitlines() if "completed" in l]
            details.append(f"A's last pass {last}, B's first {passes[:1]}; {summary[-1] if summary else ''} "
                           f"({time.monotonic() - t0:.2f} s with the CLI)")
            b.stop()
    return not c.problems, "; ".join(c.problems), "\n".join(details)


def run(args, case, guest):
    """Returns (passed, reason, details) as run_case does."""
    tmp = tempfile.mkdtemp(prefix="kmig-")
    try:
        return run_migrate_live(args, os.path.abspath(guest), tmp)
    except (OSError, RuntimeError, ProtocolError, ValueError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}", ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
