#!/usr/bin/env bash
# The fuzz suite: every libFuzzer target of tests/fuzz under ASan + UBSan (+ LeakSanitizer),
# each for its share of SECONDS_TOTAL (default 300), from a scratch copy of its kept corpus
# (tests/fuzz/corpus/<target>/, seeds from tests/fuzz/make_seeds.py plus minimised finds).
# Builds build-fuzz first if needed (clang++-16; see tests/fuzz/meson.build).
#
# Prints one line per target: executions, exec/s, coverage (cov: edges, ft: features, from
# libFuzzer's final status line), corpus size at the end, seconds. Exits non-zero if any
# target crashed, leaked, hit undefined behaviour (UBSAN halt_on_error=1), timed out on an
# input (-timeout) or did not finish in time; the reproducer is copied to
# .cache/fuzz-artifacts/<target>/ and the log tail printed.
#
# usage: tools/fuzz.sh [SECONDS_TOTAL]
#   FUZZ_MERGE=1   afterwards, minimise each kept corpus to its seeds plus the fewest
#                  inputs reaching every edge reached so far, this run's finds included
#                  (-merge=1); done by hand, then the files are committed
#   FUZZ_TARGETS="fuzz-msix fuzz-ioapic"   run only these
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

total=${1:-300}
targets=(${FUZZ_TARGETS:-fuzz-virtqueue fuzz-virtio-pci-common fuzz-blk-request fuzz-net-tx
         fuzz-vsock-packet fuzz-pci-config fuzz-msix fuzz-ioapic fuzz-api-request fuzz-api-http
         fuzz-state-stream fuzz-ttrpc-frame fuzz-agent-request})
share=$(( total / ${#targets[@]} ))
(( share < 5 )) && share=5
build=build-fuzz

if [[ ! -f $build/build.ninja ]]; then
  # Optimized as usual (-O2), with line tables only instead of full -g: crash reports keep
  # file:line, the build is faster.
  CXX=clang++-16 meson setup "$build" -Ddebug=false -Dcpp_args=-gline-tables-only \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null ||
    { echo "fuzz: meson setup $build failed"; exit 1; }
fi
if ! ninja -C "$build" "${targets[@]/#/tests/fuzz/}"; then
  echo "fuzz: build failed"
  exit 1
fi

# Symbolized stack traces in crash reports (Debian's clang-16 package does not ship one
# where the runtime looks).
symbolizer=$(command -v llvm-symbolizer-16 || command -v llvm-symbolizer || true)
[[ -n $symbolizer && -z ${ASAN_SYMBOLIZER_PATH:-} ]] && export ASAN_SYMBOLIZER_PATH=$symbolizer

scratch=$(mktemp -d /tmp/kestrel-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
artifacts="$root/.cache/fuzz-artifacts"
failed=0
declare -a rows
printf 'fuzz: %d target(s), %d s each, ASan+UBSan+LSan\n' "${#targets[@]}" "$share"
for t in "${targets[@]}"; do
  work="$scratch/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  [[ -d tests/fuzz/corpus/$t ]] && cp tests/fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null
  log="$work/log"
  start=$SECONDS
  # -timeout: one input running longer is a hang (a device waiting forever); the outer
  # timeout catches a target that never gets going at all.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    timeout $(( share + 120 )) "$build/tests/fuzz/$t" -max_total_time="$share" -timeout=10 \
    -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
    "$work/corpus" >"$log" 2>&1
  rc=$?
  secs=$(( SECONDS - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  status=$(grep -E '^#[0-9]+[[:space:]].* cov: ' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  files=$(find "$work/corpus" -type f | wc -l)
  bytes=$(find "$work/corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  verdict=PASS
  if [[ $rc != 0 ]] || [[ -n $(ls -A "$work/artifacts") ]] ||
     grep -qE '^(==[0-9]+==ERROR|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer)' "$log"; then
    verdict="FAIL (exit $rc)"
    failed=1
    mkdir -p "$artifacts/$t"
    cp "$work"/artifacts/* "$artifacts/$t/" 2>/dev/null
    echo "--- $t failed; log tail:"
    grep -vE '^#[0-9]+[[:space:]]' "$log" | tail -40
    echo "--- reproducers (if any) in $artifacts/$t: $t FILE"
  fi
  rows+=("$(printf '%-24s %-14s execs %9s  %6s/s  cov %5s  ft %6s  corpus %4s files %7s B  %3ss' \
    "$t" "$verdict" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$files" "$bytes" "$secs")")
  if [[ ${FUZZ_MERGE:-0} == 1 && $verdict == PASS ]]; then
    # The kept corpus becomes the seeds plus the fewest inputs that reach every edge the
    # old kept corpus and this run reached (-use_counters=0: edges, not hit counts, or it
    # grows by hundreds of files a run).
    kept="tests/fuzz/corpus/$t"
    mkdir -p "$kept" "$work/kept"
    cp "$kept"/seed-* "$work/kept/" 2>/dev/null
    if "$build/tests/fuzz/$t" -merge=1 -use_counters=0 -max_len=8192 "$work/kept" "$kept" \
         "$work/corpus" >"$work/merge.log" 2>&1; then
      rm -f "$kept"/*
      cp "$work"/kept/* "$kept/"
    else
      echo "fuzz: merging into $kept failed (kept corpus unchanged):"
      tail -5 "$work/merge.log"
    fi
  fi
done
printf '\n=== fuzz summary\n'
printf '%s\n' "${rows[@]}"
exit $failed
