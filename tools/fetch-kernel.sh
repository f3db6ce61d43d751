#!/usr/bin/env bash
# Fetches Debian's cloud kernel (bzImage + modules) into .cache/artifacts/kernel and
# extracts the uncompressed vmlinux from the bzImage. Safe to run twice.
# Result: $ART/kernel/{vmlinuz,vmlinux,version,modules/} where $ART=.cache/artifacts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
art=${KESTREL_ARTIFACTS:-$root/.cache/artifacts}
dst=$art/kernel
if [[ -s $dst/vmlinux && -s $dst/vmlinuz && -d $dst/modules ]]; then
  echo "fetch-kernel: using cached $(cat "$dst/version") in $dst"; exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $pkg ]] || { echo "fetch-kernel: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
ver=${pkg#linux-image-}
echo "fetch-kernel: downloading $pkg"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) || (cd "$tmp" && apt-get download "$pkg")
dpkg -x "$tmp"/*.deb "$tmp/x"
rm -rf "$dst"; mkdir -p "$dst"
cp "$tmp/x/boot/vmlinuz-$ver" "$dst/vmlinuz"
mv "$tmp/x/lib/modules/$ver" "$dst/modules"
echo "$ver" > "$dst/version"
# bzImage: setup_sects at 0x1f1; payload_offset/payload_length at 0x248/0x24c relative to the
# protected-mode kernel, which starts at (setup_sects+1)*512 (Linux boot protocol 2.08+).
read -r sects off len < <(python3 - "$dst/vmlinuz" <<'PY'
import struct,sys
d=open(sys.argv[1],'rb').read()
s=d[0x1f1] or 4
print(s, *struct.unpack_from('<II', d, 0x248))
PY
)
start=$(( (sects + 1) * 512 + off ))
# LZ4 legacy frame with a trailing size word: lz4 complains about the trailer after writing
# the whole image, so judge by the ELF magic, not lz4's exit status.
tail -c +$((start + 1)) "$dst/vmlinuz" | head -c "$len" | lz4 -dc > "$dst/vmlinux" 2>/dev/null || true
[[ $(head -c 4 "$dst/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] \
  || { echo "fetch-kernel: vmlinux extraction failed (no ELF magic)" >&2; exit 1; }
echo "fetch-kernel: $ver ready in $dst ($(stat -c %s "$dst/vmlinux") byte vmlinux)"
