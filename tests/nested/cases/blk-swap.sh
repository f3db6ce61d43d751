#!/bin/sh
# PATCH /drives/{id} path_on_host while the guest runs (how a shim attaches a container's
# disk: boot on a placeholder, swap the real image in): the guest boots with a 1 MiB zero
# placeholder it keeps reading (O_DIRECT, so requests are in flight at the swap); L1 first
# asks for a missing image (refused, nothing changes), then swaps in a 24 MiB image of random
# bytes. The guest must see the new size (config-change interrupt: virtio_blk logs "new
# size") and read exactly L1's bytes; GET /vm/config shows the new path.
#@ timeout 420
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ l1-binaries /usr/bin/curl
#@ expect-line ^KESTREL-GUEST-CASE-END blk-swap rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value l1.swap.missing.http == 400
#@ expect-value l1.swap.missing.message =~ .*drive data: disk image '/nonexistent/big.img' does not exist.*
#@ expect-value l1.swap.http == 204
#@ expect-value l1.config.path == /tmp/swap-big.img
#@ expect-value guest.size.before == 2048
#@ expect-value guest.size.after == 49152
#@ expect-value guest.newsize.logged >= 1
#@ expect-value guest.disk.sha256 == $l1.big.sha256
#@ expect-value guest.io_errors == 0
#@ expect-value kestrel.blk0.io_errors == 0
. /nested/case-lib.sh
api=/tmp/swap.sock
con=/tmp/swap.console
rm -f "$api" "$con"
truncate -s 1M /tmp/swap-small.img
head -c 25165824 /dev/urandom > /tmp/swap-big.img
nested_value l1.big.sha256 "$(nested_sha256 /tmp/swap-big.img)"

call() {  # METHOD PATH [BODY] -> prints the HTTP status, body to /tmp/swap.out
  curl -s -o /tmp/swap.out -w '%{http_code}' --unix-socket "$api" -X "$1" "http://localhost$2" \
    ${3:+-H 'Content-Type: application/json' -d "$3"}
}

"$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info > /tmp/swap.log 2>&1 &
kpid=$!
for i in $(seq 50); do [ -S "$api" ] && break; sleep 0.1; done
token="kestrel.token=blk-swap-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=blk-swap"
echo "NESTED-CMDLINE $args"
call PUT /boot-source "{\"kernel_image_path\": \"$L2/vmlinuz\", \"initrd_path\": \"$L2/initrd.cpio.gz\", \"boot_args\": \"$args\"}" > /dev/null
call PUT /drives/data '{"drive_id": "data", "path_on_host": "/tmp/swap-small.img", "is_root_device": false, "is_read_only": false}' > /dev/null
call PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256}' > /dev/null
r=$(call PUT /actions '{"action_type": "InstanceStart"}')
[ "$r" = 204 ] || echo "blk-swap: InstanceStart answered $r: $(cat /tmp/swap.out)"
read -r t0 _ < /proc/uptime
for i in $(seq 800); do grep -q KESTREL-SWAP-READY "$con" 2>/dev/null && break; sleep 0.25; done
sleep 2  # the guest's read loop is under way
nested_value l1.swap.missing.http "$(call PATCH /drives/data '{"drive_id": "data", "path_on_host": "/nonexistent/big.img"}')"
nested_value l1.swap.missing.message "$(cat /tmp/swap.out)"
nested_value l1.swap.http "$(call PATCH /drives/data '{"drive_id": "data", "path_on_host": "/tmp/swap-big.img"}')"
call GET /vm/config > /dev/null
nested_value l1.config.path "$(sed -n 's/.*"path_on_host":"\([^"]*\)".*/\1/p' /tmp/swap.out)"
wait "$kpid"
rc=$?
read -r t1 _ < /proc/uptime
cat "$con"
cat /tmp/swap.log  # before the EXIT line: kestrel's counters belong to this run
echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=-1"
rm -f /tmp/swap-small.img /tmp/swap-big.img "$con" /tmp/swap.log
exit "$rc"
