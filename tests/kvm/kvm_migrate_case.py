"""kvm suite: live migration between two kestrel processes (PUT /migrate, `kestrel migrate`,
`kestrel run --incoming`), run by run-kvm-tests with tests/guests/dirty_pages (every page of
its 12 MiB checked on each pass, the pass count in its own RAM; exit 91 if a page lost what it
held).

migrate_live: kestrel A boots the guest through the API. Refused: a destination that is not
  unix:/tcp: (400), GET /migrate before any migration (400). Fault injection, the guest running
  on at the source after each (GET /migrate: failed, with the reason): a destination nobody
  listens on; a destination killed (SIGKILL) in the middle of pre-copy (max_bandwidth 1 MiB/s
  keeps it there; PATCH /vm Paused meanwhile is refused); after the source paused its VM, a
  (fake) destination that refuses the VM at DONE and one that hangs up without answering.
  auto_converge at 8 MiB/s: the throttle climbs to 30 % or more while the guest outruns the
  rounds, until timeout_s 12 ends it; then it is off (cpu_throttle_pct 0, the guest running on).
  Hostile streams into `run --incoming`, each refused with the reason answered and exit 1: a
  stream not starting with CONFIG, pages outside the guest's RAM (after the handshake's OK), a
  flipped bit (CRC-32C), a stream cut mid-message, a configuration this host cannot hold, a
  disk outside --allow-path, a tap not in --allow-tap.
  Then `kestrel migrate --to unix:...` into a fresh destination: exit 0, A exits 0
  ("migrated"), and the guest carries on in B from the pass after A's last (never
  "dirty_pages: start", never a bad page), B's GET / says Running; and on through PUT /migrate
  into two more new kestrels, checked the same way each time."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from api_client import Kestrel, ProtocolError  # noqa: E402
from kvm_api_case import Checks  # noqa: E402
from kvm_snapshot_case import wait_passes, whole_passes  # noqa: E402


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (migration/crc32c.hpp), a byte at a time."""
    c = crc ^ 0xffffffff
    t = _CRC32C
    for b in data:
        c = t[(c ^ b) & 0xff] ^ (c >> 8)
    return c ^ 0xffffffff


def msg(body):
    """One stream message: type byte and body, then its CRC-32C (migration_stream.hpp)."""
    return body + struct.pack("<I", crc32c(body))


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def migration_ends(k, timeout=120):
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


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise RuntimeError("fake destination: the stream ended")
        b += chunk
    return b


def fake_destination(path, at_done):
    """A destination that reads a whole migration stream (answering OK to CONFIG), checking
    each CRC, then does `at_done(sock)`: the source has paused its VM by then. Returns the
    thread and a dict that gets 'messages' (type counts) or 'error'."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    result = {}

    def serve():
        try:
            s, _ = srv.accept()
            counts = {}
            recv_exact(s, 12)
            while True:
                t = recv_exact(s, 1)
                if t == b"\x01":
                    body = recv_exact(s, 4)
                    body += recv_exact(s, struct.unpack("<I", body)[0])
                elif t == b"\x02":
                    body = recv_exact(s, 12)
                    body += recv_exact(s, struct.unpack("<QI", body)[1] * 4096)
                elif t == b"\x05":
                    body = recv_exact(s, 12)
                elif t == b"\x03":
                    body = recv_exact(s, 8)
                    body += recv_exact(s, struct.unpack("<Q", body)[0])
                else:
                    body = b""
                crc = struct.unpack("<I", recv_exact(s, 4))[0]
                # Python's CRC runs at a few MB/s: the page runs' is the real destination's job.
                if t != b"\x02" and crc != crc32c(t + body):
                    raise RuntimeError(f"fake destination: CRC mismatch on type {t!r}")
                counts[t[0]] = counts.get(t[0], 0) + 1
                if t == b"\x01":
                    s.sendall(b"\x00")
                if t == b"\x04":
                    break
            result["messages"] = counts
            at_done(s)
            s.close()
        except (OSError, RuntimeError, struct.error) as e:
            result["error"] = str(e)
        finally:
            srv.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return th, result


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
        c.status(a.api.put("/migrate", {"destination": "unix:/x", "auto_converge": "yes"}), 400,
                 "PUT /migrate with auto_converge a string", "BadRequest", "must be true or false")
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

        # Failures after the source paused its VM: a destination that refuses the VM at DONE,
        # and one that hangs up without an answer. The VM resumes at the source each time.
        for name, at_done, want in [
                ("refuses", lambda s: s.sendall(b"\x01" + struct.pack("<I", 11) + b"no, thanks."), "no, thanks."),
                ("hangs-up", lambda s: None, "it ended in the destination's answer for the VM")]:
            path = os.path.join(tmp, name + ".mig")
            th, res = fake_destination(path, at_done)
            before = whole_passes(a.out)[-1]
            # A slow reader (Python): a generous downtime target lets it stop after one dirty round.
            c.status(a.api.put("/migrate", {"destination": "unix:" + path, "downtime_ms": 60000}), 204,
                     f"PUT /migrate to a destination that {name}")
            j = migration_ends(a)
            th.join(10)
            c.expect(j.get("phase") == "failed" and want in j.get("error", ""), f"destination that {name}: {j}")
            c.expect(res.get("messages", {}).get(3) == 1 and res.get("messages", {}).get(4) == 1,
                     f"destination that {name} did not get STATE and DONE: {res}")
            c.expect(wait_passes(a, before + 2), f"the guest stopped after a destination that {name}: {a.out[-200:]!r}")
            details.append(f"destination that {name}: {j.get('error')!r}; stream {res.get('messages')}")

        # auto_converge: at 8 MiB/s the guest rewrites its 12 MiB faster than a round sends
        # them, round after round, so its vCPUs are throttled more and more (20 %, then +10 %
        # every two outrun rounds) until timeout_s ends the migration; the guest runs on at the
        # source, unthrottled.
        path = os.path.join(tmp, "converge.mig")
        th, res = fake_destination(path, lambda s: None)
        c.status(a.api.put("/migrate", {"destination": "unix:" + path, "auto_converge": True,
                                        "max_bandwidth": 8 << 20, "timeout_s": 12}), 204,
                 "PUT /migrate with auto_converge")
        seen, j, rates, etas = 0, {}, {}, []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            r = a.api.get("/migrate")
            j = r.json if r.status == 200 else {}
            pct = j.get("cpu_throttle_pct", 0)
            if j.get("phase") == "precopy":
                etas.append(j.get("eta_ms", 0))
            if pct > seen:
                seen = pct
                rates[pct] = (time.monotonic(), whole_passes(a.out)[-1])
            if j.get("phase") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        th.join(10)
        c.expect(j.get("phase") == "failed" and "timeout_s 12 passed" in j.get("error", ""),
                 f"auto_converge migration: {j}")
        c.expect(seen >= 30, f"auto_converge: the throttle only reached {seen}% in {j.get('round')} rounds")
        c.expect(j.get("cpu_throttle_pct") == 0, f"the throttle stayed on after the migration ended: {j}")
        # 12 MiB a round at 8 MiB/s: an ETA of a second or so, never none or hours.
        c.expect(bool(etas) and max(etas) > 0 and max(etas) < 60000, f"GET /migrate eta_ms: {etas[:40]}")
        c.expect("vCPUs throttled to 20%" in a.stderr_text(), f"A's log: {a.stderr_text()[-400:]!r}")
        before = whole_passes(a.out)[-1]
        t_free = time.monotonic()
        c.expect(wait_passes(a, before + 2), f"the guest stopped after auto_converge: {a.out[-200:]!r}")
        # Not judged (a speed): the guest's pass rate while throttled, then free.
        steps = sorted(rates)
        throttled = ""
        if len(steps) >= 2:
            (t1, p1), (t2, p2) = rates[steps[-2]], rates[steps[-1]]
            throttled = f", {steps[-2]}% throttled: {(p2 - p1) / max(t2 - t1, 1e-3):.1f} passes/s"
        free = (whole_passes(a.out)[-1] - before) / max(time.monotonic() - t_free, 1e-3)
        details.append(f"auto_converge: throttle up to {seen}% by round {j.get('round')}{throttled}, "
                       f"unthrottled afterwards: {free:.1f} passes/s; eta_ms seen {min(etas, default=0)}.."
                       f"{max(etas, default=0)}")

        # Hostile streams into --incoming: refused and named, nothing runs.
        code, answer, err = hostile(args, tmp, "b2", opts, msg(b"\x02" + struct.pack("<QI", 0x200000, 1) + bytes(4096)))
        c.expect(code == 1 and answer[:1] == b"\x01" and b"does not start with CONFIG" in answer,
                 f"PAGES before CONFIG: exit {code}, answer {answer[:120]!r}")
        c.expect("does not start with CONFIG" in err, f"destination's message: {err[-300:]!r}")
        cfg = json.dumps(a.api.get("/vm/config").json).encode()
        config = msg(b"\x01" + struct.pack("<I", len(cfg)) + cfg)
        code, answer, err = hostile(args, tmp, "b3", opts,
                                    config + msg(b"\x02" + struct.pack("<QI", 0xfff000, 2) + bytes(8192)))
        # The handshake's OK for the configuration, then the refusal.
        c.expect(code == 1 and answer[:1] == b"\x00" and answer[1:2] == b"\x01" and b"outside the guest's RAM" in answer,
                 f"PAGES past RAM: exit {code}, answer {answer[:160]!r}, {err[-300:]!r}")
        page = msg(b"\x02" + struct.pack("<QI", 0x200000, 1) + bytes(4096))
        flipped = page[:100] + bytes([page[100] ^ 1]) + page[101:]
        code, answer, err = hostile(args, tmp, "b5", opts, config + flipped)
        c.expect(code == 1 and b"CRC-32C" in answer, f"a flipped bit: exit {code}, answer {answer[:200]!r}")
        # The source gone mid-message (killed, the connection cut): refused, nothing runs.
        code, answer, err = hostile(args, tmp, "b7", opts, config + page[:2000])
        c.expect(code == 1 and b"it ended in PAGES data" in answer + err.encode(),
                 f"a stream cut short: exit {code}, {err[-300:]!r}")
        # --allow-path / --allow-tap: a configuration naming host files or taps outside them is
        # refused before anything is opened.
        lying = json.loads(cfg)
        lying["drives"] = [{"drive_id": "x", "path_on_host": "/etc/hostname", "is_root_device": False,
                            "is_read_only": True}]
        lie = json.dumps(lying).encode()
        code, answer, err = hostile(args, tmp, "b8", opts + ("--allow-path", tmp),
                                    msg(b"\x01" + struct.pack("<I", len(lie)) + lie))
        c.expect(code == 1 and answer[:1] == b"\x01" and b"disk '/etc/hostname' is outside --allow-path" in answer,
                 f"a disk outside --allow-path: exit {code}, answer {answer[:200]!r}")
        lying = json.loads(cfg)
        lying["network-interfaces"] = [{"iface_id": "n", "host_dev_name": "lo"}]
        lie = json.dumps(lying).encode()
        code, answer, err = hostile(args, tmp, "b9", opts + ("--allow-tap", "kt-none"),
                                    msg(b"\x01" + struct.pack("<I", len(lie)) + lie))
        c.expect(code == 1 and b"tap 'lo' is not one of --allow-tap (kt-none)" in answer,
                 f"a tap outside --allow-tap: exit {code}, answer {answer[:200]!r}")
        bigger = json.loads(cfg)
        bigger["machine-config"]["mem_size_mib"] = 1 << 20  # 1 TiB: more than this host has
        big = json.dumps(bigger).encode()
        code, answer, err = hostile(args, tmp, "b6", opts, msg(b"\x01" + struct.pack("<I", len(big)) + big))
        c.expect(code == 1 and answer[:1] == b"\x01" and b"memory" in answer,
                 f"1 TiB configuration: exit {code}, answer {answer[:200]!r}")

        # The migration itself, through the command line (into a destination that allows only
        # its own directory: nothing here names a host file).
        b, path = incoming(args, tmp, "b4", opts + ("--allow-path", tmp))
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
            # A pass line the guest was printing when A paused is finished by B and is whole in
            # neither: B's first whole pass is then last + 2.
            cut = not a.out.endswith(b"\n")
            c.expect(bool(passes) and passes[0] in (last, last + 1) + ((last + 2,) if cut else ()),
                     f"B's first pass {passes[:1]} after A's {last} (A's output ends {a.out[-30:]!r})")
            c.expect(b"dirty_pages: start" not in b.out and b"bad page" not in b.out,
                     f"B's guest started over or lost a page: {b.out[:300]!r}")
            c.status(b.api.get("/"), 200, "GET / on B")
            c.expect(b.api.get("/").json.get("state") == "Running", f"B is {b.api.get('/').json}")
            summary = [l for l in cli.stderr.decode(errors="replace").splitlines() if "completed" in l]
            details.append(f"A's last pass {last}, B's first {passes[:1]}; {summary[-1] if summary else ''} "
                           f"({time.monotonic() - t0:.2f} s with the CLI)")
            # On, twice more, through PUT /migrate: each time into a new kestrel.
            src = b
            for hop in ("c", "d"):
                nxt, path = incoming(args, tmp, hop, opts)
                c.status(src.api.put("/migrate", {"destination": "unix:" + path}), 204, f"PUT /migrate to {hop}")
                j = migration_ends(src)
                c.expect(j.get("phase") == "completed", f"migration to {hop}: {j}")
                code, _ = src.stop(timeout=15)
                c.expect(code == 0, f"the source before {hop} exited {code}")
                last = whole_passes(src.out)[-1]
                c.expect(wait_passes(nxt, last + 2), f"{hop} did not go on past pass {last}: {nxt.out[-300:]!r}")
                c.expect(b"dirty_pages: start" not in nxt.out and b"bad page" not in nxt.out,
                         f"{hop}'s guest started over or lost a page: {nxt.out[:300]!r}")
                details.append(f"to {hop}: downtime {j.get('downtime_ms')} ms, total {j.get('total_ms')} ms, "
                               f"{j.get('pages_sent')} pages")
                if src is not b:
                    src.__exit__(None, None, None)
                src = nxt
            src.stop()
            src.__exit__(None, None, None)
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
