#!/bin/sh
# Rate limiters on a real guest's disks (Firecracker's token buckets), configured through the
# API: vda with a bandwidth limit (PUT /drives), changed by PATCH /drives while the guest runs;
# vdb with an ops limit; vdc unlimited. The guest times O_DIRECT reads with its own clock and
# each rate must be within ±10% of the configured one (the Control issue's requirement).
# Buckets hold 100 ms of refill with no one-time burst, so a full bucket adds ~1% to a
# 10 s transfer.
#@ timeout 600
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ l1-binaries /usr/bin/curl
#@ expect-line ^KESTREL-GUEST-CASE-END blk-ratelimit rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value l1.put.http == 204
#@ expect-value l1.patch.http == 204
#@ expect-value l1.patch_unknown.http == 400
#@ expect-value l1.patched_limit == 65536
#@ expect-value guest.bw1.permille >= 900
#@ expect-value guest.bw1.permille <= 1100
#@ expect-value guest.bw2.permille >= 900
#@ expect-value guest.bw2.permille <= 1100
#@ expect-value guest.ops.permille >= 900
#@ expect-value guest.ops.permille <= 1100
# kestrel's counters at exit: the limited drives were throttled and woken by their timers
# (once per held request at most), the unlimited one never.
#@ expect-value kestrel.blk0.rate_limiter_throttled > 10
#@ expect-value kestrel.blk0.rate_limiter_timer_wakeups >= $kestrel.blk0.rate_limiter_throttled
#@ expect-value kestrel.blk1.rate_limiter_throttled > 10
#@ expect-value kestrel.blk2.rate_limiter_throttled == 0
. /nested/case-lib.sh
api=/tmp/rl-api.sock
con=/tmp/rl.console
BW1=262144   # bytes/s: 26214 per 100 ms
BW2=655360   # after the PATCH: 65536 per 100 ms
OPS=10       # reads/s, 1 per 100 ms: far below what QD1 reads manage here (~75/s)
rm -f "$api" "$con"
truncate -s 16M /tmp/rl-bw.img /tmp/rl-ops.img /tmp/rl-mbox.img

call() {  # METHOD PATH [BODY] -> prints the HTTP status, body to /tmp/rl-api.out
  curl -s -o /tmp/rl-api.out -w '%{http_code}' --unix-socket "$api" -X "$1" "http://localhost$2" \
    ${3:+-H 'Content-Type: application/json' -d "$3"}
}
"$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info > /tmp/rl.log 2>&1 &
kpid=$!
for i in $(seq 50); do [ -S "$api" ] && break; sleep 0.1; done
token="kestrel.token=blk-ratelimit-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=blk-ratelimit kestrel.rl.bw1=$BW1 kestrel.rl.bw2=$BW2 kestrel.rl.ops=$OPS"
echo "NESTED-CMDLINE $args"
put=204
expect_204() { r=$("$@"); [ "$r" = 204 ] || { echo "blk-ratelimit: $* answered $r: $(cat /tmp/rl-api.out)"; put=$r; }; }
expect_204 call PUT /boot-source "{\"kernel_image_path\": \"$L2/vmlinuz\", \"initrd_path\": \"$L2/initrd.cpio.gz\", \"boot_args\": \"$args\"}"
expect_204 call PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256}'
expect_204 call PUT /drives/bw "{\"drive_id\": \"bw\", \"path_on_host\": \"/tmp/rl-bw.img\", \"is_root_device\": false, \"is_read_only\": true,
  \"rate_limiter\": {\"bandwidth\": {\"size\": $((BW1 / 10)), \"refill_time\": 100}}}"
expect_204 call PUT /drives/ops "{\"drive_id\": \"ops\", \"path_on_host\": \"/tmp/rl-ops.img\", \"is_root_device\": false, \"is_read_only\": true,
  \"rate_limiter\": {\"ops\": {\"size\": $((OPS / 10)), \"refill_time\": 100}}}"
expect_204 call PUT /drives/mbox '{"drive_id": "mbox", "path_on_host": "/tmp/rl-mbox.img", "is_root_device": false, "is_read_only": true}'
nested_value l1.put.http "$put"
r=$(call PUT /actions '{"action_type": "InstanceStart"}')
[ "$r" = 204 ] || { echo "blk-ratelimit: InstanceStart answered $r: $(cat /tmp/rl-api.out)"; kill "$kpid"; }

# The PATCH, when the guest has measured the first rate.
for i in $(seq 2400); do grep -q KESTREL-RL-PATCH-NOW "$con" 2>/dev/null && break; sleep 0.25; done
nested_value l1.patch.http "$(call PATCH /drives/bw "{\"drive_id\": \"bw\", \"rate_limiter\": {\"bandwidth\": {\"size\": $((BW2 / 10)), \"refill_time\": 100}}}")"
nested_value l1.patch_unknown.http "$(call PATCH /drives/nope '{"drive_id": "nope", "rate_limiter": {"ops": {"size": 1, "refill_time": 100}}}')"
call GET /vm/config > /dev/null
# The drive's kept configuration shows the new bucket (first "size" after "drive_id":"bw").
nested_value l1.patched_limit "$(tr -d ' \n' < /tmp/rl-api.out | sed -n 's/.*"drive_id":"bw"[^}]*"size":\([0-9]*\).*/\1/p')"
printf PATCHED | dd of=/tmp/rl-mbox.img conv=notrunc 2>/dev/null

wait "$kpid"
rc=$?
cat "$con"
cat /tmp/rl.log  # its exit counters before the EXIT line: they belong to this run
echo "NESTED-KESTREL-EXIT rc=$rc seconds=0 to_init_seconds=-1"
rm -f /tmp/rl-bw.img /tmp/rl-ops.img /tmp/rl-mbox.img "$con" "$api"
exit "$rc"
