#!/usr/bin/env python3
"""Generates the C++ messages of cni-shim/proto (run by meson, see meson.build).

usage: gen_protos.py PROTOC PROTOBUF_INCLUDEDIR OUTDIR STEM=IMPORT_PATH=SOURCE...

Copies each SOURCE .proto to OUTDIR/tree/IMPORT_PATH (protoc needs the files where their
import statements say), rewriting `import weak` to `import`: protoc 3.21's C++ generator
aborts on weak imports, and the options those imports define (gogoproto, fieldpath) must then
be generated too. Runs protoc --cpp_out into the tree, then gives meson flat names (a
custom_target cannot output into subdirectories): OUTDIR/STEM.pb.cc is a copy of the
generated source, OUTDIR/STEM.pb.h a header including the generated one by import path.
google/protobuf/*.proto come from PROTOBUF_INCLUDEDIR (their code is in libprotobuf).
"""
import pathlib
import re
import shutil
import subprocess
import sys

WEAK_IMPORT = re.compile(r'^(\s*)import\s+weak\s+', re.MULTILINE)


def main() -> int:
    protoc, includedir, outdir = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    specs = sys.argv[4:]
    tree = outdir / 'tree'
    entries = []
    for spec in specs:
        stem, import_path, source = spec.split('=', 2)
        dest = tree / import_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = pathlib.Path(source).read_text()
        dest.write_text(WEAK_IMPORT.sub(r'\1import ', text))
        entries.append((stem, import_path))
    subprocess.run([protoc, f'--proto_path={tree}', f'--proto_path={includedir}', f'--cpp_out={tree}']
                   + [imp for _, imp in entries], check=True)
    for stem, import_path in entries:
        generated = import_path[:-len('.proto')] + '.pb'
        shutil.copyfile(tree / (generated + '.cc'), outdir / f'{stem}.pb.cc')
        (outdir / f'{stem}.pb.h').write_text(
            f'// Generated from {import_path} by cni-shim/proto/gen_protos.py.\n'
            f'#pragma once\n#include "{generated}.h"\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
