# Shared by the tools/nested/ scripts (sourced, not run): where things live and how a
# busybox initramfs is assembled. Host side only.
nested_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nested_art=${KESTREL_ARTIFACTS:-$nested_root/.cache/artifacts}
nested_kernel=$nested_art/kernel
nested_out=${KESTREL_NESTED_OUT:-$nested_root/.cache/nested}

nested_die() { echo "${0##*/}: $*" >&2; exit 1; }

nested_need_kernel() {
  [[ -s $nested_kernel/vmlinuz && -s $nested_kernel/vmlinux && -d $nested_kernel/modules ]] ||
    nested_die "no kernel artefacts in $nested_kernel (run tools/fetch-kernel.sh)"
}

# nested_busybox_root DIR: busybox-static with one symlink per applet. Debian's
# `busybox --list` names `busybox` itself; linking that would replace the binary.
nested_busybox_root() {
  local root=$1 bb applet
  bb=$(command -v busybox) || nested_die "busybox not found (apt-get install busybox-static)"
  # The initramfs has no libc: a dynamically linked busybox would not start.
  ! readelf -l "$bb" 2>/dev/null | grep -q 'program interpreter' ||
    nested_die "$bb is dynamically linked (apt-get install busybox-static)"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,root,lib/modules}
  cp "$bb" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ $applet == busybox ]] && continue
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
}

# nested_add_modules ROOT "name list": modules (plus their dependencies) uncompressed into
# ROOT/lib/modules, their load order in ROOT/etc/kestrel/modules.
nested_add_modules() {
  local root=$1 list=$2
  mkdir -p "$root/etc/kestrel"
  # shellcheck disable=SC2086
  python3 "$nested_root/tools/nested/resolve-modules.py" "$nested_kernel/modules" "$root/lib/modules" $list \
    > "$root/etc/kestrel/modules" || nested_die "module resolution failed for: $list"
}

# nested_add_binaries ROOT "path list": host executables copied to the same paths under ROOT
# (symlinks resolved: e2fsprogs' mkfs.ext4 -> mke2fs keeps its own name, which picks the fs
# type) with their shared libraries and dynamic loader at their host paths, so the binary's
# own PT_INTERP and library search work in the initramfs. A trailing '?' marks a binary as
# optional (skipped with a note when the host lacks it).
nested_add_binaries() {
  local root=$1 list=$2 spec bin
  for spec in $list; do
    bin=${spec%\?}
    if [[ ! -x $bin ]]; then
      [[ $spec == *\? ]] && { echo "${0##*/}: optional $bin not on this host, skipped" >&2; continue; }
      nested_die "no executable $bin on this host (apt-get install the package that has it)"
    fi
    mkdir -p "$root$(dirname "$bin")"
    cp -L "$bin" "$root$bin"
    chmod 0755 "$root$bin"
    nested_add_libraries "$root" "$bin"
  done
}

# nested_add_libraries ROOT BINARY: BINARY's shared libraries and loader under ROOT.
nested_add_libraries() {
  local root=$1 bin=$2 lib interp
  # mawk-safe: `libx.so => /path (0x..)` and the loader's own `/path (0x..)` line.
  ldd "$bin" 2>/dev/null | awk '/=> \//{ print $3 } /^[[:space:]]*\/.*\(0x/{ print $1 }' | while read -r lib; do
    [[ -e $root$lib ]] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  interp=$(readelf -l "$bin" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  if [[ -n $interp && ! -e $root$interp ]]; then
    mkdir -p "$root$(dirname "$interp")"; cp -L "$interp" "$root$interp"
  fi
}

# nested_pack ROOT OUT: newc cpio, gzip-compressed unless OUT ends in .cpio. /dev/console
# comes from a small archive written here and put first (the kernel unpacks concatenated
# archives; cpio cannot add a device node without root), so init's output is never lost.
nested_pack() {
  local root=$1 out=$2 tmp
  tmp=$(mktemp "$out.XXXXXX") || nested_die "cannot write $out"
  python3 - > "$tmp" <<'PY' || nested_die "console node archive failed"
import sys
# newc format (cpio(5), "New ASCII Format"): magic, 13 hex fields, name, 4-byte padding.
def entry(name, mode, rmaj=0, rmin=0, ino=0):
    name = name.encode() + b'\0'
    fields = (ino, mode, 0, 0, 1, 0, 0, 0, 0, rmaj, rmin, len(name), 0)
    hdr = b'070701' + b''.join(b'%08X' % v for v in fields)
    return hdr + name + b'\0' * ((4 - (len(hdr) + len(name)) % 4) % 4)
sys.stdout.buffer.write(entry('dev', 0o040755, ino=1) + entry('dev/console', 0o020600, 5, 1, ino=2)
                        + entry('TRAILER!!!', 0))
PY
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >> "$tmp" ||
    nested_die "cpio failed"
  if [[ $out == *.cpio ]]; then mv "$tmp" "$out"; else gzip -1 -c "$tmp" > "$out" && rm -f "$tmp"; fi
}

# nested_add_python ROOT: Debian's python3 with its shared libraries and the standard library
# (less the parts no test script uses: test suites, IDLE, tkinter, 2to3, distutils, the
# build config), for runners written in Python such as tests/kvm/run-kvm-tests.
nested_add_python() {
  local root=$1 py lib
  py=$(readlink -f /usr/bin/python3) || nested_die "no /usr/bin/python3 (apt-get install python3)"
  lib=/usr/lib/$(basename "$py")
  [[ -d $lib ]] || nested_die "no standard library at $lib"
  nested_add_binaries "$root" "$py"
  ln -sf "$(basename "$py")" "$root/usr/bin/python3"
  mkdir -p "$root$lib"
  (cd "$lib" && find . \( -name __pycache__ -o -name test -o -name tests -o -name idlelib \
       -o -name tkinter -o -name turtledemo -o -name lib2to3 -o -name distutils -o -name ensurepip \
       -o -name pydoc_data -o -name 'config-*' -o -name site-packages -o -name dist-packages \) -prune \
       -o -print | cpio -pdm --quiet "$root$lib") || nested_die "copying $lib failed"
}
