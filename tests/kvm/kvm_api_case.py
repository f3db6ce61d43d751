"""kvm suite cases for kestrel's API on a running VM (run by run-kvm-tests; the unit suite's
tests/api/run-api-tests covers everything before InstanceStart). The guest is serial_hello
without --debug-exit: it prints kestrel-serial-ok and halts, so the VM runs until SIGTERM.

api_lifecycle: configured through the API the way Firecracker is (boot-source,
  machine-config, a root drive, vsock, entropy, metrics), InstanceStart; then the state
  machine: GET / Running, InstanceStart again and every pre-boot PUT/PATCH refused 400
  NotAllowed, GET /vm/info's fields, ram-digest refused while running, PATCH /vm Paused ->
  "Paused" -> two equal digests -> Resumed -> "Running", SendCtrlAltDel, GET /vm/config equal
  to the one before the start; SIGTERM -> 143 and the socket removed.
api_config_file: the same configuration as --config-file (with --api-sock) boots the same
  guest; its GET /vm/config equals the file; that answer, applied as --config-file to a third
  kestrel without an API, boots the guest again.
api_tap_fd: `--net fd=N` with a tap this runner attached (/dev/net/tun, IFF_TAP | IFF_NO_PI |
  IFF_VNET_HDR): GET /vm/config names the tap (kestrel asks the kernel, TUNGETIFF), so the
  answer can be fed back as a configuration.

A new runtime endpoint: add its success to LIFECYCLE's steps or its refusal to
PREBOOT_ONLY."""

import json
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from api_client import Kestrel, ProtocolError  # noqa: E402

HELLO = b"kestrel-serial-ok\n"


def configuration(guest, tmp):
    """What the cases configure, as Firecracker's JSON objects."""
    root = os.path.join(tmp, "rootfs.img")
    with open(root, "wb") as f:
        f.truncate(1 << 20)
    return {
        "boot-source": {"kernel_image_path": guest, "boot_args": "console=ttyS0 quiet"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "smt": False, "track_dirty_pages": False,
                           "huge_pages": "Transparent"},
        "drives": [{"drive_id": "rootfs", "path_on_host": root, "is_root_device": True, "is_read_only": True,
                    "cache_type": "Unsafe", "io_engine": "Async"}],
        "network-interfaces": [],
        "vsock": {"guest_cid": 3, "uds_path": os.path.join(tmp, "v.sock")},
        "entropy": {},
        "metrics": {"metrics_path": os.path.join(tmp, "metrics.json")},
    }


# Pre-boot only (swagger: "Pre-boot only"): after InstanceStart each is 400 NotAllowed.
def preboot_only(tmp):
    return [
        ("PUT", "/boot-source", {"kernel_image_path": "/k"}),
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
        ("PATCH", "/machine-config", {"mem_size_mib": 128}),
        ("PUT", "/drives/data", {"drive_id": "data", "path_on_host": "/d.img", "is_root_device": False}),
        ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "/d.img", "is_root_device": True}),
        ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0"}),
        ("PUT", "/vsock", {"guest_cid": 4, "uds_path": os.path.join(tmp, "w.sock")}),
        ("PUT", "/entropy", {}),
        ("PUT", "/logger", {"log_path": os.path.join(tmp, "late.log")}),
        ("PUT", "/metrics", {"metrics_path": os.path.join(tmp, "late.json")}),
    ]


def diff(want, got, where=""):
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) | set(got)):
            if k not in got or k not in want:
                out.append(f"{where}.{k}: {'missing' if k not in got else 'unexpected'}")
            else:
                out += diff(want[k], got[k], f"{where}.{k}")
        return out
    if type(want) is not type(got) or want != got:
        return [f"{where}: {json.dumps(got)[:200]}, expected {json.dumps(want)[:200]}"]
    return []


class Checks:
    def __init__(self):
        self.problems = []

    def expect(self, cond, text):
        if not cond:
            self.problems.append(text)
        return cond

    def status(self, a, want, what, kind=None, needle=None):
        good = self.expect(a.status == want, f"{what}: {a!r}, expected {want}{' ' + kind if kind else ''}")
        if good and kind:
            good = self.expect(a.kind == kind, f"{what}: fault_kind {a.kind!r}, expected {kind} ({a.fault!r})")
        if good and needle:
            good = self.expect(needle in a.fault, f"{what}: fault lacks {needle!r}: {a.fault!r}")
        return good


def details_of(k):
    out = k.out.decode(errors="replace").splitlines()[-6:]
    err = k.stderr_text().splitlines()[-8:]
    return ("  serial:\n" + "".join(f"    | {r[:200]}\n" for r in out) +
            "  stderr:\n" + "".join(f"    | {r[:200]}\n" for r in err))


def state(k):
    return k.api.get("/").json.get("state")


def check_device_state(c, api, tmp):
    """The Vmm's snapshot hooks on a paused VM: the device state saved, loaded back and saved
    again gives the same bytes; a file with one byte changed is refused and changes nothing."""
    first, again, bad = (os.path.join(tmp, n) for n in ("dev.state", "dev-again.state", "dev-bad.state"))
    if not c.status(api.put("/vm/device-state/save", {"path": first}), 204, "PUT /vm/device-state/save"):
        return
    data = open(first, "rb").read()
    c.expect(data[:8] == b"KESTRLST" and not os.path.exists(first + ".tmp"),
             f"device state file starts {data[:8]!r}, expected KESTRLST (and no .tmp left)")
    for sid in (b"uart/com1", b"rtc", b"i8042", b"acpi-pm", b"ioapic"):
        c.expect(sid in data, f"device state file has no section {sid.decode()}")
    c.status(api.put("/vm/device-state/load", {"path": first}), 204, "PUT /vm/device-state/load")
    c.status(api.put("/vm/device-state/save", {"path": again}), 204, "PUT /vm/device-state/save after load")
    c.expect(os.path.exists(again) and open(again, "rb").read() == data,
             "device state saved after loading it differs from the one loaded")
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0x10
    with open(bad, "wb") as f:
        f.write(corrupt)
    c.status(api.put("/vm/device-state/load", {"path": bad}), 400, "PUT /vm/device-state/load of a corrupt file",
             "BadRequest", "checksum mismatch")
    c.status(api.put("/vm/device-state/save", {"path": again}), 204, "PUT /vm/device-state/save after the refusal")
    c.expect(open(again, "rb").read() == data, "a refused device state file changed the devices")


def run_lifecycle(args, guest, tmp):
    c = Checks()
    cfg = configuration(guest, tmp)
    sock = os.path.join(tmp, "api.sock")
    figures = ""
    with Kestrel(args.vmm, sock, "--serial", "stdio") as k:
        k.wait_ready()
        api = k.api
        steps = [("PUT", "/boot-source", cfg["boot-source"]),
                 ("PUT", "/machine-config", cfg["machine-config"]),
                 ("PUT", "/drives/rootfs", cfg["drives"][0]),
                 ("PUT", "/vsock", cfg["vsock"]),
                 ("PUT", "/entropy", cfg["entropy"]),
                 ("PUT", "/metrics", cfg["metrics"])]
        for method, url, body in steps:
            c.status(api.request(method, url, body), 204, f"{method} {url}")
        before = api.get("/vm/config").json
        c.expect(not diff(cfg, before), f"GET /vm/config before start: {diff(cfg, before)}")
        t0 = time.monotonic()
        if not c.status(api.action("InstanceStart"), 204, "InstanceStart"):
            k.stop()
            return False, "; ".join(c.problems), details_of(k)
        c.expect(k.wait_for_output(HELLO, args.timeout), "the guest never printed kestrel-serial-ok")
        booted = time.monotonic() - t0
        c.expect(state(k) == "Running", f"GET / state {state(k)!r} after InstanceStart, expected Running")
        c.status(api.action("InstanceStart"), 400, "InstanceStart twice", "NotAllowed", "already been started")
        for method, url, body in preboot_only(tmp):
            c.status(api.request(method, url, body), 400, f"{method} {url} after start", "NotAllowed",
                     "only possible before the guest starts")
        info = api.get("/vm/info").json or {}
        c.expect(info.get("state") == "Running" and info.get("id") == "kestrel", f"GET /vm/info: {info}")
        vcpus = info.get("vcpus") or [{}]
        v0 = vcpus[0]
        c.expect(len(vcpus) == 1 and v0.get("index") == 0 and v0.get("state") == "Running"
                 and v0.get("phase") in ("in guest", "in vmm") and isinstance(v0.get("exits"), int)
                 and v0["exits"] >= 1 and isinstance(v0.get("run_seconds"), (int, float))
                 and isinstance(v0.get("vmm_seconds"), (int, float)), f"GET /vm/info vcpus: {vcpus}")
        c.expect(isinstance(info.get("uptime_seconds"), (int, float)) and 0 <= info["uptime_seconds"] < 3600,
                 f"GET /vm/info uptime_seconds: {info.get('uptime_seconds')!r}")
        c.expect(isinstance(info.get("rss_bytes"), int) and info["rss_bytes"] >= 1 << 20,
                 f"GET /vm/info rss_bytes: {info.get('rss_bytes')!r}")
        c.expect(isinstance(info.get("threads"), int) and info["threads"] >= 4,
                 f"GET /vm/info threads: {info.get('threads')!r} (main, API, event loop, vCPU at least)")
        c.status(api.get("/vm/ram-digest"), 400, "GET /vm/ram-digest while running", "NotAllowed", "paused")
        c.status(api.patch("/vm", {"state": "Paused"}), 204, "PATCH /vm Paused")
        c.expect(state(k) == "Paused", f"GET / state {state(k)!r} after pausing, expected Paused")
        paused_info = api.get("/vm/info").json or {}
        paused_again = api.get("/vm/info").json or {}
        p0, p1 = (paused_info.get("vcpus") or [{}])[0], (paused_again.get("vcpus") or [{}])[0]
        c.expect(p0.get("state") == "Paused" and p0.get("phase") == "parked",
                 f"GET /vm/info vcpus while paused: {paused_info.get('vcpus')}")
        c.expect(p0.get("exits") == p1.get("exits") and p0.get("run_seconds") == p1.get("run_seconds"),
                 f"a parked vCPU's counters moved: {p0} then {p1}")
        d1, d2 = api.get("/vm/ram-digest"), api.get("/vm/ram-digest")
        if c.status(d1, 200, "GET /vm/ram-digest") and c.status(d2, 200, "GET /vm/ram-digest again"):
            s1, s2 = d1.json.get("sha256", ""), d2.json.get("sha256", "")
            c.expect(re.fullmatch(r"[0-9a-f]{64}", s1) is not None, f"ram-digest sha256 {s1!r}")
            c.expect(s1 == s2, f"two digests of a paused VM differ: {s1} {s2}")
        check_device_state(c, api, tmp)
        c.status(api.patch("/vm", {"state": "Paused"}), 204, "PATCH /vm Paused while paused")
        c.status(api.action("SendCtrlAltDel"), 400, "SendCtrlAltDel while paused", "NotAllowed")
        c.status(api.patch("/vm", {"state": "Resumed"}), 204, "PATCH /vm Resumed")
        c.expect(state(k) == "Running", f"GET / state {state(k)!r} after resuming, expected Running")
        c.status(api.get("/vm/ram-digest"), 400, "GET /vm/ram-digest after resuming", "NotAllowed")
        c.status(api.put("/vm/device-state/save", {"path": os.path.join(tmp, "running.state")}), 400,
                 "PUT /vm/device-state/save while running", "NotAllowed", "only saved while paused")
        c.status(api.patch("/vm", {"state": "Resumed"}), 204, "PATCH /vm Resumed while running")
        # serial_hello has no keyboard driver: the keys are typed and ignored; the VM runs on.
        c.status(api.action("SendCtrlAltDel"), 204, "SendCtrlAltDel")
        c.status(api.action("FlushMetrics"), 204, "FlushMetrics")
        after = api.get("/vm/config").json
        c.expect(not diff(before, after), f"GET /vm/config after start differs: {diff(before, after)}")
        with open(os.path.join(tmp, "vm-config.json"), "w") as f:
            json.dump(after, f)
        c.expect(state(k) == "Running", f"GET / state {state(k)!r} at the end, expected Running")
        code, took = k.stop()
        c.expect(code == 143, f"exit {code} after SIGTERM, expected 143")
        c.expect(not os.path.exists(sock), "the API socket is still there after kestrel's exit")
        figures = f"booted {booted:.2f} s after InstanceStart; exit {took:.2f} s after SIGTERM"
    if c.problems:
        return False, "; ".join(c.problems), details_of(k)
    return True, f"exit 143; {figures}", ""


def run_config_file(args, guest, tmp):
    c = Checks()
    cfg = configuration(guest, tmp)
    f1 = os.path.join(tmp, "config.json")
    with open(f1, "w") as f:
        json.dump(cfg, f)
    sock = os.path.join(tmp, "api.sock")
    with Kestrel(args.vmm, sock, "--config-file", f1, "--serial", "stdio") as k:
        k.wait_ready()
        c.expect(k.wait_for_output(HELLO, args.timeout), "--config-file + --api-sock: no kestrel-serial-ok")
        c.expect(state(k) == "Running", f"GET / state {state(k)!r}, expected Running")
        got = k.api.get("/vm/config").json
        c.expect(not diff(cfg, got), f"GET /vm/config differs from the --config-file: {diff(cfg, got)}")
        c.status(k.api.put("/boot-source", cfg["boot-source"]), 400, "PUT /boot-source after a --config-file boot",
                 "NotAllowed")
        f2 = os.path.join(tmp, "from-get.json")
        with open(f2, "w") as f:
            json.dump(got, f)
        code, _ = k.stop()
        c.expect(code == 143, f"first kestrel: exit {code} after SIGTERM, expected 143")
    if c.problems:
        return False, "; ".join(c.problems), details_of(k)
    # The running VM's GET /vm/config as the whole configuration of another kestrel, no API.
    with Kestrel(args.vmm, None, "--config-file", f2, "--serial", "stdio") as k2:
        c.expect(k2.wait_for_output(HELLO, args.timeout), "--config-file from GET /vm/config: no kestrel-serial-ok")
        c.expect(os.path.exists(cfg["vsock"]["uds_path"]), "--config-file from GET /vm/config: no vsock socket")
        code, _ = k2.stop()
        c.expect(code == 143, f"second kestrel: exit {code} after SIGTERM, expected 143")
    if c.problems:
        return False, "; ".join(c.problems), details_of(k2)
    return True, "exit 143 twice; the guest booted from --config-file and from its GET /vm/config", ""


def open_tap(name):
    """A tap attached the way a CNI plugin or a shim hands one over; returns its fd."""
    import fcntl
    import struct
    TUNSETIFF, IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x400454CA, 0x0002, 0x1000, 0x4000
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    return fd


def run_tap_fd(args, guest, tmp):
    c = Checks()
    name = f"kfd{os.getpid() % 100000}"
    try:
        fd = open_tap(name)
    except OSError as e:
        return False, f"cannot attach a tap for the test (root and /dev/net/tun needed): {e}", ""
    try:
        sock = os.path.join(tmp, "api.sock")
        with Kestrel(args.vmm, sock, "--kernel", guest, "--memory", "64M", "--net", f"fd={fd}",
                     "--serial", "stdio", pass_fds=(fd,)) as k:
            k.wait_ready()
            c.expect(k.wait_for_output(HELLO, args.timeout), "--net fd=N: no kestrel-serial-ok")
            nets = k.api.get("/vm/config").json.get("network-interfaces", [])
            got = [n.get("host_dev_name") for n in nets]
            c.expect(got == [name], f"GET /vm/config host_dev_name {got}, expected [{name!r}]")
            code, _ = k.stop()
            c.expect(code == 143, f"exit {code} after SIGTERM, expected 143")
        if c.problems:
            return False, "; ".join(c.problems), details_of(k)
        return True, f"exit 143; GET /vm/config names the inherited tap {name}", ""
    finally:
        os.close(fd)


def run(args, case, guest):
    """Returns (passed, reason, details) as run_case does."""
    # Short: unix socket paths are limited to 107 bytes ($KESTREL_KVM_TMPDIR may be long).
    tmp = tempfile.mkdtemp(prefix="kapi-")
    try:
        fn = {"lifecycle": run_lifecycle, "config-file": run_config_file, "tap-fd": run_tap_fd}[case.api_case]
        return fn(args, os.path.abspath(guest), tmp)
    except (OSError, RuntimeError, ProtocolError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}", ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
