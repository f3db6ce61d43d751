#!/bin/sh
# The API (Firecracker's getting-started sequence through curl --unix-socket) boots a real
# guest with a root drive, a tap and vsock; while the guest streams a download from L1 and
# writes its disk, PATCH /vm Paused: guest RAM hashed twice 1 s apart and again after 20 s
# (the soft-lockup watchdog's threshold) is unchanged and the console is silent; Resumed:
# both transfers finish with the right data, the guest's clock never went backwards and its
# kernel logged no soft lockup or RCU stall (KVM_KVMCLOCK_CTRL told it about the pause).
# While paused, the snapshot hooks on this real guest: PUT /vm/device-state/save (both vCPUs,
# kvm-clock, the legacy devices, the virtio functions with their queues — the disk's writes
# and the download are in flight), load of that file into the same VM (every virtio device
# reset and restored at its saved queue positions; vsock's guest connections get a transport
# reset), save again: each 204, and the guest carries on after Resumed as above. (Guest RAM is not compared across the
# load: KVM itself writes the guest's pvclock wall-clock structure when MSR_KVM_WALL_CLOCK_NEW
# is set, as msr.rst says it does at every write of that MSR.)
#@ timeout 420
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk virtio_net vsock vmw_vsock_virtio_transport
#@ guest-binaries /usr/bin/socat
#@ l1-binaries /usr/bin/socat /usr/bin/curl
#@ expect-line ^KESTREL-GUEST-CASE-END api-pause rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ reject-line soft lockup|rcu_sched self-detected stall|rcu: INFO|clocksource.*unstable
#@ expect-value l1.state.before == Running
#@ expect-value l1.state.paused == Paused
#@ expect-value l1.state.after == Running
#@ expect-value l1.pause.http == 204
#@ expect-value l1.resume.http == 204
#@ expect-value l1.digest.a =~ [0-9a-f]{64}
#@ expect-value l1.digest.b == $l1.digest.a
#@ expect-value l1.digest.c == $l1.digest.a
#@ expect-value l1.console.grew_while_paused == 0
#@ expect-value l1.io.busy_at_pause == 1
#@ expect-value guest.down.sha256 == $l1.down.sha256
#@ expect-value guest.disk.readback == ok
#@ expect-value guest.clock.backwards == 0
#@ expect-value guest.clock.max_gap_s >= 20
#@ expect-value guest.cmdline.root == root=/dev/vda
#@ expect-value l1.devstate.save == 204
#@ expect-value l1.devstate.load == 204
#@ expect-value l1.devstate.save_again == 204
#@ expect-value l1.devstate.vcpus == 2
. /nested/case-lib.sh
api=/tmp/api.sock
con=/tmp/api-pause.console
tap=kt1
rm -f "$api" "$con"
tunctl -t "$tap" > /dev/null || exit 1
ip addr add 10.0.3.1/24 dev "$tap" && ip link set "$tap" up || exit 1
truncate -s 64M /tmp/api-root.img
head -c 33554432 /dev/urandom > /tmp/api-down
nested_value l1.down.sha256 "$(nested_sha256 /tmp/api-down)"
timeout 400 socat -u FILE:/tmp/api-down TCP-LISTEN:5003,reuseaddr &
down_pid=$!

call() {  # METHOD PATH [BODY] -> prints the HTTP status, body to /tmp/api.out
  curl -s -o /tmp/api.out -w '%{http_code}' --unix-socket "$api" -X "$1" "http://localhost$2" \
    ${3:+-H 'Content-Type: application/json' -d "$3"}
}
value_of() {  # KEY: a top-level string field of /tmp/api.out
  sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" /tmp/api.out
}

"$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info > /tmp/api-pause.log 2>&1 &
kpid=$!
for i in $(seq 50); do [ -S "$api" ] && break; sleep 0.1; done
token="kestrel.token=api-pause-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=api-pause"
echo "NESTED-CMDLINE $args"
fail_api() { echo "api-pause: $1 answered $2: $(cat /tmp/api.out)"; kill "$kpid"; exit 1; }
r=$(call PUT /boot-source "{\"kernel_image_path\": \"$L2/vmlinuz\", \"initrd_path\": \"$L2/initrd.cpio.gz\", \"boot_args\": \"$args\"}")
[ "$r" = 204 ] || fail_api boot-source "$r"
r=$(call PUT /drives/rootfs '{"drive_id": "rootfs", "path_on_host": "/tmp/api-root.img", "is_root_device": true, "is_read_only": false}')
[ "$r" = 204 ] || fail_api drives "$r"
r=$(call PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 256}')
[ "$r" = 204 ] || fail_api machine-config "$r"
# The download is held to 8 MiB/s (kestrel's RX limiter), so it is surely still under way when
# the pause comes (at full speed it could end first, and l1.io.busy_at_pause said 0 once).
r=$(call PUT /network-interfaces/eth0 "{\"iface_id\": \"eth0\", \"host_dev_name\": \"$tap\", \"guest_mac\": \"06:00:AC:10:00:02\", \"rx_rate_limiter\": {\"bandwidth\": {\"size\": 8388608, \"refill_time\": 1000}}}")
[ "$r" = 204 ] || fail_api network-interfaces "$r"
r=$(call PUT /vsock '{"guest_cid": 3, "uds_path": "/tmp/api-pause.vsock"}')
[ "$r" = 204 ] || fail_api vsock "$r"
r=$(call PUT /actions '{"action_type": "InstanceStart"}')
[ "$r" = 204 ] || fail_api InstanceStart "$r"
call GET / > /dev/null
nested_value l1.state.before "$(value_of state)"

# Pause once the guest says its transfers are under way.
for i in $(seq 1200); do grep -q KESTREL-PAUSE-NOW "$con" 2>/dev/null && break; sleep 0.25; done
busy=0; kill -0 "$down_pid" 2>/dev/null && busy=1
nested_value l1.io.busy_at_pause "$busy"
nested_value l1.pause.http "$(call PATCH /vm '{"state": "Paused"}')"
call GET / > /dev/null
nested_value l1.state.paused "$(value_of state)"
size0=$(stat -c %s "$con")
call GET /vm/ram-digest > /dev/null; nested_value l1.digest.a "$(value_of sha256)"
sleep 1
call GET /vm/ram-digest > /dev/null; nested_value l1.digest.b "$(value_of sha256)"
sleep 20
call GET /vm/ram-digest > /dev/null; nested_value l1.digest.c "$(value_of sha256)"
nested_value l1.devstate.save "$(call PUT /vm/device-state/save '{"path": "/tmp/api-pause.state"}')"
nested_value l1.devstate.vcpus "$(tr '\0' '\n' < /tmp/api-pause.state | grep -o 'vcpu/[0-9]' | sort -u | wc -l)"
nested_value l1.devstate.load "$(call PUT /vm/device-state/load '{"path": "/tmp/api-pause.state"}')"
[ "$(cat /tmp/api.out)" = "" ] || echo "api-pause: device-state load: $(cat /tmp/api.out)"
nested_value l1.devstate.save_again "$(call PUT /vm/device-state/save '{"path": "/tmp/api-pause2.state"}')"
size1=$(stat -c %s "$con")
nested_value l1.console.grew_while_paused $((size1 - size0))
nested_value l1.resume.http "$(call PATCH /vm '{"state": "Resumed"}')"
call GET / > /dev/null
nested_value l1.state.after "$(value_of state)"

wait "$kpid"
rc=$?
echo "NESTED-KESTREL-EXIT rc=$rc seconds=0 to_init_seconds=-1"
cat "$con"
cat /tmp/api-pause.log
kill "$down_pid" 2>/dev/null
ip link del "$tap" 2>/dev/null
rm -f /tmp/api-root.img /tmp/api-down "$con" /tmp/api-pause.state /tmp/api-pause2.state
exit "$rc"
