#!/bin/sh
# Pod networking end to end through containerd 1.6 and containerd-shim-kestrel-v2: Debian's
# CNI bridge + host-local plugins (run by hand with CNI_COMMAND=ADD, as containerd's CRI
# plugin would) give a pod network namespace its eth0 on bridge kcni9 in L1's root namespace
# (the node), MTU 1400, IPv4 and IPv6, and a second interface net1 on bridge kcni10 (several networks, as
# Multus gives pods); a second namespace on kcni9 stands in for a runc pod. `ctr
# run --with-ns network:NETNS` with the CRI sandbox annotations starts a kestrel pod; the shim
# puts a tap (tc mirred both ways) beside eth0, hands it to kestrel, and the guest agent
# configures the VM's NIC (rtnetlink). Checked: the guest's NIC has the veth's MAC, MTU 1400
# and the pod IP; L1 and the peer ping the pod IP and exchange a line with it over TCP
# (busybox nc in the container); the veth's ingress redirects to the tap; after the task and
# container are deleted the shim is gone and no tap, filter or ingress qdisc is left in the
# pod namespace (the namespace itself and its eth0 stay: they are containerd's/CNI's); the
# same after a second pod's shim is SIGKILLed and containerd runs the shim's `delete`.
# iproute2 is called by path: busybox's ip (first on L1's PATH) has no netns.
#@ timeout 900
#@ expect-script-rc 0
#@ l1-binaries /usr/bin/containerd /usr/bin/ctr /usr/sbin/mke2fs /usr/sbin/ip /usr/sbin/tc /usr/lib/cni/bridge /usr/lib/cni/host-local
#@ expect-value l1.run.rc == 0
#@ expect-value l1.running.taps == 2
#@ expect-value l1.guest.name == eth0
#@ expect-value l1.guest.net1_name == net1
#@ expect-value l1.guest.net1_mac == $l1.pod.net1_mac
#@ expect-value l1.guest.net1_addr == $l1.pod.net1_cidr
#@ expect-value l1.node_ping_net1.received >= 2
#@ expect-value l1.tc.veth_redirect == 1
#@ expect-value l1.guest.mac == $l1.pod.mac
#@ expect-value l1.guest.mtu == 1400
#@ expect-value l1.guest.addr == $l1.pod.cidr
#@ expect-value l1.guest.default_via == 10.88.9.1
#@ expect-value l1.guest.addr6 == $l1.pod.cidr6
#@ expect-value l1.guest.default_via6 == fd00:88:9::1
#@ expect-value l1.node_ping6.received >= 2
#@ expect-value l1.node_ping.received >= 3
#@ expect-value l1.peer_ping.received >= 2
#@ expect-value l1.tcp.pod_said == pod-says-hello
#@ expect-value l1.guest.tcp_got == l1-says-hi
#@ expect-value l1.after.shim == 0
#@ expect-value l1.after.kestrel == 0
#@ expect-value l1.after.taps == 0
#@ expect-value l1.after.ingress == 0
#@ expect-value l1.after.filters == 0
#@ expect-value l1.after.pod_eth0 == 1
#@ expect-value l1.after.net1_filters == 0
#@ expect-value l1.after.shim_detached == 1
#@ expect-value l1.dead.taps_before == 2
#@ expect-value l1.dead.kestrel_after == 0
#@ expect-value l1.dead.taps_after == 0
#@ expect-value l1.dead.ingress_after == 0
. /nested/case-lib.sh
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
IP=/usr/sbin/ip TC=/usr/sbin/tc
[ -x /usr/local/bin/containerd-shim-kestrel-v2 ] || { echo "pod-ctr-net: no shim in L1"; exit 2; }
for m in llc stp bridge veth sch_ingress cls_u32 act_mirred; do
  grep -q "^$m " /proc/modules || { echo "pod-ctr-net: no module $m in L1"; exit 1; }
done
procs() {  # number of processes whose command line matches the regex $1 (no pgrep in L1)
  n=0
  for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' 2>/dev/null < "$f" | grep -q -- "$1" && n=$((n + 1)); done
  echo $n
}

# The node's CNI network (CNI spec v0.4.0 "Parameters"), one pod namespace and one peer.
d=/tmp/ctdnet
mkdir -p $d/logs /run/netns
$IP netns add podnet1 && $IP netns add peer1 || exit 1
netns=$($IP netns list > /dev/null; for p in /run/netns/podnet1 /var/run/netns/podnet1; do [ -e $p ] && echo $p && break; done)
cat > $d/cni.json <<JSON
{"cniVersion": "0.4.0", "name": "kestrelnet", "type": "bridge", "bridge": "kcni9", "isGateway": true,
 "ipMasq": false, "mtu": 1400, "ipam": {"type": "host-local", "dataDir": "$d/ipam",
 "ranges": [[{"subnet": "10.88.9.0/24", "gateway": "10.88.9.1"}], [{"subnet": "fd00:88:9::/64", "gateway": "fd00:88:9::1"}]],
 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}
JSON
# A second network for the pod (as Multus adds): net1 on bridge kcni10, IPv4 only, no default route.
cat > $d/cni2.json <<JSON
{"cniVersion": "0.4.0", "name": "kestrelnet2", "type": "bridge", "bridge": "kcni10", "isGateway": true,
 "ipMasq": false, "mtu": 1500, "ipam": {"type": "host-local", "dataDir": "$d/ipam",
 "ranges": [[{"subnet": "10.88.10.0/24", "gateway": "10.88.10.1"}]]}}
JSON
cni() {  # cni COMMAND CONTAINERID NETNS [IFNAME CONF]
  env -i CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS="$3" CNI_IFNAME="${4:-eth0}" CNI_PATH=/usr/lib/cni \
    PATH=/usr/sbin:/usr/bin:/bin /usr/lib/cni/bridge < "${5:-$d/cni.json}"
}
cni ADD podnet1 "$netns" > $d/cni-pod.json || { cat $d/cni-pod.json; exit 1; }
cni ADD podnet1 "$netns" net1 $d/cni2.json > $d/cni-pod2.json || { cat $d/cni2.json $d/cni-pod2.json; exit 1; }
cni ADD peer1 "${netns%podnet1}peer1" > $d/cni-peer.json || { cat $d/cni-peer.json; exit 1; }
for f in $d/cni-pod.json $d/cni-pod2.json; do sed 's/^/POD-NET-CNI /' $f; echo; done  # no final newline
pod_cidr=$($IP -n podnet1 -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9./]*\) .*/\1/p')
pod_ip=${pod_cidr%/*}
nested_value l1.pod.cidr "$pod_cidr"
pod_cidr6=$($IP -n podnet1 -6 -o addr show dev eth0 scope global | sed -n 's/.* inet6 \([0-9a-f:/]*\) .*/\1/p')
nested_value l1.pod.cidr6 "$pod_cidr6"
nested_value l1.pod.mac "$($IP -n podnet1 -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\) .*/\1/p')"
net1_cidr=$($IP -n podnet1 -4 -o addr show dev net1 | sed -n 's/.* inet \([0-9./]*\) .*/\1/p')
nested_value l1.pod.net1_cidr "$net1_cidr"
nested_value l1.pod.net1_mac "$($IP -n podnet1 -o link show net1 | sed -n 's/.*link\/ether \([0-9a-f:]*\) .*/\1/p')"

# containerd of its own (state under $d), the image on the native snapshotter.
start_containerd $d
c="ctr -a $d/containerd.sock -n default"
$c images import --snapshotter native /usr/share/kestrel/busybox-oci.tar > /dev/null

# The sandbox container: answers one TCP connection on 7777 (sends a line, keeps what it got).
timeout -s KILL 600 $c run -d --snapshotter native --runtime io.containerd.kestrel.v2 \
  --with-ns "network:$netns" \
  --annotation io.kubernetes.cri.sandbox-id=podnet1 --annotation io.kubernetes.cri.container-type=sandbox \
  docker.io/kestrel/busybox:test podnet1 \
  sh -c 'echo pod-says-hello | busybox nc -l -p 7777 > /tmp/got; sleep 1000'
rc=$?
nested_value l1.run.rc "$rc"
tail -n 20 $d/logs/*/shim.log 2>/dev/null | sed 's/^/POD-NET-SHIMLOG /'
nested_value l1.running.taps "$($IP -n podnet1 -o link show | grep -c 'tap[0-9]*_kestrel')"
$IP netns exec podnet1 $TC filter show dev eth0 ingress > $d/tc-veth 2>&1
sed 's/^/POD-NET-TC /' $d/tc-veth
grep -q "Egress Redirect to device tap0_kestrel" $d/tc-veth && nested_value l1.tc.veth_redirect 1

# What the guest sees, from inside the container (it shares the VM's network; l1.guest.*):
# every non-lo interface's MAC, MTU, IPv4 and global IPv6 addresses, and the routes.
timeout -s KILL 120 $c task exec --exec-id netinfo podnet1 sh -c '
  for n in /sys/class/net/*; do
    [ "${n##*/}" = lo ] && continue
    echo "if ${n##*/} $(cat $n/address) $(cat $n/mtu) $(busybox ip -4 -o addr show dev ${n##*/} | busybox awk "{print \$4}")"
    busybox ip -6 -o addr show dev ${n##*/} scope global | busybox awk "{print \"if6 \" \$2 \" \" \$4}"
  done
  busybox ip route | busybox sed "s/^/route /"
  busybox ip -6 route | busybox sed "s/^/route6 /"' > $d/netinfo 2>&1
sed 's/^/POD-NET-GUEST /' $d/netinfo
# The interface that has the pod's address (values are from the guest's own view).
line=$(grep "^if .* $pod_cidr\$" $d/netinfo | head -n 1)
set -- $line
nested_value l1.guest.name "${2:-none}"
nested_value l1.guest.mac "${3:-none}"
nested_value l1.guest.mtu "${4:-none}"
nested_value l1.guest.addr "${5:-none}"
nested_value l1.guest.default_via "$(sed -n 's/^route default via \([0-9.]*\) .*/\1/p' $d/netinfo | head -n 1)"
nested_value l1.guest.addr6 "$(sed -n 's/^if6 [^ ]* \([0-9a-f:/]*\)$/\1/p' $d/netinfo | head -n 1)"
nested_value l1.guest.default_via6 "$(sed -n 's/^route6 default via \([0-9a-f:]*\) .*/\1/p' $d/netinfo | head -n 1)"
line=$(grep "^if .* $net1_cidr\$" $d/netinfo | head -n 1)
set -- $line
nested_value l1.guest.net1_name "${2:-none}"
nested_value l1.guest.net1_mac "${3:-none}"
nested_value l1.guest.net1_addr "${5:-none}"

# The node (L1's root namespace, the bridge's gateway address) and the peer reach the pod IP.
n=0 i=0
while [ $i -lt 20 ] && [ $n -lt 3 ]; do
  ping -c 1 -W 5 "$pod_ip" > /dev/null 2>&1 && n=$((n + 1)); i=$((i + 1))
done
nested_value l1.node_ping.received "$n"
n=0 i=0
while [ $i -lt 20 ] && [ $n -lt 2 ]; do
  ping -6 -c 1 -W 5 "${pod_cidr6%/*}" > /dev/null 2>&1 && n=$((n + 1)); i=$((i + 1))
done
nested_value l1.node_ping6.received "$n"
n=0 i=0
while [ $i -lt 20 ] && [ $n -lt 2 ]; do
  ping -c 1 -W 5 "${net1_cidr%/*}" > /dev/null 2>&1 && n=$((n + 1)); i=$((i + 1))
done
nested_value l1.node_ping_net1.received "$n"
n=0 i=0
while [ $i -lt 20 ] && [ $n -lt 2 ]; do
  $IP netns exec peer1 ping -c 1 -W 5 "$pod_ip" > /dev/null 2>&1 && n=$((n + 1)); i=$((i + 1))
done
nested_value l1.peer_ping.received "$n"
# One TCP exchange: L1 sends a line, the pod's nc sends its own back.
said=$(echo l1-says-hi | timeout 60 nc -w 10 "$pod_ip" 7777)
nested_value l1.tcp.pod_said "${said:-none}"
got=$(timeout -s KILL 120 $c task exec --exec-id got podnet1 cat /tmp/got)
nested_value l1.guest.tcp_got "${got:-none}"

# Teardown as containerd does it: the task, then the container; the shim exits (Shutdown).
$c task kill -s SIGKILL podnet1
i=0
while [ "$($c task ls | awk '$1 == "podnet1" { print $3 }')" != STOPPED ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
$c task delete podnet1 > /dev/null
$c container delete podnet1
i=0
while [ "$(procs '[c]ontainerd-shim-kestrel')" != 0 ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
nested_value l1.after.shim "$(procs '[c]ontainerd-shim-kestrel')"
nested_value l1.after.kestrel "$(procs '[/]nested/bin/kestrel')"
$IP -n podnet1 -o link show | sed 's/^/POD-NET-AFTER /'
nested_value l1.after.taps "$($IP -n podnet1 -o link show | grep -c kestrel)"
nested_value l1.after.ingress "$($IP netns exec podnet1 $TC qdisc show | grep -c ingress)"
nested_value l1.after.filters "$($IP netns exec podnet1 $TC filter show dev eth0 ingress | grep -c .)"
nested_value l1.after.pod_eth0 "$($IP -n podnet1 -o link show eth0 | grep -c eth0)"
nested_value l1.after.net1_filters "$($IP netns exec podnet1 $TC filter show dev net1 ingress | grep -c .)"
nested_value l1.after.shim_detached "$(grep -c 'pod network .*: taps and filters removed' $d/logs/*/shim.log)"
for f in $d/logs/*/*; do echo "== $f"; tail -n 12 "$f"; done
echo "== containerd.log"; grep -v 'level=info' $d/containerd.log | tail -n 20

# A SIGKILLed shim: the taps die with its and kestrel's fds; containerd's cleanup runs the
# shim's `delete`, which must kill kestrel and remove our filters and qdiscs from the veths.
timeout -s KILL 600 $c run -d --snapshotter native --runtime io.containerd.kestrel.v2 --with-ns "network:$netns" \
  --annotation io.kubernetes.cri.sandbox-id=podnet2 --annotation io.kubernetes.cri.container-type=sandbox \
  docker.io/kestrel/busybox:test podnet2 sh -c 'sleep 1000'
nested_value l1.dead.taps_before "$($IP -n podnet1 -o link show | grep -c 'tap[0-9]*_kestrel')"
for f in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' 2>/dev/null < "$f" | grep -q '^[^ ]*containerd-shim-kestrel-v2 '; then
    p=${f#/proc/}; p=${p%/cmdline}; echo "killing shim $p"; kill -9 "$p"
  fi
done
i=0
while [ "$($c task ls | awk '$1 == "podnet2" { print $3 }')" = RUNNING ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
sleep 1
nested_value l1.dead.kestrel_after "$(procs '[/]nested/bin/kestrel')"
nested_value l1.dead.taps_after "$($IP -n podnet1 -o link show | grep -c kestrel)"
nested_value l1.dead.ingress_after "$($IP netns exec podnet1 $TC qdisc show | grep -c ingress)"
$c task delete podnet2 > /dev/null 2>&1
$c container delete podnet2

cni DEL podnet1 "$netns" net1 $d/cni2.json > /dev/null
cni DEL podnet1 "$netns" > /dev/null
cni DEL peer1 "${netns%podnet1}peer1" > /dev/null
$IP netns del podnet1; $IP netns del peer1; $IP link del kcni9 2> /dev/null; $IP link del kcni10 2> /dev/null
kill $ctd; wait $ctd 2>/dev/null
exit 0
