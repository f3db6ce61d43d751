#!/usr/bin/env bash
# Configures (once) and builds kestrel in build/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ -f build/build.ninja ]] || meson setup build >/dev/null
ninja -C build
