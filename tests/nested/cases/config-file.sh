#!/bin/sh
# `kestrel run --config-file` (Firecracker's JSON configuration) boots a real Linux guest from the
# file alone: boot-source (kernel, initrd, boot_args), machine-config (2 vCPUs, 256 MiB), a
# read-only data drive (the guest half is blk-ro's: ro=1, writes refused, the file L1 put on the
# ext4 image read back intact), entropy and a tap network interface with a fixed MAC (the guest
# half guest-cases/config-file.sh reports both), a logger writing kestrel's log to a file and
# Firecracker's JSON-lines metrics to another (their block_data read bytes sum to at least the
# 1.5 MB file the guest read). With --api-sock too, GET /vm/config while the guest runs gives
# the same objects back (every field the file set, equal; round-trippable).
#@ timeout 300
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-guest-range memtotal_kb 180000 262144
#@ expect-cmdline
#@ guest-modules virtio_pci virtio_blk virtio_net virtio-rng
#@ l1-binaries /usr/sbin/mkfs.ext4 /usr/sbin/debugfs /usr/bin/curl
#@ l1-python
#@ expect-line ^KESTREL-GUEST-CASE-END blk-ro rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.ro == 1
#@ expect-value guest.rawwrite.rc != 0
#@ expect-value guest.touch.rc != 0
#@ expect-value guest.data.sha256 == $l1.data.sha256
#@ expect-value l1.image.after == $l1.image.before
#@ expect-value l1.vm_config.http == 200
#@ expect-value l1.vm_config.same == yes
#@ expect-line ^KESTREL-GUEST-CASE-END config-file rc=0$
#@ expect-value guest.mac == 06:00:ac:10:00:02
#@ expect-value guest.rng_current =~ virtio_rng(\.\d+)?
#@ expect-value l1.logger.lines >= 1
#@ expect-value l1.vm_info.state == Running
#@ expect-value l1.vm_info.vcpus == 2
#@ expect-value l1.metrics.lines >= 1
#@ expect-value l1.metrics.block_data.read_bytes >= 1500000
. /nested/case-lib.sh
img=/tmp/config-file.img cfg=/tmp/vm.json api=/tmp/config-file.sock log=/tmp/config-file.log
metrics=/tmp/config-file.metrics
rm -f "$img" "$api" "$log" "$metrics"
truncate -s 64M "$img"
mkfs.ext4 -q -F "$img" || exit 1
head -c 1500000 /dev/urandom > /tmp/data
debugfs -w -R "write /tmp/data data" "$img" 2>&1 | grep -v '^debugfs ' | sed 's/^/l1-debugfs: /'
nested_value l1.data.sha256 "$(nested_sha256 /tmp/data)"
nested_value l1.image.before "$(nested_sha256 "$img")"
tap=kt0
tunctl -t "$tap" > /dev/null || exit 1

token="kestrel.token=config-file-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=blk-ro kestrel.case=config-file"
echo "NESTED-CMDLINE $args"
cat > "$cfg" <<EOF
{
  "boot-source": {"kernel_image_path": "$L2/vmlinuz", "initrd_path": "$L2/initrd.cpio.gz",
                  "boot_args": "$args"},
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
  "drives": [{"drive_id": "data", "path_on_host": "$img", "is_root_device": false,
              "is_read_only": true}],
  "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "$tap",
                          "guest_mac": "06:00:AC:10:00:02"}],
  "entropy": {},
  "logger": {"log_path": "$log", "level": "Info"},
  "metrics": {"metrics_path": "$metrics"}
}
EOF
cat "$cfg"
read -r t0 _ < /proc/uptime
timeout -k 10 240 "$KESTREL" run --config-file "$cfg" --api-sock "$api" < /dev/null > /tmp/config-file.out 2>&1 &
kpid=$!
i=0
while [ ! -S "$api" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
nested_value l1.vm_config.http "$(curl -s -o /tmp/vm-config.json -w '%{http_code}' --unix-socket "$api" http://localhost/vm/config)"
# The socket may come up just before the configured VM has started: ask until it has.
i=0
while [ "$i" -lt 100 ]; do
  curl -s -o /tmp/vm-info.json --unix-socket "$api" http://localhost/vm/info
  grep -q '"Not started"' /tmp/vm-info.json || break
  sleep 0.1; i=$((i + 1))
done
wait "$kpid"
rc=$?
read -r t1 _ < /proc/uptime
cat /tmp/config-file.out
echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=-1"
echo "GET /vm/config: $(cat /tmp/vm-config.json)"
# Every field the file set comes back equal (MACs compared without case); fields kestrel adds
# with their defaults are fine.
nested_value l1.vm_config.same "$(python3 - "$cfg" /tmp/vm-config.json <<'PY'
import json, sys
want, got = (json.load(open(p)) for p in sys.argv[1:3])
def same(a, b, where):
    if isinstance(a, dict):
        return isinstance(b, dict) and all(same(v, b.get(k), f'{where}.{k}') for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y, f'{where}[{i}]') for i, (x, y) in enumerate(zip(a, b)))
    ok = a.lower() == str(b).lower() if where.endswith('guest_mac') else a == b
    if not ok:
        print(f'{where}: file {a!r}, GET /vm/config {b!r}', file=sys.stderr)
    return ok
print('yes' if same(want, got, 'config') else 'no')
PY
)"
echo "GET /vm/info: $(cat /tmp/vm-info.json)"
python3 - /tmp/vm-info.json "$metrics" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
print('NESTED-VALUE l1.vm_info.state', info.get('state'))
print('NESTED-VALUE l1.vm_info.vcpus', len(info.get('vcpus', [])))
lines = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print('NESTED-VALUE l1.metrics.lines', len(lines))
print('NESTED-VALUE l1.metrics.block_data.read_bytes', sum(l.get('block_data', {}).get('read_bytes', 0) for l in lines))
PY
nested_value l1.logger.lines "$(grep -c 'virtio' "$log" 2>/dev/null || echo 0)"
nested_value l1.image.after "$(nested_sha256 "$img")"
rm -f "$img" /tmp/data "$log" "$metrics"
ip link delete "$tap" 2>/dev/null
exit "$rc"
