#!/usr/bin/env bash
# By hand, end to end with a real guest: a CNI bridge network (Debian's bridge + host-local
# plugins run through the CNI protocol) in a "node" namespace, a pod namespace given an eth0
# by them, kestrel-podnet attaching taps there and exec'ing `kestrel run --net fd=N,mac=MAC`
# with Debian's cloud kernel and a busybox initramfs whose /init configures the interface
# from kestrel.* kernel parameters (made from KESTREL_GUEST_NET), pings the gateway, and
# waits while the node pings the pod IP. Then detach, CNI DEL, and a check that nothing is
# left. Root, a built tree (build/), tools/fetch-kernel.sh's kernel, and a /dev/kvm that runs
# a stock Linux guest (VT-x/AMD-V or the nested test host's L1: not a kvm-pvm host, where
# kestrel stops with "instruction emulation failed"). L1 also needs the veth, sch_ingress,
# cls_u32 and act_mirred modules loaded, which tools/nested/build-l1.sh does not load today.
#
# usage: cni-shim/net/try-pod-network.sh [BUILD_DIR]     prints PASS or FAIL lines, rc 0/1
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../tools/nested/lib.sh"
build=${1:-$nested_root/build}
kestrel=$build/vmm/kestrel podnet=$build/cni-shim/net/kestrel-podnet
[[ -x $kestrel && -x $podnet ]] || nested_die "build kestrel and kestrel-podnet in $build first"
[[ $(id -u) -eq 0 ]] || nested_die "needs root"
nested_need_kernel

tag=kpn$$ node=kpn$$-node pod=kpn$$-pod
work=$(mktemp -d)
cleanup() {
  ip netns del "$pod" 2>/dev/null; ip netns del "$node" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
rc=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; rc=1; fi; }

ip netns add "$node" && ip netns add "$pod" && ip -n "$node" link set lo up && ip -n "$pod" link set lo up || exit 1
cat > "$work/conf.json" <<JSON
{"cniVersion": "0.4.0", "name": "$tag", "type": "bridge", "bridge": "kcni0", "isGateway": true,
 "ipMasq": false, "ipam": {"type": "host-local", "dataDir": "$work/ipam",
 "ranges": [[{"subnet": "10.88.5.0/24", "gateway": "10.88.5.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
JSON
cni() {  # CNI spec v0.4.0 "Parameters": the command in the environment, the config on stdin
  ip netns exec "$node" env -i CNI_COMMAND="$1" CNI_CONTAINERID="$tag" CNI_NETNS="/run/netns/$pod" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni PATH=/usr/sbin:/usr/bin /usr/lib/cni/bridge < "$work/conf.json"
}
cni ADD > "$work/result.json" || { cat "$work/result.json"; exit 1; }
pod_ip=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/result.json")
echo "CNI ADD: pod IP $pod_ip"

root=$work/initrd
nested_busybox_root "$root"
nested_add_modules "$root" "virtio_pci virtio_net"
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys
while read -r m; do insmod "/lib/modules/$m" || echo "insmod $m failed"; done < /etc/kestrel/modules
for p in $(cat /proc/cmdline); do case $p in kestrel.*=*) k=${p%%=*}; eval "${k#kestrel.}='${p#*=}'";; esac; done
dev=""
for d in /sys/class/net/*; do [ "$(cat "$d/address")" = "$mac" ] && dev=${d##*/}; done
echo "GUEST dev=$dev mac=$mac addr=$addr gw=$gw mtu=$mtu"
ip link set lo up
ip link set "$dev" mtu "$mtu" up && ip addr add "$addr" dev "$dev" && ip route add default via "$gw"
ping -c 3 -W 2 "$gw" > /tmp/ping 2>&1; echo "GUEST ping-gw received=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)"
echo "GUEST READY"
sleep 8
echo "GUEST END"
poweroff -f
INIT
chmod 0755 "$root/init"
nested_pack "$root" "$work/initrd.cpio.gz"

# KESTREL_GUEST_NET -> kestrel.mac/addr/gw/mtu for the init above (first interface).
cat > "$work/params.py" <<'PY'
import json, os
i = json.loads(os.environ["KESTREL_GUEST_NET"])["interfaces"][0]
gw = [r["via"] for r in i["routes"] if r["dst"] == "0.0.0.0/0"][0]
print(f"kestrel.mac={i['mac']} kestrel.addr={i['addresses'][0]} kestrel.gw={gw} kestrel.mtu={i['mtu']}")
PY
"$podnet" attach "/run/netns/$pod" -- sh -c '
  params=$(python3 "$4") || exit 1
  echo "kestrel run $KESTREL_NET_ARGS ($params)"
  exec "$0" run --kernel "$1" --initrd "$2" --memory 256M --serial "file:$3" \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet $params" $KESTREL_NET_ARGS' \
  "$kestrel" "$nested_kernel/vmlinuz" "$work/initrd.cpio.gz" "$work/serial.log" "$work/params.py" &
vm=$!
for _ in $(seq 60); do
  grep -q "GUEST READY" "$work/serial.log" 2>/dev/null && break
  kill -0 "$vm" 2>/dev/null || break
  sleep 0.5
done
ip netns exec "$node" busybox ping -c 3 -W 2 "$pod_ip" > "$work/node-ping" 2>&1
tc_veth=$(ip netns exec "$pod" tc filter show dev eth0 ingress)
wait "$vm"; vm_rc=$?
grep GUEST "$work/serial.log"
cat "$work/node-ping"
check "kestrel exited 0 (guest powered off)" '[[ $vm_rc -eq 0 ]]'
check "guest found the veth's MAC on its virtio-net interface" 'grep -q "GUEST dev=eth" "$work/serial.log"'
check "guest pinged the gateway 3/3" 'grep -q "GUEST ping-gw received=3" "$work/serial.log"'
check "node pinged the pod IP 3/3" 'grep -q "3 packets received" "$work/node-ping"'
check "veth ingress redirects to tap0_kestrel" '[[ $tc_veth == *"Egress Redirect to device tap0_kestrel"* ]]'
check "tap gone once kestrel exited" '! ip -n "$pod" -o link show | grep -q kestrel'
"$podnet" detach "/run/netns/$pod"
check "detach: no ingress qdisc on eth0" '! ip netns exec "$pod" tc qdisc show dev eth0 | grep -q ingress'
cni DEL
check "CNI DEL: pod has only lo" '[[ $(ip -n "$pod" -o link show | wc -l) -eq 1 ]]'
check "CNI DEL: host-local released $pod_ip" '[[ ! -e $work/ipam/$tag/$pod_ip ]]'
exit $rc
