#!/usr/bin/env bash
# Every test suite, from a fresh machine: set-up (packages + guest kernel), build, then
#   unit    no KVM: loaders, ACPI (with iasl), devices, virtqueues (also under ASan/UBSan)
#   fuzz    libFuzzer on virtqueue parsing for FUZZ_SECONDS (default 60)
#   kvm     tiny guests on host /dev/kvm (skipped loudly where there is none)
#   nested  real Linux guests under kestrel inside the nested test host (one L1 boot)
# Ends with one line `N passed, N failed` counting suites; exit status 0 only if all passed.
# usage: tools/test.sh [--skip-setup] [--no-nested] [--no-asan]
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
setup=1 nested=1 asan=1
for a in "$@"; do
  case $a in
    --skip-setup) setup=0 ;; --no-nested) nested=0 ;; --no-asan) asan=0 ;;
    *) echo "test: unknown option $a" >&2; exit 2 ;;
  esac
done

passed=0 failed=0 skipped=0
declare -a summary
record() {  # name rc
  case $2 in
    0) passed=$((passed + 1)); summary+=("PASS  $1") ;;
    77) skipped=$((skipped + 1)); summary+=("SKIP  $1  <-- SKIPPED, see its output above") ;;
    *) failed=$((failed + 1)); summary+=("FAIL  $1 (exit $2)") ;;
  esac
}
step() { printf '\n=== %s (%ds elapsed)\n' "$1" "$SECONDS"; }

if [[ $setup == 1 ]]; then
  step "set-up: packages and guest kernel"
  tools/setup.sh || { echo "test: set-up failed"; echo "0 passed, 1 failed"; exit 1; }
fi

step "build"
if ! tools/build.sh; then echo "test: build failed"; echo "0 passed, 1 failed"; exit 1; fi

step "unit suite"
meson test -C build --suite unit --print-errorlogs; record unit $?

if [[ $asan == 1 ]]; then
  step "unit suite under ASan/UBSan"
  [[ -f build-asan/build.ninja ]] || meson setup build-asan -Db_sanitize=address,undefined \
    -Db_lundef=false >/dev/null
  if ninja -C build-asan tests/unit-tests; then
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
      KESTREL_ARTIFACTS="$root/.cache/artifacts" build-asan/tests/unit-tests
    record unit-asan $?
  else
    record unit-asan-build 1
  fi
fi

step "fuzz: virtqueue descriptor-chain parsing (libFuzzer + ASan/UBSan, ${FUZZ_SECONDS:-60} s)"
if [[ -f build-fuzz/build.ninja ]] || CXX=clang++-16 meson setup build-fuzz \
     -Db_sanitize=address,undefined -Db_lundef=false >/dev/null; then
  if ninja -C build-fuzz tests/fuzz/fuzz-virtqueue; then
    mkdir -p .cache/corpus-virtqueue
    build-fuzz/tests/fuzz/fuzz-virtqueue -max_total_time="${FUZZ_SECONDS:-60}" -print_final_stats=1 \
      .cache/corpus-virtqueue 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|==[0-9]+==|SUMMARY|Done)" 
    record fuzz "${PIPESTATUS[0]}"
  else
    record fuzz-build 1
  fi
else
  record fuzz-setup 1
fi

step "kvm suite (tiny guests on host /dev/kvm)"
meson test -C build --suite kvm --print-errorlogs --verbose; rc=$?
# meson reports a skipped test (exit 77) as success; look at its log to say so loudly.
if grep -q "SKIP" build/meson-logs/testlog.txt 2>/dev/null && ! grep -q "passed" build/meson-logs/testlog.txt; then rc=77; fi
record kvm $rc

if [[ $nested == 1 ]]; then
  step "nested suite (real Linux guests in the nested test host)"
  tools/nested/run-tests --kestrel build/vmm/kestrel; record nested $?
else
  summary+=("SKIP  nested  <-- SKIPPED by --no-nested")
  skipped=$((skipped + 1))
fi

printf '\n=== summary (%ds)\n' "$SECONDS"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed == 0 ]]
