#!/usr/bin/env python3
"""Resolves kernel module names to files under a Debian modules tree, adds their
dependencies (each .ko's own `depends=` in .modinfo: the tree from `dpkg -x` has no
modules.dep), and copies them uncompressed into DEST so busybox insmod can load them.

usage: resolve-modules.py MODULES_DIR DEST NAME...
NAME is a module name (`virtio_net`, `virtio-rng`: '-' and '_' are the same to the kernel),
a path relative to MODULES_DIR/kernel (`arch/x86/kvm/kvm.ko`), or either with a trailing
'?' meaning optional (skipped with a note when absent). Built-in modules are skipped.
Prints the module file names (NAME.ko) in load order, dependencies first.
"""
import lzma
import os
import shutil
import struct
import subprocess
import sys


def norm(name):
    return name.replace('-', '_')


def module_name(path):
    base = os.path.basename(path)
    for ext in ('.ko.xz', '.ko.zst', '.ko.gz', '.ko'):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def read_ko(path):
    # busybox insmod (no modprobe/kmod) only takes plain ELF, so decompress here.
    if path.endswith('.ko.xz'):
        with lzma.open(path) as f:
            return f.read()
    if path.endswith('.ko.zst'):
        return subprocess.run(['zstd', '-dc', path], check=True, stdout=subprocess.PIPE).stdout
    if path.endswith('.ko.gz'):
        import gzip
        with gzip.open(path) as f:
            return f.read()
    with open(path, 'rb') as f:
        return f.read()


def modinfo_depends(data):
    # ELF64 little-endian section headers (System V gABI, "Sections"): find .modinfo.
    if data[:4] != b'\x7fELF' or data[4] != 2:
        raise ValueError('not an ELF64 module')
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3a)

    def section(i):
        name, _type, _flags, _addr, off, size = struct.unpack_from('<IIQQQQ', data, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = data.index(b'\0', stroff + name)
        if data[stroff + name:end] == b'.modinfo':
            for entry in data[off:off + size].split(b'\0'):
                if entry.startswith(b'depends='):
                    deps = entry[len(b'depends='):].decode()
                    return [d for d in deps.split(',') if d]
            return []
    return []


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    moddir, dest = sys.argv[1], sys.argv[2]
    wanted = sys.argv[3:]
    tree = os.path.join(moddir, 'kernel')
    by_name = {}
    for root, _dirs, files in os.walk(tree):
        for f in files:
            if '.ko' in f:
                by_name[norm(module_name(f))] = os.path.join(root, f)
    builtin = set()
    bpath = os.path.join(moddir, 'modules.builtin')
    if os.path.exists(bpath):
        with open(bpath) as f:
            builtin = {norm(module_name(line.strip())) for line in f if line.strip()}

    order, seen = [], set()

    def add(spec, optional, chain):
        if '/' in spec:
            path = os.path.join(tree, spec)
            cands = [path] + [path[:-3] + '.ko' + e for e in ('.xz', '.zst', '.gz')] if path.endswith('.ko') else [path]
            path = next((c for c in cands if os.path.exists(c)), None)
            name = norm(module_name(spec))
        else:
            name = norm(spec)
            path = by_name.get(name)
        if name in seen:
            return
        if path is None:
            if name in builtin:
                print(f'resolve-modules: {name} is built in', file=sys.stderr)
                seen.add(name)
                return
            if optional:
                print(f'resolve-modules: optional {spec} not present, skipped', file=sys.stderr)
                seen.add(name)
                return
            sys.exit(f'resolve-modules: no module {spec!r} under {tree}' + (f' (needed by {chain})' if chain else ''))
        if name in chain.split(' <- '):
            sys.exit(f'resolve-modules: dependency cycle at {name}')
        data = read_ko(path)
        for dep in modinfo_depends(data):
            add(dep, False, f'{name} <- {chain}' if chain else name)
        seen.add(name)
        os.makedirs(dest, exist_ok=True)
        out = os.path.join(dest, name + '.ko')
        with open(out, 'wb') as f:
            f.write(data)
        order.append(name + '.ko')

    for spec in wanted:
        optional = spec.endswith('?')
        add(spec.rstrip('?'), optional, '')
    print('\n'.join(order))


if __name__ == '__main__':
    main()
