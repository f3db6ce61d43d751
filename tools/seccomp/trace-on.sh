#!/bin/sh
# Not a test: the first of two nested "cases" that trace what kestrel's threads call, for
# building the allow-lists in vmm/seccomp/seccomp_policy.cpp. From here on every
# `kestrel run` in this L1 runs under strace -ff with --seccomp=log (nothing is killed; a
# call the lists lack shows up as an L1-DMESG audit line, type=1326). tools/seccomp/
# trace-report.sh, run last, sums the calls up per thread kind (README.md, "Seccomp"). Usage:
#   tools/nested/run-tests --cases "tools/seccomp/trace-on.sh api-pause blk-ext4 ... \
#       tools/seccomp/trace-report.sh"
#@ timeout 60
#@ l1-binaries /usr/bin/strace
#@ expect-line ^SECCOMP-TRACE-ON$
set -e
[ -e /nested/bin/kestrel.real ] || mv /nested/bin/kestrel /nested/bin/kestrel.real
mkdir -p /tmp/seccomp-trace
cat > /nested/bin/kestrel <<'WRAP'
#!/bin/sh
# Output files CASE.PID.TID: with -D the traced kestrel keeps this script's pid.
[ "$1" = run ] || exec /nested/bin/kestrel.real "$@"
exec strace -D -f -ff -qq -s 40 -o "/tmp/seccomp-trace/${NESTED_CASE:-case}.$$" \
  /nested/bin/kestrel.real "$@" --seccomp=log
WRAP
chmod +x /nested/bin/kestrel
echo SECCOMP-TRACE-ON
