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
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from api_client import Kestrel, ProtocolError  # noqa: E402
import state_file  # noqa: E402  (beside this file)

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


# MSRs that count time, read live: between two saves of one paused VM they may only move
# forwards. The Hyper-V pair is in KVM_GET_MSR_INDEX_LIST where KVM offers Hyper-V
# enlightenments (seen in the nested host's KVM): HV_X64_MSR_VP_RUNTIME counts the vCPU
# thread's run time, HV_X64_MSR_TIME_REF_COUNT the partition's reference time (100 ns units).
TIME_MSRS = {0x10: "IA32_TSC", 0x40000010: "HV_X64_MSR_VP_RUNTIME", 0x40000020: "HV_X64_MSR_TIME_REF_COUNT"}


def same_state(a, b):
    """What differs between two state files of one paused VM, beyond what time moves on: the
    kvm-clock and each vCPU's time-counting MSRs (TIME_MSRS) are read live, so only they may
    differ, and only forwards."""
    (_, sa), (_, sb) = state_file.parse(a), state_file.parse(b)
    if [x[0] for x in sa] != [x[0] for x in sb]:
        return [f"sections {[x[0] for x in sa]} vs {[x[0] for x in sb]}"]
    diffs = []
    for (sid, _, pa), (_, _, pb) in zip(sa, sb):
        if sid == "kvm-clock":
            # v2 (migration/vcpu_state.hpp): clock, then the host's CLOCK_REALTIME at that
            # reading (0 where KVM gives no KVM_CLOCK_REALTIME); both only move forwards.
            if len(pa) != 16 or len(pb) != 16:
                diffs.append(f"kvm-clock: {len(pa)} and {len(pb)} bytes, expected 16")
                continue
            (ca, ra), (cb, rb) = struct.unpack("<QQ", pa), struct.unpack("<QQ", pb)
            if cb < ca:
                diffs.append("kvm-clock went backwards")
            if rb < ra:
                diffs.append("kvm-clock's realtime reading went backwards")
        elif sid.startswith("vcpu/"):
            fa, fb = state_file.vcpu_fields(pa), state_file.vcpu_fields(pb)
            for k, v in fa.items():
                if k == "msrs":
                    for idx in set(v) | set(fb[k]):
                        if idx in TIME_MSRS:
                            if fb[k].get(idx, 0) < v.get(idx, 0):
                                diffs.append(f"{sid}: {TIME_MSRS[idx]} went backwards")
                        elif v.get(idx) != fb[k].get(idx):
                            diffs.append(f"{sid}: MSR {idx:#x} {v.get(idx)} vs {fb[k].get(idx)}")
                elif not k.startswith("@") and v != fb[k]:
                    diffs.append(f"{sid}: {k}")
        elif pa != pb:
            diffs.append(sid)
    return diffs


def check_device_state(c, api, tmp):
    """The Vmm's snapshot hooks on a paused VM: the state saved (the virtio functions — the
    drive, vsock and entropy device, which this guest never drives —, vCPUs, kvm-clock, legacy
    devices), loaded back and saved again gives the same state; a changed register goes
    into KVM and comes back out; a file KVM refuses (CR4 reserved bit) or with one byte
    changed (checksum) is refused and changes nothing."""
    first, again, bad = (os.path.join(tmp, n) for n in ("dev.state", "dev-again.state", "dev-bad.state"))
    if not c.status(api.put("/vm/device-state/save", {"path": first}), 204, "PUT /vm/device-state/save"):
        return
    data = open(first, "rb").read()
    c.expect(not os.path.exists(first + ".tmp"), "device state: a .tmp file was left beside the saved one")
    try:
        header, sections = state_file.parse(data)
    except ValueError as e:
        c.expect(False, f"device state file does not parse: {e}")
        return
    ids = [s[0] for s in sections]
    c.expect(ids == ["virtio/0", "virtio/1", "virtio/2", "vcpu/0", "kvm-clock", "uart/com1", "rtc", "i8042",
                     "acpi-pm", "ioapic"], f"device state sections {ids}")
    v0 = ids.index("vcpu/0") if "vcpu/0" in ids else 0
    vcpu0 = state_file.vcpu_fields(sections[v0][2])
    c.expect(len(vcpu0["msrs"]) > 10 and 0x10 in vcpu0["msrs"], f"vcpu/0 holds {len(vcpu0['msrs'])} MSRs")

    def save_again(what):
        c.status(api.put("/vm/device-state/save", {"path": again}), 204, f"PUT /vm/device-state/save {what}")
        return open(again, "rb").read()

    def load(path, what, want=204, kind=None, needle=None):
        return c.status(api.put("/vm/device-state/load", {"path": path}), want, f"PUT /vm/device-state/load {what}",
                        kind, needle)

    load(first, "of the saved file")
    diffs = same_state(data, save_again("after loading it"))
    c.expect(not diffs, f"state saved after loading it differs from the one loaded: {diffs}")

    # A debug register (DR0; DR7 leaves it disabled) changed in the file reaches KVM.
    changed = list(sections)
    payload = bytearray(sections[v0][2])
    struct.pack_into("<Q", payload, vcpu0["@debugregs"], 0x12345000)
    changed[v0] = (sections[v0][0], sections[v0][1], bytes(payload))
    with open(bad, "wb") as f:
        f.write(state_file.build(header, changed))
    if load(bad, "with DR0 changed"):
        dr0 = state_file.vcpu_fields(state_file.parse(save_again("after DR0 changed"))[1][v0][2])["debugregs"][:8]
        c.expect(struct.unpack("<Q", dr0)[0] == 0x12345000, f"DR0 after loading it: {dr0.hex()}")
    load(first, "of the saved file again")

    # CR4 bit 63 is reserved: KVM refuses the vCPU, and the devices after it are not touched.
    payload = bytearray(sections[v0][2])
    cr4 = vcpu0["@sregs"] + state_file.SREGS_CR4
    struct.pack_into("<Q", payload, cr4, struct.unpack_from("<Q", payload, cr4)[0] | 1 << 63)
    changed[v0] = (sections[v0][0], sections[v0][1], bytes(payload))
    with open(bad, "wb") as f:
        f.write(state_file.build(header, changed))
    load(bad, "with a reserved CR4 bit", 400, "BadRequest", "KVM refused")
    diffs = same_state(data, save_again("after KVM refused a vCPU"))
    c.expect(not diffs, f"a refused vCPU state changed the VM: {diffs}")

    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0x10
    with open(bad, "wb") as f:
        f.write(corrupt)
    load(bad, "of a corrupt file", 400, "BadRequest", "checksum mismatch")
    diffs = same_state(data, save_again("after the refusal"))
    c.expect(not diffs, f"a refused device state file changed the VM: {diffs}")


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
