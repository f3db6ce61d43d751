#!/usr/bin/env bash
# Every test suite, from a fresh machine: set-up (packages + guest kernel), build, then
#   unit    no KVM: loaders, ACPI (with iasl), devices, virtqueues, the kestrel binary's
#           errors (also under ASan/UBSan/LSan, built at -O0: it compiles 5x faster than -O2)
#   fuzz    every libFuzzer target (tools/fuzz.sh) for FUZZ_SECONDS in all (default 300)
#   kvm     tiny guests on this host's /dev/kvm, or inside the nested test host when this
#           host has no usable /dev/kvm
#   nested  real Linux guests under kestrel inside the nested test host (one L1 boot)
# Ends with one line `N passed, N failed` counting suites (a suite that did not run counts as
# failed); exit status 0 only if all passed.
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

passed=0 failed=0
declare -a summary
record() {  # name rc
  case $2 in
    0) passed=$((passed + 1)); summary+=("PASS  $1") ;;
    77) failed=$((failed + 1)); summary+=("FAIL  $1 (did not run: exit 77; a suite that did not run is a failure)") ;;
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
  # -O0 with -g1 (line tables, no variables: enough for ASan's symbolized reports) compiles
  # ~40% faster than --buildtype=debug's full -g.
  [[ -f build-asan/build.ninja ]] || meson setup build-asan --buildtype=plain -Dcpp_args=-g1 \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
  if ninja -C build-asan tests/unit-tests; then
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
      KESTREL_ARTIFACTS="$root/.cache/artifacts" build-asan/tests/unit-tests
    record unit-asan $?
  else
    record unit-asan-build 1
  fi
fi

step "fuzz: every libFuzzer target under ASan/UBSan/LSan (tools/fuzz.sh, ${FUZZ_SECONDS:-300} s in all)"
tools/fuzz.sh "${FUZZ_SECONDS:-300}"; record fuzz $?

# The kvm suite runs on this machine's /dev/kvm when it is a KVM device that boots the
# smallest test guest; otherwise (no /dev/kvm, as on CI, or a host that cannot run it) it runs
# inside the nested test host, in the same L1 boot as the nested cases. Either way it counts
# as passed or failed, never skipped. KESTREL_KVM_SUITE=nested forces the nested host.
host_kvm_problem() {
  [[ ${KESTREL_KVM_SUITE:-} == nested ]] && { echo "KESTREL_KVM_SUITE=nested"; return; }
  [[ -c /dev/kvm ]] || { echo "/dev/kvm is missing or not a character device"; return; }
  local out rc
  out=$(timeout 30 build/vmm/kestrel run --kernel build/tests/guests/exit_now.elf --debug-exit \
        --serial none --memory 16M 2>&1); rc=$?
  [[ $rc == 0 ]] || echo "the probe guest (exit_now) exited $rc: ${out:0:300}"
}
kvm_problem=$(host_kvm_problem)
if [[ -z $kvm_problem ]]; then
  step "kvm suite (tiny guests on this host's /dev/kvm)"
  meson test -C build --suite kvm --print-errorlogs --verbose; rc=$?
  # meson counts exit 77 (the runner's "no /dev/kvm") as a pass; here it is a failure.
  grep -q "SKIP" build/meson-logs/testlog.txt 2>/dev/null && rc=77
  record kvm "$rc"
else
  echo "kvm suite: not on this host ($kvm_problem): it runs inside the nested test host"
fi

if [[ $nested == 1 ]]; then
  step "nested suite (real Linux guests in the nested test host${kvm_problem:+, and the kvm suite})"
  results=.cache/nested/results.json
  rm -f "$results"
  tools/nested/run-tests --kestrel build/vmm/kestrel ${kvm_problem:+--kvm-suite build} --results "$results"
  rc=$?
  if [[ -n $kvm_problem ]]; then
    # One L1 boot ran both: judge them apart (a missing results file fails both).
    verdict() {  # which: kvm | nested
      python3 - "$results" "$1" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
kvm = r.pop("kvm-suite", False)
sys.exit(0 if (kvm if sys.argv[2] == "kvm" else (r and all(r.values()))) else 1)
PY
    }
    verdict kvm; record "kvm (in the nested test host)" $?
    verdict nested; rc=$?
  fi
  record nested "$rc"
else
  record "nested (not run: --no-nested)" 1
  [[ -n $kvm_problem ]] && record "kvm (not run: needs the nested test host, --no-nested given)" 1
fi

printf '\n=== summary (%ds)\n' "$SECONDS"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
