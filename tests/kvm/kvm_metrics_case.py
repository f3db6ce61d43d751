"""kvm suite case api_metrics (run by run-kvm-tests): kestrel configured and started through
its API socket the way Firecracker is (boot-source, drive "rootfs", metrics_path,
InstanceStart), the virtio_blk guest in vblk=hold mode doing its reads and writes and then
halting. While it runs and again while paused, GET /metrics must answer Prometheus text
(content type text/plain; version=0.0.4, one TYPE per family) whose
kestrel_blk_read_bytes_total{drive="rootfs"} and write_bytes equal the bytes the guest says it
moved, with the latency histogram's counts equal to its completed reads/writes/flush;
FlushMetrics must append a Firecracker JSON line to metrics_path, the 60 s periodic flush one
more (stamped 60 s after InstanceStart), and kestrel's exit a third;
summed over the lines (Firecracker writes deltas), block_rootfs.read_bytes equals the guest's."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from api_client import UnixHTTPConnection  # noqa: E402

kPeriodic = 60  # vmm/controller.hpp kMetricsPeriod


def api(sock, method, path, body=None):
    """(status, content type, body text) of one request on the API socket."""
    c = UnixHTTPConnection(sock)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read().decode(errors="replace")
    finally:
        c.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse_prometheus(text):
    """({(name, frozenset(labels)): value}, [problems]) for the text format 0.0.4."""
    values, problems, typed = {}, [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            if name in typed:
                problems.append(f"second TYPE line for {name}")
            typed[name] = line.split()[3]
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append(f"unparseable line {line!r}")
            continue
        labels = m.group(2) or ""
        pairs = LABEL.findall(labels)
        if "".join(f'{k}="{v}",' for k, v in pairs).rstrip(",") != labels.rstrip(","):
            problems.append(f"bad labels in {line!r}")
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        if m.group(1) not in typed and family not in typed:
            problems.append(f"{m.group(1)} has no TYPE line before it")
        values[(m.group(1), frozenset(pairs))] = float(m.group(3))
    return values, problems


def get(values, name, **labels):
    return values.get((name, frozenset(labels.items())))


def read_until(proc, out, pattern, timeout):
    """Reads kestrel's stdout into `out` until `pattern` matches; the match or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, out.decode(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            out += proc.stdout.read()
            return re.search(pattern, out.decode(errors="replace"))
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            out += os.read(proc.stdout.fileno(), 65536)
    return None


def metrics_lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def check_scrape(sock, want_read, want_write, when):
    status, ctype, text = api(sock, "GET", "/metrics")
    if status != 200:
        return [f"GET /metrics {when}: status {status}: {text[:200]}"], {}
    problems = []
    if not ctype.startswith("text/plain; version=0.0.4"):
        problems.append(f"GET /metrics {when}: content type {ctype!r}")
    values, bad = parse_prometheus(text)
    problems += [f"GET /metrics {when}: {b}" for b in bad[:5]]
    checks = [
        ("kestrel_blk_read_bytes_total", {"drive": "rootfs"}, want_read),
        ("kestrel_blk_write_bytes_total", {"drive": "rootfs"}, want_write),
        ("kestrel_blk_queue_read_bytes_total", {"drive": "rootfs", "queue": "0"}, want_read),
        # Completed host I/O: the reads of 0..15 and 2..9, one write, one flush.
        ("kestrel_blk_request_duration_seconds_count", {"drive": "rootfs", "op": "read"}, 2),
        ("kestrel_blk_request_duration_seconds_count", {"drive": "rootfs", "op": "write"}, 1 if want_write else 0),
        ("kestrel_blk_request_duration_seconds_count", {"drive": "rootfs", "op": "flush"}, 1),
        ("kestrel_blk_in_flight", {"drive": "rootfs", "queue": "0"}, 0),
    ]
    for name, labels, want in checks:
        got = get(values, name, **labels)
        if got != want:
            problems.append(f"GET /metrics {when}: {name}{labels} = {got}, expected {want}")
    inf = get(values, "kestrel_blk_request_duration_seconds_bucket", drive="rootfs", op="read", le="+Inf")
    if inf != 2:
        problems.append(f"GET /metrics {when}: read histogram +Inf bucket = {inf}, expected 2")
    for name, labels in [("kestrel_vcpu_exits_total", {"vcpu": "0", "reason": "io_out"}),
                         ("kestrel_vcpu_run_seconds_total", {"vcpu": "0"}),
                         ("kestrel_serial_written_bytes_total", {}),
                         ("process_resident_memory_bytes", {}),
                         ("kestrel_io_uring_submissions_total", {})]:
        got = get(values, name, **labels)
        if not got or got <= 0:
            problems.append(f"GET /metrics {when}: {name}{labels} = {got}, expected > 0")
    return problems, values


def run(args, case, guest, image, serial):
    """Returns (passed, reason, details) as run_case does."""
    with tempfile.TemporaryDirectory(prefix="kestrel-kvm-", dir=os.environ.get("KESTREL_KVM_TMPDIR")) as tmp:
        disk, sock, mpath = (os.path.join(tmp, n) for n in ("disk.img", "api.sock", "metrics.json"))
        with open(disk, "wb") as f:
            f.write(image)
        cmd = [args.vmm, "run", "--api-sock", sock, "--debug-exit", "--serial", "stdio"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = bytearray()
        problems = []
        lines = []
        started = periodic_at = 0.0
        start = time.monotonic()
        try:
            while not os.path.exists(sock) and proc.poll() is None and time.monotonic() - start < 10:
                time.sleep(0.02)
            steps = [("PUT", "/boot-source", {"kernel_image_path": guest, "boot_args": case.cmdline}),
                     ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk, "is_root_device": False,
                                                "is_read_only": False, "serial": serial}),
                     ("PUT", "/metrics", {"metrics_path": mpath}),
                     ("PUT", "/actions", {"action_type": "InstanceStart"})]
            for method, path, body in steps:
                if body == {"action_type": "InstanceStart"}:
                    started = time.time()
                status, _, text = api(sock, method, path, body)
                if status != 204:
                    raise RuntimeError(f"{method} {path}: status {status}: {text[:200]}")
            m = read_until(proc, out, r"virtio-blk hold read-bytes=(\d+) write-bytes=(\d+)\r?\n", args.timeout)
            if not m:
                raise RuntimeError("the guest never reached its hold line")
            want_read, want_write = int(m.group(1)), int(m.group(2))
            p, _ = check_scrape(sock, want_read, want_write, "while running")
            problems += p
            for method, path, body, when in [("PATCH", "/vm", {"state": "Paused"}, "pause"),
                                              ("PUT", "/actions", {"action_type": "FlushMetrics"}, "flush")]:
                status, _, text = api(sock, method, path, body)
                if status != 204:
                    problems.append(f"{when}: status {status}: {text[:200]}")
            p, _ = check_scrape(sock, want_read, want_write, "while paused")
            problems += p
            lines = metrics_lines(mpath)
            if len(lines) != 1:
                problems.append(f"metrics_path has {len(lines)} lines after one FlushMetrics, expected 1")
            status, _, text = api(sock, "PATCH", "/vm", {"state": "Resumed"})
            if status != 204:
                problems.append(f"resume: status {status}: {text[:200]}")
            # The periodic flush (Controller::kMetricsPeriod, 60 s from InstanceStart, as
            # Firecracker's): a second line appears by itself, not before.
            while len(lines) < 2 and time.time() - started < kPeriodic + 20 and proc.poll() is None:
                time.sleep(0.5)
                lines = metrics_lines(mpath)
            if len(lines) != 2:
                problems.append(f"metrics_path has {len(lines)} lines {time.time() - started:.0f} s after "
                                f"InstanceStart, expected 2 (FlushMetrics, then the {kPeriodic} s periodic flush)")
            else:
                at = lines[1].get("utc_timestamp_ms", 0) / 1000 - started
                if not kPeriodic - 1 <= at <= kPeriodic + 20:
                    problems.append(f"the periodic metrics line is stamped {at:.1f} s after InstanceStart, "
                                    f"expected {kPeriodic} s")
                periodic_at = at
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        except (OSError, RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
            problems.append(str(e))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out += proc.stdout.read()
        err = proc.stderr.read().decode(errors="replace")
        details = "  serial:\n" + "".join(f"    | {r[:200]}\n" for r in out.decode(errors="replace").splitlines()[-6:])
        details += "  stderr:\n" + "".join(f"    | {r[:200]}\n" for r in err.splitlines()[-6:])
        if proc.returncode != case.exit_code:
            problems.append(f"exit {proc.returncode}, expected {case.exit_code}")
        if problems:
            return False, "; ".join(problems), details
        try:
            lines = metrics_lines(mpath)
        except (OSError, json.JSONDecodeError) as e:
            return False, f"metrics_path: {e}", details
        if len(lines) != 3:
            problems.append(f"metrics_path has {len(lines)} lines after FlushMetrics, the periodic flush and exit, "
                            "expected 3")
        for i, l in enumerate(lines):
            missing = [k for k in ("utc_timestamp_ms", "block_rootfs", "block", "vcpu", "uart", "vmm") if k not in l]
            if missing:
                problems.append(f"metrics_path line {i + 1} lacks {missing}")
        total = {k: sum(l.get("block_rootfs", {}).get(k, 0) for l in lines)
                 for k in ("read_bytes", "write_bytes", "read_count", "write_count", "flush_count")}
        want = {"read_bytes": want_read, "write_bytes": want_write, "flush_count": 1}
        for k, v in want.items():
            if total[k] != v:
                problems.append(f"metrics_path: block_rootfs.{k} summed over the lines = {total[k]}, expected {v}")
        if total["read_count"] < 2:
            problems.append(f"metrics_path: block_rootfs.read_count summed = {total['read_count']}, expected >= 2")
        if problems:
            return False, "; ".join(problems), details
        return True, (f"exit {proc.returncode} in {time.monotonic() - start:.2f} s; scraped read_bytes={want_read} "
                      f"write_bytes={want_write} running and paused; {len(lines)} JSON lines (FlushMetrics, periodic "
                      f"{periodic_at:.1f} s after InstanceStart, exit), deltas summing to the guest's bytes"), ""
