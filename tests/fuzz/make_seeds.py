#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the libFuzzer targets into tests/fuzz/corpus/<target>/
(files named seed-*; whatever else is there came from fuzzing runs, minimised with
-merge=1, and is left alone). Each seed is a meaningful driver session in the target's input
format (see the comment at the top of each tests/fuzz/fuzz_*.cpp and fuzz_support.hpp), so
the fuzzer starts from requests a real driver makes and mutates them from there.

    tests/fuzz/make_seeds.py [CORPUS_DIR]
"""

import os
import struct
import sys


def u8(v): return struct.pack("<B", v & 0xff)
def u16(v): return struct.pack("<H", v & 0xffff)
def u32(v): return struct.pack("<I", v & 0xffffffff)
def u64(v): return struct.pack("<Q", v & 0xffffffffffffffff)


# ---- fuzz_support.hpp: queue placement and FuzzDriver ops --------------------------------

def queue(size_log2, desc, avail, used, enabled=True):
    return u8(size_log2 | (0 if enabled else 0x80)) + u64(desc) + u64(avail) + u64(used)


def chain(readable=(), writable=(), indirect=False):
    """FuzzDriver CHAIN operands: readable parts (bytes), writable part lengths."""
    shape = len(readable) | len(writable) << 3 | (0x40 if indirect else 0)
    out = u8(shape)
    for r in readable:
        out += u16(len(r)) + r
    for w in writable:
        out += u16(w)
    return out


def mem_write(addr, data):
    return u32(addr) + u8(len(data)) + data


# Rings of 16 entries at fixed, valid places (the fuzzer moves them).
Q0 = queue(4, 0x1000, 0x2000, 0x3000)
Q1 = queue(4, 0x4000, 0x5000, 0x6000)
Q2 = queue(4, 0x7000, 0x8000, 0x9000)
ALL = 0xffffffffffffffff
VERSION_1 = 1 << 32


# ---- ioapic ---------------------------------------------------------------------------------

def ioapic_entry(pin, lo, hi):
    return u8(4) + u8(pin) + u32(lo) + u32(hi)


def ioapic_seeds():
    version = u8(0) + u16(0x00) + u8(2) + u64(1) + u8(1) + u16(0x10) + u8(2)
    edge = ioapic_entry(4, 0x30, 0) + u8(2) + u8(4) + u8(1) + u8(2) + u8(4) + u8(0)
    # Level pin asserted while masked, unmasked, EOI while still asserted, deasserted.
    level = (ioapic_entry(9, 0x41 | 1 << 15 | 1 << 16, 1 << 24) + u8(2) + u8(9) + u8(1) +
             ioapic_entry(9, 0x41 | 1 << 15, 1 << 24) + u8(3) + u8(0x41) +
             u8(2) + u8(9) + u8(0) + u8(3) + u8(0x41))
    ident = u8(0) + u16(0) + u8(2) + u64(0) + u8(0) + u16(0x10) + u8(2) + u64(0x0f000000)
    return {"version": version, "edge": edge, "level-eoi": level, "id": ident}


# ---- msix -----------------------------------------------------------------------------------

def msix_program(v, addr, data, control):
    return u8(5) + u16(v) + u32(addr) + u32(addr >> 32) + u32(data) + u32(control)


def msix_seeds():
    fire = u16(3) + msix_program(0, 0xfee00000, 0x30, 0) + u8(3) + u16(0x8000) + u8(4) + u16(0)
    pending = (u16(2) + u8(3) + u16(0x8000) + msix_program(1, 0xfee01000, 0x31, 1) +
               u8(4) + u16(1) + u8(2) + u16(0) + u8(3) +
               u8(0) + u16(16 + 12) + u8(2) + u64(0))
    function_mask = (u16(70) + msix_program(65, 0xfee00000, 0x40, 0) + u8(3) + u16(0xc000) +
                     u8(4) + u16(65) + u8(2) + u16(8) + u8(3) + u8(3) + u16(0x8000))
    return {"fire": fire, "pending-unmask": pending, "function-mask": function_mask}


# ---- pci_config -----------------------------------------------------------------------------

def pci_seeds():
    probe = u8(0) + u8(0) + u8(2) + u32(0x80000800) + u8(1) + u8(4) + u8(2)
    sizing = (u8(7) + u8(1) + u8(0) + u32(0xffffffff) + u8(3) + u32(1 << 15 | 0x10) + u8(2) +
              u8(7) + u8(1) + u8(0) + u32(0xc0000000))
    move = (u8(7) + u8(2) + u8(0) + u32(0xd0000000) + u8(6) + u32(0x10000000) + u8(2) +
            u8(5) + u32(0x10000000 + 0x14) + u8(0) + u64(1))
    command = u8(8) + u8(2) + u16(0) + u8(6) + u32(0x10000) + u8(2) + u8(8) + u8(2) + u16(6)
    direct = u8(4) + u8(0) + u8(3) + u8(0) + u16(0x10) + u8(2) + u32(0xffffffff)
    return {"probe": probe, "bar-sizing": sizing, "bar-move": move, "command": command,
            "direct": direct}


# ---- virtio_pci_common ----------------------------------------------------------------------

def vpc_status(s): return u8(2) + u8(s)
def vpc_features(v): return u8(4) + u32(v) + u32(v >> 32)


def vpc_queue(sel, size, desc, drv, dev, vector, flags):
    return u8(3) + u16(sel) + u16(size) + u64(desc) + u64(drv) + u64(dev) + u16(vector) + u8(flags)


def vpc_config_write(off, width_sel, v): return u8(9) + u16(off) + u8(width_sel) + u32(v) + u8(0)
def vpc_msix_entry(v, addr, data, ctl): return u8(10) + u8(v) + u32(addr) + u32(addr >> 32) + u32(data) + u32(ctl)


def virtio_pci_seeds():
    msix_control = 0x9a  # capability chain: common 0x40, notify 0x50, isr 0x64, device 0x74, pci 0x84, msix 0x98
    init = (vpc_status(1) + vpc_status(3) + vpc_features(VERSION_1) + vpc_status(11) +
            vpc_queue(0, 16, 0x1000, 0x2000, 0x3000, 0, 2) + u8(0) + u8(0x10) + u8(1) + u64(1) +
            vpc_msix_entry(0, 0xfee00000, 0x31, 0) + vpc_msix_entry(1, 0xfee00000, 0x32, 0) +
            vpc_config_write(msix_control, 1, 0x8000) + vpc_status(15) +
            u8(8) + chain(writable=[64]) + u8(8) + chain(writable=[16, 16]) + u8(5) + u16(0))
    event_idx = (vpc_status(3) + vpc_features(VERSION_1 | 1 << 29 | 1 << 28) + vpc_status(11) +
                 vpc_queue(0, 8, 0x10000, 0x20000, 0x30000, 0xffff, 3) + vpc_status(15) +
                 u8(8) + chain(writable=[32], indirect=True) + u8(5) + u16(0) + vpc_status(0) +
                 vpc_status(3))
    # §4.1.4.9 window: bar 0, offset 0x14 (device_status), length 1, then read/write data.
    cfg_window = (vpc_config_write(0x88, 0, 0) + vpc_config_write(0x8c, 2, 0x14) +
                  vpc_config_write(0x90, 2, 1) + vpc_config_write(0x94, 2, 1) +
                  u8(9) + u16(0x94) + u8(2) + u32(0) + u8(1))
    bad_order = (vpc_status(15) + vpc_status(0) + vpc_features(ALL) + vpc_status(11) +
                 u8(1) + u8(0x14) + u8(0))
    return {"init-notify": init, "event-idx-reset": event_idx, "pci-cfg-window": cfg_window,
            "bad-order": bad_order}


# ---- blk ------------------------------------------------------------------------------------

def blk_req(typ, sector, hdr_len, rest, queue=0, trailing=b"\0" * 8):
    return u8(1 | queue << 4) + u32(typ) + u32(0) + u64(sector) + trailing + u8(hdr_len) + rest


def blk_notify(q=0): return u8(7) + u8(q)


def blk_seeds():
    def head(disk, features=ALL, two_queues=False):
        return u8(disk) + u64(features) + u8(1 if two_queues else 0) + Q0 + Q1

    seg = lambda sector, n, flags: u64(sector) + u32(n) + u32(flags)
    rw = (head(0) +
          blk_req(1, 0, 16, chain([bytes(range(256)) * 2], [1])) +
          blk_req(0, 0, 16, chain([], [512, 1])) +
          blk_req(4, 0, 16, chain([], [1])) +
          blk_req(8, 0, 16, chain([], [20, 1])) +
          blk_notify())
    ranges = (head(0) +
              blk_req(11, 0, 16, chain([seg(8, 8, 0)], [1])) +
              blk_req(13, 16, 16, chain([seg(16, 8, 1)], [1])) +
              blk_req(13, 2040, 16, chain([seg(2040, 16, 0)], [1])) +
              blk_notify())
    odd = (head(0) +
           blk_req(99, 0, 16, chain([], [1])) +
           blk_req(0, 0, 8, chain([b"\0" * 8], [512, 1])) +
           blk_req(0, 0, 24, chain([], [512, 1])) +
           blk_req(0, 2047, 16, chain([], [1024, 1])) +
           blk_req(1, 0, 16, chain([b"x" * 100], [1])) +
           blk_notify())
    ro = head(1) + blk_req(1, 0, 16, chain([b"y" * 512], [1])) + blk_req(0, 0, 16, chain([], [512, 1])) + blk_notify()
    direct = (head(2) + blk_req(0, 1, 16, chain([], [100, 412, 1])) +
              blk_req(1, 1, 16, chain([b"z" * 300, b"w" * 212], [1])) + blk_notify())
    two = (head(0, two_queues=True) + blk_req(0, 4, 16, chain([], [512, 1], indirect=True), queue=1) +
           blk_notify(1) + blk_req(8, 0, 16, chain([], [21])) + blk_notify(0))
    return {"read-write-flush-id": rw, "discard-write-zeroes": ranges, "odd-headers": odd,
            "read-only": ro, "direct-bounce": direct, "two-queues-indirect": two}


# ---- net ------------------------------------------------------------------------------------

def eth(dst=b"\xff" * 6, src=b"\x52\x54\x00\x12\x34\x56", ethertype=0x0806, payload=b""):
    return dst + src + struct.pack(">H", ethertype) + payload


def ipv4_tcp(payload_len):
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 20 + payload_len, 1, 0, 64, 6, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    tcp = struct.pack(">HHIIBBHHH", 1234, 80, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    return ip + tcp + bytes(i & 0xff for i in range(payload_len))


def net_tx(flags, gso, hdr_len, gso_size, csum_start, csum_offset, frame, split=False):
    """Transmit op: a whole 12-byte header, then the frame in one or two descriptors."""
    hdr = u8(flags) + u8(gso) + u16(hdr_len) + u16(gso_size) + u16(csum_start) + u16(csum_offset) + u16(0)
    parts = [frame[:14], frame[14:]] if split else [frame]
    return u8(1) + hdr + u8(12) + chain(parts)


def net_seeds():
    head = u64(ALL) + Q0 + Q1
    arp = eth(payload=bytes(28))
    tcp = eth(dst=b"\x52\x54\x00\xaa\xbb\xcc", ethertype=0x0800, payload=ipv4_tcp(100))
    tso = eth(dst=b"\x52\x54\x00\xaa\xbb\xcc", ethertype=0x0800, payload=ipv4_tcp(2896))
    plain = head + net_tx(0, 0, 0, 0, 0, 0, arp) + u8(6) + u8(1)
    csum = head + net_tx(1, 0, 0, 0, 34, 16, tcp, split=True) + u8(6) + u8(1)
    gso = head + net_tx(1, 1, 54, 1448, 34, 16, tso) + u8(6) + u8(1)
    bad = (head + net_tx(2, 0, 0, 0, 0, 0, arp) + net_tx(0, 3, 0, 0, 0, 0, arp) +
           net_tx(0, 0x81, 0, 0, 0, 0, arp) + u8(1) + u8(0) * 12 + u8(5) + chain([arp]) + u8(6) + u8(1))
    rx = (head + u8(0x02) + chain([], [1526]) + u8(0x02) + chain([], [64, 1500]) + u8(6) + u8(0) +
          u8(7) + u16(len(arp)) + arp + u8(7) + u16(60) + eth(payload=bytes(46)))
    no_offload = u64(VERSION_1 | 1 << 28 | 1 << 29) + Q0 + Q1 + net_tx(1, 1, 54, 1448, 34, 16, tso) + u8(6) + u8(1)
    return {"tx-plain": plain, "tx-csum-split": csum, "tx-tso4": gso, "tx-bad-headers": bad,
            "rx-frames": rx, "no-offloads": no_offload}


# ---- vsock ----------------------------------------------------------------------------------

def vsock_pkt(op, src_port, dst_port, length=0, payload=(), flags=0, buf_alloc=65536, fwd_cnt=0,
              sel=1 | 2, typ=1, hdr_len=44):
    return (u8(1) + u8(sel) + u64(3) + u64(2) + u32(src_port) + u32(dst_port) + u32(length) +
            u16(typ) + u16(op) + u32(flags) + u32(buf_alloc) + u32(fwd_cnt) + u8(hdr_len) +
            chain(list(payload)))


def vsock_seeds():
    head = u64(ALL) + Q0 + Q1 + Q2
    rxbufs = (u8(2) + chain([], [44, 4096])) * 4 + u8(7) + u8(0)
    guest_connect = (head + rxbufs + vsock_pkt(1, 5555, 1024) + u8(7) + u8(1) +
                     vsock_pkt(5, 5555, 1024, 5, [b"hello"]) + u8(7) + u8(1) +
                     u8(9) + u8(0) + u16(5) + b"world" + u8(11) + u8(0) +
                     vsock_pkt(7, 5555, 1024) + vsock_pkt(6, 5555, 1024, fwd_cnt=5) + u8(7) + u8(1) +
                     vsock_pkt(4, 5555, 1024, flags=3) + u8(7) + u8(1) + vsock_pkt(3, 5555, 1024) +
                     u8(7) + u8(1))
    host_connect = (head + rxbufs + u8(12) + u32(5000) +
                    vsock_pkt(2, 5000, 1 << 30) + u8(7) + u8(1) + u8(9) + u8(0) + u16(4) + b"ping" +
                    vsock_pkt(5, 5000, 1 << 30, 4, [b"pong"]) + u8(7) + u8(1) + u8(10) + u8(0) + u8(1) +
                    u8(10) + u8(0) + u8(0))
    bad = (head + rxbufs + vsock_pkt(5, 1, 2, 100, [b"short"]) + vsock_pkt(1, 1, 2, hdr_len=20) +
           vsock_pkt(9, 1, 2) + vsock_pkt(1, 1, 1024, typ=2, sel=1 | 2 | 4) + vsock_pkt(1, 7, 9, sel=0) +
           u8(8) + u8(6) + b"HELLO\n" + u8(7) + u8(1))
    credit = (head + u8(2) + chain([], [44, 64]) + u8(7) + u8(0) + vsock_pkt(1, 77, 1024, sel=1 | 2 | 4, buf_alloc=16) +
              u8(7) + u8(1) + u8(9) + u8(0) + u16(200) + bytes(200) + vsock_pkt(5, 77, 1024, 5000, [bytes(5000)], buf_alloc=16) +
              u8(7) + u8(1) + u8(2) + chain([], [44, 64]) + u8(7) + u8(0))
    return {"guest-connect-rw-shutdown": guest_connect, "host-connect": host_connect,
            "bad-packets": bad, "credit": credit}


# ---- virtqueue (fuzz_virtqueue.cpp) ---------------------------------------------------------

def virtqueue_seeds():
    def desc(addr, length, flags, nxt): return u64(addr) + u32(length) + u16(flags) + u16(nxt)
    # 8-entry queue, EVENT_IDX + INDIRECT, avail idx 2: chain 0 -> 1 (readable, writable), head 2
    # indirect with a 2-entry table in the free area (0x3000).
    table = desc(0x5000, 64, 1, 1) + desc(0x5400, 64, 2, 0) + desc(0x3000, 32, 4, 0)
    table += bytes(16 * 5)
    ring = u16(0) + u16(2) + bytes(2 * 6)
    indirect_table = desc(0x4000, 16, 1, 1) + desc(0x4100, 16, 2, 0)
    good = u8(3) + u8(3) + u16(2) + u16(0) + u16(0) + table + ring + indirect_table
    loop = u8(1) + u8(0) + u16(1) + u16(0) + u16(0) + desc(0x5000, 8, 1, 1) + desc(0x5000, 8, 1, 0) + u16(0)
    return {"chains-indirect": good, "loop": loop}


# ---- api request (fuzz_api_request.cpp) -------------------------------------------------------

def api_seeds():
    import json
    endpoints = ["PUT /boot-source", "PUT /machine-config", "PATCH /machine-config", "PUT /drives/",
                 "PATCH /drives/", "PUT /network-interfaces/", "PATCH /network-interfaces/", "PUT /vsock",
                 "PUT /entropy", "PUT /logger", "PUT /metrics", "PUT /actions", "PATCH /vm",
                 "PUT /snapshot/create", "GET /vm/config"]
    ids = ["rootfs", "data", "eth0", "eth1"]
    bw = {"size": 1048576, "one_time_burst": 4194304, "refill_time": 100}
    ops = {"size": 1000, "refill_time": 1000}

    def req(endpoint, body, ident="rootfs"):
        data = json.dumps(body).encode()
        return u8(endpoints.index(endpoint)) + u8(ids.index(ident)) + u16(len(data)) + data

    boot = {"kernel_image_path": "/vmlinux", "initrd_path": "/initrd", "boot_args": "console=ttyS0 reboot=k"}
    machine = {"vcpu_count": 2, "mem_size_mib": 1024, "smt": False, "track_dirty_pages": True}
    root = {"drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": True, "is_read_only": False,
            "partuuid": "0eaa91a0-01", "cache_type": "Writeback", "rate_limiter": {"bandwidth": bw, "ops": ops}}
    data_drive = {"drive_id": "data", "path_on_host": "/data.img", "is_root_device": False, "direct": True,
                  "serial": "kestrel-data", "queues": 2}
    eth0 = {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02",
            "rx_rate_limiter": {"bandwidth": bw}}
    session = (u8(1) + req("PUT /boot-source", boot) + req("PUT /machine-config", machine) +
               req("PUT /drives/", root) + req("PUT /drives/", data_drive, "data") +
               req("PATCH /drives/", {"drive_id": "data", "path_on_host": "/other.img"}, "data") +
               req("PUT /network-interfaces/", eth0, "eth0") +
               req("PATCH /network-interfaces/", {"iface_id": "eth0", "tx_rate_limiter": {"ops": ops}}, "eth0") +
               req("PUT /vsock", {"guest_cid": 3, "uds_path": "/v.sock"}) +
               req("PUT /entropy", {"rate_limiter": {"bandwidth": bw}}) +
               req("PUT /logger", {"log_path": "/k.log", "level": "Debug"}) +
               req("PUT /metrics", {"metrics_path": "/m.json"}) +
               req("PATCH /machine-config", {"mem_size_mib": 64}) +
               req("PUT /actions", {"action_type": "InstanceStart"}) +
               req("PATCH /vm", {"state": "Paused"}))
    config = {"boot-source": boot, "machine-config": machine, "drives": [root, data_drive],
              "network-interfaces": [eth0, {"iface_id": "eth1", "host_dev_name": "tap1"}],
              "vsock": {"guest_cid": 3, "uds_path": "/v.sock"}, "entropy": {},
              "logger": {"log_path": "/k.log", "level": "Info"}, "metrics": {"metrics_path": "/m.json"}}

    def raw(method_sel, text):
        return u8(0) + u8(method_sel) + text.encode()

    return {
        "session": session,
        "config-file": u8(2) + json.dumps(config).encode(),
        "raw-put-drive": raw(1, "/drives/rootfs\n" + json.dumps(root)),
        "raw-patch-vm": raw(2, '/vm\n{"state": "Resumed"}'),
        "raw-get": raw(0, "/machine-config\n"),
        "raw-method": raw(6, 'OPTIONS /actions\n{"action_type": "FlushMetrics"}'),
    }


# ---- state stream (fuzz_state_stream.cpp) ---------------------------------------------------

def crc64_xz(data):
    """CRC-64/XZ, bit by bit (migration/crc64.hpp): reflected ECMA-182, init/xorout all ones."""
    crc = 0xffffffffffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xC96C5795D7870F42 if crc & 1 else crc >> 1
    return crc ^ 0xffffffffffffffff


assert crc64_xz(b"123456789") == 0x995DC9BBDF1939FA


def state_file(sections, kestrel_version=b"0.1.0", cpu=b"AuthenticAMD family 25 model 1", version=1):
    """A state file (migration/state_stream.hpp): header, (id, version, payload) sections, CRC."""
    body = b"KESTRLST" + u32(version) + u32(len(kestrel_version)) + kestrel_version + u32(len(cpu)) + cpu
    body += u32(len(sections))
    for ident, ver, payload in sections:
        body += u32(len(ident)) + ident + u32(ver) + u64(len(payload)) + payload
    return body + u64(crc64_xz(body))


def state_seeds():
    # Payloads in the target's Decoder op language: u8 op (op % 9 picks the field), operands.
    uart = u8(0) + u8(0x03) + u8(1) + u16(0x0c) + u8(5) + u8(1) + u8(0x46) + u32(16) + u8(0x47) + bytes(4)
    vcpu = u8(3) + u64(0xfff0) + u8(4) + u64(-2) + u8(2) + u32(0x80050033) + u8(8) + u32(5) + b"ttyS0"
    virtio = u8(0xf6) + u32(3) + u8(0xf7) + bytes(15) + u8(8) + u32(70) + bytes(70)
    good = [(b"uart/com1", 1, uart), (b"vcpu/0", 2, vcpu), (b"virtio-pci/00:03.0", 1, virtio)]
    one = state_file([(b"vcpu/0", 1, vcpu)])
    # virtio/0: an all-zero payload XORs onto the brought-up rng function's state unchanged
    # (restored as it was); one bit flipped in a queue's size makes it a refusal.
    zero = bytes(8)
    flip = bytes(2 + 4096 + 4 + 2 * 16 + 4 + 8 + 4 + 4 + 8 + 2 + 1 + 1 + 1 + 1 + 2 + 4) + u8(0x40)
    return {
        "virtio-as-saved-fixcrc": u8(1) + state_file([(b"virtio/0", 1, zero)]),
        "virtio-queue-size-fixcrc": u8(1) + state_file([(b"virtio/0", 1, flip)]),
        "three-sections": u8(0) + state_file(good),
        "three-sections-fixcrc": u8(1) + state_file(good),
        "empty": u8(0) + state_file([], cpu=b""),
        "one-section-fixcrc": u8(1) + one,
        # Refused behind a valid checksum: duplicate id, newer format version.
        "duplicate-fixcrc": u8(1) + state_file([(b"uart/com1", 1, b""), (b"uart/com1", 1, b"")]),
        "version-2-fixcrc": u8(1) + state_file(good, version=2),
    }


# ---- ttrpc frames (cni-shim/ttrpc/frame.hpp; protobuf encoded by hand) ----------------------

def pb_varint(v):
    v &= 0xffffffffffffffff
    out = b""
    while True:
        b, v = v & 0x7f, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def pb_bytes(field, data): return pb_varint(field << 3 | 2) + pb_varint(len(data)) + data
def pb_int(field, v): return pb_varint(field << 3) + pb_varint(v)


def ttrpc_frame(stream, typ, data, flags=0):
    return struct.pack(">IIBB", len(data), stream, typ, flags) + data


def ttrpc_request(service, method, payload=b"", timeout_nano=0, ns=None):
    out = pb_bytes(1, service) + pb_bytes(2, method) + pb_bytes(3, payload)
    if timeout_nano:
        out += pb_int(4, timeout_nano)
    if ns is not None:
        out += pb_bytes(5, pb_bytes(1, b"containerd-namespace-ttrpc") + pb_bytes(2, ns))
    return out


def ttrpc_seeds():
    # Input: u8 count of chunk lengths, the lengths (each + 1), then the stream.
    create = ttrpc_request(b"containerd.task.v2.Task", b"Create", pb_bytes(1, b"c1") + pb_bytes(2, b"/run/b"),
                           2_000_000_000, b"k8s.io")
    wait = ttrpc_request(b"containerd.task.v2.Task", b"Wait", pb_bytes(1, b"c1"), ns=b"default")
    ok = pb_bytes(2, b"\x08\x2a")
    unimplemented = pb_bytes(1, pb_int(1, 12) + pb_bytes(2, b"service x"))
    forward = ttrpc_request(b"containerd.services.events.ttrpc.v1.Events", b"Forward",
                            pb_bytes(1, pb_bytes(2, b"default") + pb_bytes(3, b"/tasks/exit") +
                                     pb_bytes(4, pb_bytes(1, b"containerd.events.TaskExit") + pb_bytes(2, pb_int(5, 137)))))
    return {
        "create-whole": u8(0) + ttrpc_frame(1, 1, create),
        "create-byte-chunks": u8(10) + bytes(10) + ttrpc_frame(1, 1, create),
        "wait-and-create-split": u8(3) + u8(3) + u8(11) + u8(0) + ttrpc_frame(1, 1, wait) + ttrpc_frame(3, 1, create),
        "responses": u8(0) + ttrpc_frame(1, 2, ok) + ttrpc_frame(3, 2, unimplemented) + ttrpc_frame(5, 2, b""),
        "forward": u8(1) + u8(4) + ttrpc_frame(1, 1, forward),
        # Refused: over 4 MiB (its data would follow), stream data of newer ttrpc, then a request.
        "oversized-then-request": u8(0) + struct.pack(">IIBB", (4 << 20) + 1, 7, 1, 0) + ttrpc_frame(9, 1, wait),
        "data-type-then-request": u8(0) + ttrpc_frame(1, 3, b"abc", 2) + ttrpc_frame(3, 1, wait),
        "truncated": u8(0) + ttrpc_frame(1, 1, create)[:-5],
    }


TARGETS = {
    "fuzz-ioapic": ioapic_seeds,
    "fuzz-msix": msix_seeds,
    "fuzz-pci-config": pci_seeds,
    "fuzz-virtio-pci-common": virtio_pci_seeds,
    "fuzz-blk-request": blk_seeds,
    "fuzz-net-tx": net_seeds,
    "fuzz-vsock-packet": vsock_seeds,
    "fuzz-virtqueue": virtqueue_seeds,
    "fuzz-api-request": api_seeds,
    "fuzz-state-stream": state_seeds,
    "fuzz-ttrpc-frame": ttrpc_seeds,
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    for target, make in TARGETS.items():
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in make().items():
            with open(os.path.join(d, f"seed-{name}"), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
