"""Reads kestrel's state files (migration/state_stream.hpp, vcpu_state.hpp) for the kvm
suite: sections by id, a vCPU section's fields, and writing a file back with a valid
CRC-64/XZ so a test can hand kestrel a well-formed file with hostile contents."""

import struct

MAGIC = b"KESTRLST"


def crc64_xz(data):
    """CRC-64/XZ (reflected ECMA-182, init and xorout all ones), table driven."""
    table = crc64_xz.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xC96C5795D7870F42 if c & 1 else c >> 1
            table.append(c)
        crc64_xz.table = table
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


crc64_xz.table = None
assert crc64_xz(b"123456789") == 0x995DC9BBDF1939FA


def parse(data):
    """(header dict, [(id, version, payload)]); raises ValueError on anything malformed."""
    if data[:8] != MAGIC:
        raise ValueError("no KESTRLST magic")
    body, (crc,) = data[:-8], struct.unpack("<Q", data[-8:])
    if crc64_xz(body) != crc:
        raise ValueError("checksum mismatch")
    pos = 8

    def take(n):
        nonlocal pos
        if pos + n > len(body):
            raise ValueError("truncated")
        pos += n
        return body[pos - n:pos]

    u32 = lambda: struct.unpack("<I", take(4))[0]  # noqa: E731
    fmt = u32()
    kver = take(u32()).decode()
    cpu = take(u32()).decode()
    sections = []
    for _ in range(u32()):
        sid = take(u32()).decode()
        ver = u32()
        (n,) = struct.unpack("<Q", take(8))
        sections.append((sid, ver, take(n)))
    if pos != len(body):
        raise ValueError("bytes after the sections")
    return {"format": fmt, "kestrel": kver, "cpu": cpu}, sections


def build(header, sections):
    """The file parse() read, with a fresh checksum."""
    s = lambda b: struct.pack("<I", len(b)) + b  # noqa: E731
    out = MAGIC + struct.pack("<I", header["format"]) + s(header["kestrel"].encode()) + s(header["cpu"].encode())
    out += struct.pack("<I", len(sections))
    for sid, ver, payload in sections:
        out += s(sid.encode()) + struct.pack("<IQ", ver, len(payload)) + payload
    return out + struct.pack("<Q", crc64_xz(out))


VCPU_BLOCKS = ("mp_state", "regs", "sregs", "xsave", "xcrs", "debugregs", "lapic")
SREGS_CR4 = 8 * 24 + 2 * 16 + 3 * 8  # kvm_sregs: 8 segments, gdt/idt, cr0 cr2 cr3, then cr4
LAPIC_TMCCT = 0x390  # the timer's current count: KVM computes it when read


def vcpu_fields(payload):
    """A vcpu/N payload (version 1) as {"cpuid": bytes, block: bytes, "msrs": {index: value}, "events": bytes},
    plus the offset of each block's bytes under "@block"."""
    out, pos = {}, 0
    (ncpuid,) = struct.unpack_from("<I", payload, 0)
    out["cpuid"] = payload[4:4 + 28 * ncpuid]
    pos = 4 + 28 * ncpuid

    def block(name):
        nonlocal pos
        (n,) = struct.unpack_from("<I", payload, pos)
        out["@" + name] = pos + 4
        out[name] = payload[pos + 4:pos + 4 + n]
        pos += 4 + n

    for name in VCPU_BLOCKS:
        block(name)
    (count,) = struct.unpack_from("<I", payload, pos)
    pos += 4
    msrs = {}
    for _ in range(count):
        idx, val = struct.unpack_from("<IQ", payload, pos)
        msrs[idx] = val
        pos += 12
    out["msrs"] = msrs
    block("events")
    if pos != len(payload):
        raise ValueError("vcpu payload: bytes left over")
    return out
