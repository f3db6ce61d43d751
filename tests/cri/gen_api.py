#!/usr/bin/python3
"""Generates api_pb2.py (the CRI API's messages and service descriptors) from Kubernetes'
CRI api.proto (k8s.io/cri-api runtime/v1) as Debian ships it inside containerd's source
package (tools/setup.sh extracts it). The gogoproto import and its file options are Go code
generation hints only: they are dropped, so the Python module needs no gogo.proto.

usage: gen_api.py PROTOC API.PROTO OUT/api_pb2.py
"""
import os, subprocess, sys, tempfile

MAX_PROTO = 1 << 20  # the 1.6 api.proto is ~60 KiB; anything much larger is not that file


def die(msg):
    print(f'gen_api.py: {msg}', file=sys.stderr)
    sys.exit(1)


if len(sys.argv) != 4:
    die('usage: gen_api.py PROTOC API.PROTO OUT/api_pb2.py')
protoc, src, out = sys.argv[1:]
if os.path.basename(out) != 'api_pb2.py':
    die(f'output must be named api_pb2.py, not {out}')
try:
    with open(src, 'rb') as f:
        data = f.read(MAX_PROTO + 1)
except OSError as e:
    die(f'cannot read {src}: {e.strerror} (run tools/setup.sh)')
if len(data) > MAX_PROTO:
    die(f'{src} is larger than {MAX_PROTO} bytes: not the CRI api.proto')
try:
    text = data.decode()
except UnicodeDecodeError:
    die(f'{src} is not UTF-8 text')
lines = text.splitlines()
if 'package runtime.v1;' not in (l.strip() for l in lines):
    die(f'{src} is not the CRI API (no "package runtime.v1;")')
kept = [l for l in lines if 'gogoproto' not in l]
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, 'api.proto'), 'w') as f:
        f.write('\n'.join(kept) + '\n')
    r = subprocess.run([protoc, f'-I{tmp}', f'--python_out={tmp}', os.path.join(tmp, 'api.proto')],
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        die(f'protoc failed on {src}: {r.stderr.strip()}')
    with open(os.path.join(tmp, 'api_pb2.py'), 'rb') as f:
        gen = f.read()
with open(out, 'wb') as f:
    f.write(gen)
