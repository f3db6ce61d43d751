#!/bin/sh
# Pod networking (cni-shim/net) with a real guest: Debian's CNI bridge + host-local plugins
# give a pod namespace its eth0 (the bridge kcni0 in a "node" namespace standing in for the
# node), kestrel-podnet pairs a tap with it by tc mirred and execs kestrel on the tap fd with
# the veth's MAC; the guest configures that address, pings the gateway, and answers L1's
# pings of the pod IP; then detach and CNI DEL leave nothing.
# L1 has kestrel-podnet (from kestrel's build dir) and the modules bridge, veth, sch_ingress,
# cls_u32, act_mirred (tools/nested/build-l1.sh). iproute2 is called by path: busybox's ip
# (first on L1's PATH) has no netns.
#@ timeout 400
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_net
#@ l1-binaries /usr/sbin/ip /usr/sbin/tc /usr/lib/cni/bridge /usr/lib/cni/host-local
#@ expect-line ^KESTREL-GUEST-CASE-END pod-net rc=0$
#@ expect-value guest.mac == $l1.pod.mac
#@ expect-value guest.ping.received == 3
#@ expect-value guest.in_echos >= 3
#@ expect-value l1.node_ping.received >= 3
#@ expect-value l1.tc.veth_redirect == 1
#@ expect-value l1.after.taps == 0
#@ expect-value l1.after.ingress == 0
#@ expect-value l1.after.pod_links == 1
. /nested/case-lib.sh
for m in llc stp bridge veth sch_ingress cls_u32 act_mirred; do
  grep -q "^$m " /proc/modules || { echo "no module $m in L1"; exit 1; }
done
[ -x /nested/bin/kestrel-podnet ] || { echo "no /nested/bin/kestrel-podnet"; exit 1; }
mkdir -p /run/netns /var/run
/usr/sbin/ip netns add node && /usr/sbin/ip netns add pod && /usr/sbin/ip -n node link set lo up && /usr/sbin/ip -n pod link set lo up || exit 1
cat > /tmp/cni.json <<JSON
{"cniVersion": "0.4.0", "name": "podnet", "type": "bridge", "bridge": "kcni0", "isGateway": true,
 "ipMasq": false, "ipam": {"type": "host-local", "dataDir": "/tmp/ipam",
 "ranges": [[{"subnet": "10.88.5.0/24", "gateway": "10.88.5.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
JSON
cni() {  # CNI spec v0.4.0 "Parameters"
  /usr/sbin/ip netns exec node env -i CNI_COMMAND="$1" CNI_CONTAINERID=podnet1 CNI_NETNS=/run/netns/pod \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni PATH=/usr/sbin:/usr/bin:/bin /usr/lib/cni/bridge < /tmp/cni.json
}
cni ADD > /tmp/cni-result.json || { cat /tmp/cni-result.json; exit 1; }
cat /tmp/cni-result.json; echo
pod_ip=$(/usr/sbin/ip -n pod -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p')
pod_cidr=$(/usr/sbin/ip -n pod -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9./]*\) .*/\1/p')
nested_value l1.pod.mac "$(/usr/sbin/ip -n pod -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\) .*/\1/p')"

# L1 pings the pod IP until the guest has answered three times (or 60 tries), from the
# moment the tap exists: before that the pod namespace's own stack answers on eth0; after,
# the veth's ingress is redirected to the tap and only the guest can.
( n=0; i=0
  while [ $i -lt 100 ] && ! /usr/sbin/ip -n pod link show tap0_kestrel > /dev/null 2>&1; do sleep 0.2; i=$((i + 1)); done
  i=0
  # -W 5: under TCG a reply can take over a second, and the guest stops after answering
  # three echo requests (a late reply must still count).
  while [ $i -lt 60 ] && [ $n -lt 3 ]; do
    /usr/sbin/ip netns exec node ping -c 1 -W 5 "$pod_ip" > /dev/null 2>&1 && n=$((n + 1))
    i=$((i + 1)); sleep 1
  done; echo "$n" > /tmp/node-ping ) &
pinger=$!
( sleep 5; /usr/sbin/ip netns exec pod /usr/sbin/tc filter show dev eth0 ingress > /tmp/tc-veth 2>&1 ) &
NESTED_PODNET_APPEND="kestrel.case=pod-net podnet.addr=$pod_cidr podnet.gw=10.88.5.1"
export NESTED_PODNET_APPEND
/nested/bin/kestrel-podnet attach /run/netns/pod -- sh -c '
  . /nested/case-lib.sh
  echo "podnet: $KESTREL_NET_ARGS guest: $KESTREL_GUEST_NET"
  boot_guest --timeout 300 --append "$NESTED_PODNET_APPEND podnet.mac=${KESTREL_NET_ARGS##*mac=}" \
    --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M $KESTREL_NET_ARGS'
rc=$?
wait "$pinger"
nested_value l1.node_ping.received "$(cat /tmp/node-ping)"
cat /tmp/tc-veth
grep -q "Egress Redirect to device tap0_kestrel" /tmp/tc-veth && nested_value l1.tc.veth_redirect 1
/nested/bin/kestrel-podnet detach /run/netns/pod || rc=1
nested_value l1.after.taps "$(/usr/sbin/ip -n pod -o link show | grep -c kestrel)"
nested_value l1.after.ingress "$(/usr/sbin/ip netns exec pod /usr/sbin/tc qdisc show dev eth0 | grep -c ingress)"
cni DEL || rc=1
nested_value l1.after.pod_links "$(/usr/sbin/ip -n pod -o link show | wc -l)"
/usr/sbin/ip netns del pod; /usr/sbin/ip netns del node
exit "$rc"
