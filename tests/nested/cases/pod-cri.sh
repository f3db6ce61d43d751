#!/bin/sh
# Kubernetes' CRI end to end (issue 10): containerd 1.6 (Debian's) with its CRI plugin, state
# under /tmp, runtime handler `kestrel` (io.containerd.kestrel.v2) beside runc, the CNI bridge
# + host-local, a local sandbox (pause) image and busybox image imported with ctr (no
# registry), driven by tests/cri/cri-client.py over /runtime.v1.RuntimeService and
# ImageService in crictl's order: RunPodSandbox, CreateContainer, StartContainer,
# ContainerStatus + the CRI log file, ExecSync, Exec and Attach streams (WebSocket, as kubectl
# speaks them), a second container of the same pod (with a
# configMap-like volume, block-mode volumes, an emptyDir and /dev/shm shared with a third),
# StopContainer
# (SIGTERM honoured; SIGTERM ignored -> SIGKILL after the grace period), StopPodSandbox,
# RemovePodSandbox. Then a pod whose kestrel is SIGKILLed and one whose shim is SIGKILLed,
# each stopped and removed through CRI. Afterwards no kestrel, shim, socket, state, mount,
# tap/veth or netns may be left. The pod's network: the CNI veth CRI made in the sandbox's
# namespace is carried into the VM by the shim (tap + tc mirred, the agent sets the address):
# L1 and a runc pod on the same bridge ping the kestrel pod's IP.
# L1 files: tools/build-pod-image.sh and tools/build-cri-files.sh (tools/nested/build-l1.sh).
#@ timeout 1800
#@ expect-script-rc 0
#@ l1-python
#@ l1-binaries /usr/bin/containerd /usr/bin/ctr /usr/sbin/mke2fs /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/sbin/runc /usr/bin/containerd-shim-runc-v2
#@ expect-value l1.cri.runtime_api_version == v1
#@ expect-value l1.cri.network_ready == true
#@ expect-value l1.cri.pause_image_known == 1
#@ expect-value l1.cri.busybox_image_known == 1
#@ expect-value l1.pod.state == SANDBOX_READY
#@ expect-value l1.pod.kestrels == 1
#@ expect-value l1.pod.shims == 1
#@ expect-value l1.c1.state == CONTAINER_EXITED
#@ expect-value l1.c1.exit_code == 7
#@ expect-value l1.c1.log_has_output == 1
#@ expect-value l1.c1.in_vm == 1
#@ expect-value l1.pod.vm_cpus == 2
#@ expect-value l1.pod.vm_memtotal_kb > 327680
#@ expect-value l1.pod.vm_memtotal_kb <= 393216
#@ expect-line ^POD-CRI-LOG .* stdout F hello from a CRI container$
#@ expect-value l1.exec.exit_code == 3
#@ expect-line ^POD-CRI-EXEC exec says hi$
#@ expect-value l1.c2.same_vm_as_c1 == 1
#@ expect-value l1.files.hostname == p1
#@ expect-value l1.files.resolv_nameserver == 10.88.7.1
#@ expect-value l1.files.resolv_search == kestrel.test
#@ expect-value l1.files.hosts_localhost == 1
#@ expect-value l1.files.cfg == key=value
#@ expect-value l1.files.cfg_entries == app.conf
#@ expect-value l1.files.cfg_touch_rc != 0
#@ expect-value l1.c2.same_netns_as_c1 == 1
#@ expect-value l1.c2.kestrels == 1
#@ expect-value l1.net.c2_has_pod_ip == 1
#@ expect-value l1.net.l1_ping_replies == 3
#@ expect-value l1.net.runc_pod.state == SANDBOX_READY
#@ expect-value l1.net.runc_ping.exit_code == 0
#@ expect-value l1.vol.bytes == 8388608
#@ expect-value l1.vol.read_l1_data == written-by-l1
#@ expect-value l1.vol.write_rc == 0
#@ expect-value l1.vol.pod_data_on_host == written-in-the-pod
#@ expect-value l1.vol.loop_detach_rc == 0
#@ expect-value l1.rovol.read_l1_data == written-by-l1
#@ expect-value l1.rovol.write_rc != 0
#@ expect-value l1.rovol.sector2_nonzero_bytes == 0
#@ expect-value l1.stats.cpu_ns > 0
#@ expect-value l1.stats.rss_bytes > 0
#@ expect-value l1.stats.page_faults > 0
#@ expect-value l1.stats.working_set_bytes > 0
#@ expect-value l1.stats.working_set_bytes <= $l1.stats.usage_bytes
#@ expect-value l1.stream.exec_rc == 0
#@ expect-value l1.stream.exec_stdout == got:hello-stream
#@ expect-value l1.stream.exec_stderr == to-stderr
#@ expect-value l1.stream.exec_exit_code == 5
#@ expect-value l1.stream.tty_stdout == tty-yes
#@ expect-value l1.stream.tty_exit_code == 0
#@ expect-value l1.stream.tty_size == 40 123
#@ expect-value l1.attach.rc == 0
#@ expect-value l1.attach.stdout == attached:ping,attached:bye
#@ expect-value l1.attach.c4_exit_code == 4
#@ expect-value l1.shared.empty_dir == from-c2
#@ expect-value l1.shared.shm == shm-from-c2
#@ expect-value l1.shared.node_dir_entries == 0
#@ expect-value l1.hostpath.start_rc == 1
#@ expect-value l1.hostpath.refusal_names_it == 1
#@ expect-value l1.c2.exit_code == 143
#@ expect-value l1.c3.exit_code == 137
#@ expect-value l1.pod.removed_sandboxes == 0
#@ expect-value l1.pod.removed_containers == 0
#@ expect-value l1.pk.kestrel_before == 1
#@ expect-value l1.pk.kestrel_after_kill == 0
#@ expect-value l1.pk.stop_rc == 0
#@ expect-value l1.pk.remove_rc == 0
#@ expect-value l1.ps.kestrel_before == 1
#@ expect-value l1.ps.kestrel_after_shim_kill == 0
#@ expect-value l1.ps.stop_rc == 0
#@ expect-value l1.ps.remove_rc == 0
#@ expect-value l1.left.sandboxes == 0
#@ expect-value l1.left.kestrel == 0
#@ expect-value l1.left.shim == 0
#@ expect-value l1.left.sockets == 0
#@ expect-value l1.left.state == 0
#@ expect-value l1.left.mounts == 0
#@ expect-value l1.left.links == 0
#@ expect-value l1.left.netns == 0
. /nested/case-lib.sh
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
[ -x /usr/local/bin/containerd-shim-kestrel-v2 ] || { echo "pod-cri: no shim in L1 (build it beside kestrel)"; exit 2; }
[ -f /nested/cri/api_pb2.py ] || { echo "pod-cri: no CRI client in L1 (tools/setup.sh extracts the CRI api.proto; then ninja)"; exit 2; }
d=/tmp/cri
mkdir -p $d/logs $d/cni $d/podlogs
procs() {  # number of processes whose command line matches the regex $1 (L1's busybox has no pgrep)
  n=0
  for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f" 2>/dev/null | grep -q -- "$1" && n=$((n + 1)); done
  echo $n
}
pids_of() {
  for f in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' < "$f" 2>/dev/null | grep -q -- "$1"; then p=${f#/proc/}; echo "${p%/cmdline}"; fi
  done
}
cri() { /usr/bin/python3 /nested/cri/cri-client.py --address unix://$d/containerd.sock --timeout 900 "$@"; }
# stream URL [--stdin-line TEXT]...: the WebSocket half of Exec/Attach (kubectl exec/attach)
stream() { /usr/bin/python3 /nested/cri/cri-stream.py --timeout 300 "$@"; }
links() { ls /sys/class/net | grep -c -E '^(veth|tap)'; }

cat > $d/config.toml <<TOML
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/kestrel/pause:test"
  netns_mounts_under_state_dir = true
  disable_cgroup = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      # L1's root is an initramfs, where pivot_root(2) is refused
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        NoPivotRoot = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kestrel]
      runtime_type = "io.containerd.kestrel.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
TOML
cat > $d/cni/10-kestrel-cri.conflist <<JSON
{"cniVersion": "0.4.0", "name": "kestrel-cri", "plugins": [
  {"type": "bridge", "bridge": "kcri0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$d/ipam", "ranges": [[{"subnet": "10.88.7.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
ip link set lo up  # the CRI plugin's streaming server listens on 127.0.0.1
# The CRI plugin copies the node's /etc/hosts and /etc/resolv.conf into each sandbox; L1's
# initramfs has neither.
[ -e /etc/hosts ] || echo '127.0.0.1 localhost' > /etc/hosts
[ -e /etc/resolv.conf ] || : > /etc/resolv.conf
insmod /nested/pod-modules/overlay.ko || echo "pod-cri: insmod overlay failed"
# runc (the runc pod beside the kestrel one) needs a cgroup hierarchy; L1's init mounts none.
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "pod-cri: cannot mount cgroup2"
KESTREL_SHIM_LOG_DIR=$d/logs containerd --config $d/config.toml > $d/containerd.log 2>&1 &
ctd=$!
i=0
while [ ! -S $d/containerd.sock ] && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
c="ctr -a $d/containerd.sock -n k8s.io"
$c images import /usr/share/kestrel/busybox-oci.tar
$c images import /usr/share/kestrel/pause-oci.tar

cri RuntimeService/Version '{"version": "v1"}' | sed 's/^/POD-CRI-VERSION /'
nested_value l1.cri.runtime_api_version "$(cri RuntimeService/Version '{}' --get runtime_api_version)"
cri RuntimeService/Status '{}' --get status | sed 's/^/POD-CRI-STATUS /'
nested_value l1.cri.network_ready "$(cri RuntimeService/Status '{}' --get status.conditions.1.status)"
cri ImageService/ImageStatus '{"image": {"image": "docker.io/kestrel/pause:test"}}' --get image.id | sed 's/^/POD-CRI-PAUSE-IMAGE /'
nested_value l1.cri.pause_image_known "$(cri ImageService/ImageStatus '{"image": {"image": "docker.io/kestrel/pause:test"}}' --get image.id | grep -c '^sha256:')"
nested_value l1.cri.busybox_image_known "$(cri ImageService/ImageStatus '{"image": {"image": "docker.io/kestrel/busybox:test"}}' --get image.id | grep -c '^sha256:')"

# pod_config NAME: a PodSandboxConfig (its log directory made here, as the kubelet does).
# Pod p1 has resources, the sum of its containers' limits as the kubelet (1.23+) sends them:
# one CPU (quota 100000 / period 100000) and 128 MiB, which containerd passes to the shim as
# sandbox annotations; its VM gets 1 + 1 vCPUs and 256 + 128 MiB (shim.json: 1, 256).
pod_config() {
  mkdir -p $d/podlogs/$1
  linux='{}'
  dns=''
  if [ "$1" = p1 ]; then
    linux='{"resources": {"cpu_period": 100000, "cpu_quota": 100000, "memory_limit_in_bytes": 134217728}}'
    dns=', "dns_config": {"servers": ["10.88.7.1"], "searches": ["kestrel.test"], "options": ["ndots:2"]}'
  fi
  echo "{\"metadata\": {\"name\": \"$1\", \"namespace\": \"default\", \"uid\": \"uid-$1\"}, \"hostname\": \"$1\", \"log_directory\": \"$d/podlogs/$1\", \"linux\": $linux$dns}"
}
run_pod() {  # run_pod NAME -> sandbox id
  cri RuntimeService/RunPodSandbox "{\"config\": $(pod_config $1), \"runtime_handler\": \"kestrel\"}" --get pod_sandbox_id
}
# create NAME POD-NAME POD-ID SHELL-COMMAND [MOUNTS-JSON [DEVICES-JSON]] -> container id
create() {  # create NAME POD_NAME POD_ID COMMAND [MOUNTS] [DEVICES] [MORE_CONFIG_FIELDS]
  printf '{"pod_sandbox_id": "%s", "sandbox_config": %s, "config": {"metadata": {"name": "%s"}, "image": {"image": "docker.io/kestrel/busybox:test"}, "command": ["sh", "-c", "%s"], "log_path": "%s.log", "linux": {}, "mounts": %s, "devices": %s%s}}' \
    "$3" "$(pod_config $2)" "$1" "$4" "$1" "${5:-[]}" "${6:-[]}" "${7:-}" > $d/req-$1.json
  cri RuntimeService/CreateContainer @$d/req-$1.json --get container_id
}
state() { cri RuntimeService/ContainerStatus "{\"container_id\": \"$1\"}" --get status.state; }
wait_exited() {  # wait_exited ID: until CONTAINER_EXITED (at most 600 polls)
  i=0
  while st=$(state $1) && [ "$st" != CONTAINER_EXITED ] && [ $i -lt 600 ]; do sleep 1; i=$((i + 1)); done
}
# bail WHAT: a step everything after it needs failed; the logs, then the case fails.
bail() {
  echo "POD-CRI-BAIL $1"
  for f in $d/logs/*/*; do echo "== $f"; tail -n 40 "$f"; done
  echo "== containerd.log"; grep -v 'level=info' $d/containerd.log | tail -n 40
  kill $ctd; wait $ctd 2>/dev/null
  exit 1
}
status_of() { cri RuntimeService/ContainerStatus "{\"container_id\": \"$1\"}" --get status.$2; }
l1_boot=$(cat /proc/sys/kernel/random/boot_id)
echo "POD-CRI-L1 boot_id=$l1_boot kernel=$(uname -r)"

# 1. The pod and its first container: output into the CRI log file, exit code via status.
t0=$(date +%s)
pod=$(run_pod p1)
echo "POD-CRI-POD $pod ($(( $(date +%s) - t0 )) s)"
[ -n "$pod" ] || bail "RunPodSandbox p1"
nested_value l1.pod.state "$(cri RuntimeService/PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" --get status.state)"
cri RuntimeService/PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" --get status.network --get status.linux | sed 's/^/POD-CRI-POD-STATUS /'
nested_value l1.pod.kestrels "$(procs '[/]nested/bin/kestrel')"
nested_value l1.pod.shims "$(procs '[c]ontainerd-shim-kestrel')"
# What the shim got of the pod's network namespace (recorded, not judged).
for b in $d/state/io.containerd.runtime.v2.task/k8s.io/$pod; do
  [ -f $b/config.json ] && /usr/bin/python3 -c 'import json,sys; print([n for n in json.load(open(sys.argv[1]))["linux"]["namespaces"]])' $b/config.json | sed 's/^/POD-CRI-SANDBOX-NAMESPACES /'
done
c1=$(create c1 p1 "$pod" 'echo hello from a CRI container; echo boot_id=$(cat /proc/sys/kernel/random/boot_id); echo netns=$(ls -l /proc/self/ns/net); echo cpus=$(grep -c ^processor /proc/cpuinfo) $(grep MemTotal /proc/meminfo); exit 7')
[ -n "$c1" ] || bail "CreateContainer c1"
cri RuntimeService/StartContainer "{\"container_id\": \"$c1\"}" > /dev/null || bail "StartContainer c1"
wait_exited "$c1"
nested_value l1.c1.state "$(state $c1)"
nested_value l1.c1.exit_code "$(status_of $c1 exit_code)"
status_of "$c1" reason | sed 's/^/POD-CRI-C1-REASON /'
log=$(status_of "$c1" log_path)
sed 's/^/POD-CRI-LOG /' "$log"
nested_value l1.c1.log_has_output "$(grep -c ' stdout F hello from a CRI container$' "$log")"
b1=$(sed -n 's/.* stdout F boot_id=//p' "$log")
n1=$(sed -n 's/.* stdout F netns=.*\(net:\[[0-9]*\]\).*/\1/p' "$log")
if [ -n "$b1" ] && [ "$b1" != "$l1_boot" ]; then in_vm=1; else in_vm=0; fi
nested_value l1.c1.in_vm "$in_vm"
# The VM's size from the pod's resources (the container sees the guest's /proc).
nested_value l1.pod.vm_cpus "$(sed -n 's/.* stdout F cpus=\([0-9]*\) .*/\1/p' "$log")"
nested_value l1.pod.vm_memtotal_kb "$(sed -n 's/.* stdout F cpus=.*MemTotal: *\([0-9]*\) kB.*/\1/p' "$log")"
cri RuntimeService/RemoveContainer "{\"container_id\": \"$c1\"}" > /dev/null  # frees its drive (4 per pod)

# 2. A second container in the pod, honouring SIGTERM; ExecSync into it.
# c2 also gets a read-only volume laid out as the kubelet's atomic writer makes a configMap
# (files behind ..data symlinks): host paths reach the VM by value (kestrel-copy mounts), as
# do the CRI plugin's /etc/hostname, /etc/hosts and /etc/resolv.conf (pod p1's DNS config).
mkdir -p $d/cfgvol/..2026_12_07.1
echo key=value > $d/cfgvol/..2026_12_07.1/app.conf
ln -s ..2026_12_07.1 $d/cfgvol/..data
ln -s ..data/app.conf $d/cfgvol/app.conf
# And two block-mode volumes (PVCs with volumeMode: Block, which the kubelet passes as CRI
# devices): 8 MiB loop devices of L1's, their second sector written here first; the kubelet
# gives a readOnly one permissions "r".
vol=/dev/loop3 rovol=/dev/loop4
for v in $vol $rovol; do [ -b $v ] || bail "no $v in L1 (loop.ko)"; done
for f in vol vol-ro; do
  dd if=/dev/zero of=$d/$f.img bs=1M count=8 2>/dev/null
  printf 'written-by-l1' | dd of=$d/$f.img bs=512 seek=1 conv=notrunc 2>/dev/null
done
losetup $vol $d/vol.img || bail "losetup $vol"
losetup $rovol $d/vol-ro.img || bail "losetup $rovol"
# c2 and c3 share an emptyDir (laid out as the kubelet makes it) and the pod's /dev/shm.
ed=$d/kubelet/pods/uid-p1/volumes/kubernetes.io~empty-dir/scratch
mkdir -p $ed
edm="{\"container_path\": \"/scratch\", \"host_path\": \"$ed\"}"
c2=$(create c2 p1 "$pod" 'echo c2 up; exec sleep 100000' "[{\"container_path\": \"/etc/cfg\", \"host_path\": \"$d/cfgvol\", \"readonly\": true}, $edm]" \
  "[{\"container_path\": \"/dev/kvol\", \"host_path\": \"$vol\", \"permissions\": \"rwm\"}, {\"container_path\": \"/dev/kvol-ro\", \"host_path\": \"$rovol\", \"permissions\": \"r\"}]")
[ -n "$c2" ] || bail "CreateContainer c2"
cri RuntimeService/StartContainer "{\"container_id\": \"$c2\"}" > /dev/null || bail "StartContainer c2"
cri RuntimeService/ExecSync "{\"container_id\": \"$c2\", \"cmd\": [\"sh\", \"-c\", \"echo exec says hi; echo boot_id=\$(cat /proc/sys/kernel/random/boot_id); echo netns=\$(ls -l /proc/self/ns/net); echo to stderr >&2; exit 3\"], \"timeout\": 300}" \
  --get exit_code --get stdout --get stderr > $d/exec.out
sed 's/^/POD-CRI-EXEC /' $d/exec.out
nested_value l1.exec.exit_code "$(head -n 1 $d/exec.out)"
b2=$(sed -n 's/^boot_id=//p' $d/exec.out)
n2=$(sed -n 's/^netns=.*\(net:\[[0-9]*\]\).*/\1/p' $d/exec.out)
echo "POD-CRI-IDS c1 boot_id=$b1 $n1 / c2 boot_id=$b2 $n2"
if [ -n "$b2" ] && [ "$b2" = "$b1" ]; then v=1; else v=0; fi
nested_value l1.c2.same_vm_as_c1 "$v"
if [ -n "$n2" ] && [ "$n2" = "$n1" ]; then v=1; else v=0; fi
nested_value l1.c2.same_netns_as_c1 "$v"
nested_value l1.c2.kestrels "$(procs '[/]nested/bin/kestrel')"

cri RuntimeService/ExecSync "{\"container_id\": \"$c2\", \"cmd\": [\"sh\", \"-c\", \"echo hostname=\$(cat /etc/hostname); sed 's/^/resolv: /' /etc/resolv.conf; sed 's/^/hosts: /' /etc/hosts; echo cfg=\$(cat /etc/cfg/app.conf); echo cfg_entries=\$(ls -A /etc/cfg); touch /etc/cfg/new 2>/dev/null; echo cfg_touch_rc=\$?\"], \"timeout\": 120}" \
  --get stdout > $d/files.out
sed 's/^/POD-CRI-FILES /' $d/files.out
nested_value l1.files.hostname "$(sed -n 's/^hostname=//p' $d/files.out)"
nested_value l1.files.resolv_nameserver "$(sed -n 's/^resolv: nameserver //p' $d/files.out)"
nested_value l1.files.resolv_search "$(sed -n 's/^resolv: search //p' $d/files.out)"
nested_value l1.files.hosts_localhost "$(grep -c '^hosts: 127.0.0.1 *localhost' $d/files.out)"
nested_value l1.files.cfg "$(sed -n 's/^cfg=//p' $d/files.out)"
nested_value l1.files.cfg_entries "$(sed -n 's/^cfg_entries=//p' $d/files.out)"
nested_value l1.files.cfg_touch_rc "$(sed -n 's/^cfg_touch_rc=//p' $d/files.out)"

# The block volume in the pod: its size, the sector L1 wrote, and a sector written (and
# synced) in the pod, which L1 reads from the loop device after c2 is stopped.
cri RuntimeService/ExecSync "{\"container_id\": \"$c2\", \"cmd\": [\"sh\", \"-c\", \"echo vol_bytes=\$(busybox blockdev --getsize64 /dev/kvol); echo vol_l1=\$(busybox dd if=/dev/kvol bs=512 skip=1 count=1 2>/dev/null | busybox head -c 13); printf written-in-the-pod | busybox dd of=/dev/kvol bs=512 seek=2 conv=notrunc 2>/dev/null && busybox sync; echo vol_write_rc=\$?; echo ro_l1=\$(busybox dd if=/dev/kvol-ro bs=512 skip=1 count=1 2>/dev/null | busybox head -c 13); printf nope | busybox dd of=/dev/kvol-ro bs=512 seek=2 conv=notrunc 2>/dev/null; echo ro_write_rc=\$?\"], \"timeout\": 120}" \
  --get stdout > $d/vol.out
sed 's/^/POD-CRI-VOL /' $d/vol.out
nested_value l1.vol.bytes "$(sed -n 's/^vol_bytes=//p' $d/vol.out)"
nested_value l1.vol.read_l1_data "$(sed -n 's/^vol_l1=//p' $d/vol.out)"
nested_value l1.vol.write_rc "$(sed -n 's/^vol_write_rc=//p' $d/vol.out)"
nested_value l1.rovol.read_l1_data "$(sed -n 's/^ro_l1=//p' $d/vol.out)"
nested_value l1.rovol.write_rc "$(sed -n 's/^ro_write_rc=//p' $d/vol.out)"

# The pod's network, through CRI: its IP (host-local's) is the VM's, L1 reaches it over the
# bridge, and so does a runc pod on the same bridge.
pod_ip=$(cri RuntimeService/PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" --get status.network.ip)
echo "POD-CRI-POD-IP $pod_ip"
cri RuntimeService/ExecSync "{\"container_id\": \"$c2\", \"cmd\": [\"busybox\", \"ip\", \"-4\", \"addr\"], \"timeout\": 120}" --get stdout > $d/ipaddr.out
sed 's/^/POD-CRI-C2-ADDR /' $d/ipaddr.out
nested_value l1.net.c2_has_pod_ip "$([ -n "$pod_ip" ] && grep -c "inet $pod_ip/" $d/ipaddr.out || echo 0)"
nested_value l1.net.l1_ping_replies "$(ping -c 3 -W 5 "$pod_ip" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')"
rp=$(cri RuntimeService/RunPodSandbox "{\"config\": $(pod_config r1), \"runtime_handler\": \"runc\"}" --get pod_sandbox_id)
nested_value l1.net.runc_pod.state "$(cri RuntimeService/PodSandboxStatus "{\"pod_sandbox_id\": \"$rp\"}" --get status.state)"
rc1=$(create rping r1 "$rp" "busybox ping -c 3 -W 5 $pod_ip")
cri RuntimeService/StartContainer "{\"container_id\": \"$rc1\"}" > /dev/null
wait_exited "$rc1"
nested_value l1.net.runc_ping.exit_code "$(status_of $rc1 exit_code)"
sed 's/^/POD-CRI-RUNC-PING /' "$(status_of $rc1 log_path)"
cri RuntimeService/StopPodSandbox "{\"pod_sandbox_id\": \"$rp\"}" > /dev/null
cri RuntimeService/RemovePodSandbox "{\"pod_sandbox_id\": \"$rp\"}" > /dev/null

# A read-write hostPath volume cannot be in the pod VM: StartContainer (where the CRI plugin
# creates the task, so the shim sees the spec) fails and says why; the kubelet shows it as
# the container's start error. The container is removed as the kubelet would.
mkdir -p $d/hostdir
chp=$(create chp p1 "$pod" 'true' "[{\"container_path\": \"/host\", \"host_path\": \"$d/hostdir\"}]")
cri RuntimeService/StartContainer "{\"container_id\": \"$chp\"}" > $d/hostpath.out 2>&1
nested_value l1.hostpath.start_rc "$?"
sed 's/^/POD-CRI-HOSTPATH /' $d/hostpath.out
cri RuntimeService/RemoveContainer "{\"container_id\": \"$chp\"}" > /dev/null
nested_value l1.hostpath.refusal_names_it "$(grep -c "bind mount $d/hostdir on /host: a node path a kestrel pod VM cannot have (read-write" $d/hostpath.out)"

# 3. A third one ignoring SIGTERM: StopContainer's grace period ends in SIGKILL. It runs
# beside c2, from the same image (the shim's per-image cache then gives it a copy).
c3=$(create c3 p1 "$pod" 'trap \"\" TERM; echo c3 up; while true; do sleep 1; done' "[$edm]")
[ -n "$c3" ] || bail "CreateContainer c3"
cri RuntimeService/StartContainer "{\"container_id\": \"$c3\"}" > /dev/null || bail "StartContainer c3"
# ContainerStats (kubectl top, the kubelet's eviction): the CRI plugin's RSS is memory.stat's
# anon, its working set memory.current less inactive_file (the agent's cpu.stat/memory.stat).
cri RuntimeService/ContainerStats "{\"container_id\": \"$c2\"}" --get stats.cpu.usage_core_nano_seconds.value \
  --get stats.memory.usage_bytes.value --get stats.memory.working_set_bytes.value --get stats.memory.rss_bytes.value \
  --get stats.memory.page_faults.value > $d/stats.out
sed 's/^/POD-CRI-STATS /' $d/stats.out
nested_value l1.stats.cpu_ns "$(sed -n 1p $d/stats.out)"
nested_value l1.stats.usage_bytes "$(sed -n 2p $d/stats.out)"
nested_value l1.stats.working_set_bytes "$(sed -n 3p $d/stats.out)"
nested_value l1.stats.rss_bytes "$(sed -n 4p $d/stats.out)"
nested_value l1.stats.page_faults "$(sed -n 5p $d/stats.out)"
# Exec and Attach as kubectl exec -i / exec -t / attach speak them: the CRI call returns a URL
# on containerd's streaming server, and the streams go over WebSocket (channel protocol v4).
url=$(cri RuntimeService/Exec "{\"container_id\": \"$c2\", \"cmd\": [\"sh\", \"-c\", \"read x; echo got:\$x; echo to-stderr >&2; exit 5\"], \"stdin\": true, \"stdout\": true, \"stderr\": true}" --get url)
echo "POD-CRI-STREAM exec url $url"
stream "$url" --stdin-line hello-stream > $d/stream.out
nested_value l1.stream.exec_rc "$?"
sed 's/^/POD-CRI-STREAM /' $d/stream.out
nested_value l1.stream.exec_stdout "$(sed -n 's/^stdout //p' $d/stream.out)"
nested_value l1.stream.exec_stderr "$(sed -n 's/^stderr //p' $d/stream.out)"
nested_value l1.stream.exec_exit_code "$(sed -n 's/^exit_code //p' $d/stream.out)"
# kubectl exec -t sends the terminal's size on the resize channel; containerd passes it on
# with ResizePty, which happens beside the process's start: the process waits (at most
# 10 s) for the size to show, then prints it.
url=$(cri RuntimeService/Exec "{\"container_id\": \"$c2\", \"cmd\": [\"sh\", \"-c\", \"[ -t 0 ] && [ -t 1 ] && echo tty-yes; i=0; while [ \\\"\$(stty size)\\\" != '40 123' ] && [ \$i -lt 50 ]; do sleep 0.2; i=\$((i + 1)); done; echo size \$(stty size)\"], \"stdin\": true, \"stdout\": true, \"tty\": true}" --get url)
stream "$url" --resize 123x40 > $d/stream-tty.out
sed 's/^/POD-CRI-STREAM-TTY /' $d/stream-tty.out
nested_value l1.stream.tty_stdout "$(sed -n 's/^stdout //p' $d/stream-tty.out | tr -d '\r' | head -n 1)"
nested_value l1.stream.tty_size "$(sed -n 's/^stdout size //p' $d/stream-tty.out | tr -d '\r')"
nested_value l1.stream.tty_exit_code "$(sed -n 's/^exit_code //p' $d/stream-tty.out)"
# What c2 writes in the emptyDir and /dev/shm, c3 reads; none of it is on the node.
cri RuntimeService/ExecSync "{\"container_id\": \"$c2\", \"cmd\": [\"sh\", \"-c\", \"echo from-c2 > /scratch/note && echo shm-from-c2 > /dev/shm/note\"], \"timeout\": 120}" \
  --get exit_code | sed 's/^/POD-CRI-SHARED-WRITE /'
cri RuntimeService/ExecSync "{\"container_id\": \"$c3\", \"cmd\": [\"sh\", \"-c\", \"echo scratch=\$(cat /scratch/note); echo shm=\$(cat /dev/shm/note)\"], \"timeout\": 120}" \
  --get stdout > $d/shared.out
sed 's/^/POD-CRI-SHARED /' $d/shared.out
nested_value l1.shared.empty_dir "$(sed -n 's/^scratch=//p' $d/shared.out)"
nested_value l1.shared.shm "$(sed -n 's/^shm=//p' $d/shared.out)"
nested_value l1.shared.node_dir_entries "$(ls -A $ed | wc -l)"
t0=$(date +%s)
cri RuntimeService/StopContainer "{\"container_id\": \"$c2\", \"timeout\": 60}" > /dev/null
t1=$(date +%s)
cri RuntimeService/StopContainer "{\"container_id\": \"$c3\", \"timeout\": 5}" > /dev/null
t2=$(date +%s)
nested_value l1.c2.exit_code "$(status_of $c2 exit_code)"
nested_value l1.c2.stop_seconds "$((t1 - t0))"
nested_value l1.c3.exit_code "$(status_of $c3 exit_code)"
nested_value l1.c3.stop_seconds "$((t2 - t1))"
for x in $c2 $c3; do sed 's/^/POD-CRI-LOG /' "$(status_of $x log_path)"; done
# c2 is stopped (its task deleted): the volume's drive was swapped out of the pod VM, and
# what the pod wrote is on the host device.
nested_value l1.vol.pod_data_on_host "$(dd if=$vol bs=512 skip=2 count=1 2>/dev/null | head -c 18)"
nested_value l1.rovol.sector2_nonzero_bytes "$(dd if=$rovol bs=512 skip=2 count=1 2>/dev/null | tr -d '\000' | wc -c)"
losetup -d $vol && losetup -d $rovol
nested_value l1.vol.loop_detach_rc "$?"

# c4's main process reads its stdin (a container with stdin open): Attach feeds it two lines.
# (After c2 and c3 stopped: their rootfs drives are free again.)
c4=$(create c4 p1 "$pod" 'while read l; do echo attached:$l; case $l in bye) exit 4;; esac; done' '[]' '[]' ', "stdin": true')
[ -n "$c4" ] || bail "CreateContainer c4"
cri RuntimeService/StartContainer "{\"container_id\": \"$c4\"}" > /dev/null || bail "StartContainer c4"
url=$(cri RuntimeService/Attach "{\"container_id\": \"$c4\", \"stdin\": true, \"stdout\": true, \"stderr\": true}" --get url)
stream "$url" --stdin-line ping --stdin-line bye > $d/attach.out
nested_value l1.attach.rc "$?"
sed 's/^/POD-CRI-ATTACH /' $d/attach.out
nested_value l1.attach.stdout "$(sed -n 's/^stdout //p' $d/attach.out | tr '\n' , | sed 's/,$//')"
wait_exited $c4
nested_value l1.attach.c4_exit_code "$(status_of $c4 exit_code)"
cri RuntimeService/RemoveContainer "{\"container_id\": \"$c4\"}" > /dev/null

cri RuntimeService/StopPodSandbox "{\"pod_sandbox_id\": \"$pod\"}" > /dev/null
cri RuntimeService/RemovePodSandbox "{\"pod_sandbox_id\": \"$pod\"}" > /dev/null
nested_value l1.pod.removed_sandboxes "$(cri RuntimeService/ListPodSandbox '{}' | grep -c "$pod")"
nested_value l1.pod.removed_containers "$(cri RuntimeService/ListContainers '{}' | grep -c "$pod")"

# 4. A pod whose kestrel is SIGKILLed, then one whose shim is: CRI stops and removes both,
# and containerd's cleanup (the shim's exit path, or its `delete`) leaves no kestrel.
pk=$(run_pod pk)
nested_value l1.pk.kestrel_before "$(procs '[/]nested/bin/kestrel')"
for p in $(pids_of '^[/]nested/bin/kestrel '); do echo "POD-CRI killing kestrel $p"; kill -9 "$p"; done
sleep 2
nested_value l1.pk.kestrel_after_kill "$(procs '[/]nested/bin/kestrel')"
cri RuntimeService/PodSandboxStatus "{\"pod_sandbox_id\": \"$pk\"}" --get status.state | sed 's/^/POD-CRI-PK-STATE /'
cri RuntimeService/StopPodSandbox "{\"pod_sandbox_id\": \"$pk\"}" > /dev/null
nested_value l1.pk.stop_rc "$?"
cri RuntimeService/RemovePodSandbox "{\"pod_sandbox_id\": \"$pk\"}" > /dev/null
nested_value l1.pk.remove_rc "$?"

ps=$(run_pod ps)
nested_value l1.ps.kestrel_before "$(procs '[/]nested/bin/kestrel')"
for p in $(pids_of '^[^ ]*containerd-shim-kestrel-v2 '); do echo "POD-CRI killing shim $p"; kill -9 "$p"; done
i=0
while [ "$(procs '[/]nested/bin/kestrel')" != 0 ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
nested_value l1.ps.kestrel_after_shim_kill "$(procs '[/]nested/bin/kestrel')"
cri RuntimeService/PodSandboxStatus "{\"pod_sandbox_id\": \"$ps\"}" --get status.state | sed 's/^/POD-CRI-PS-STATE /'
cri RuntimeService/StopPodSandbox "{\"pod_sandbox_id\": \"$ps\"}" > /dev/null
nested_value l1.ps.stop_rc "$?"
cri RuntimeService/RemovePodSandbox "{\"pod_sandbox_id\": \"$ps\"}" > /dev/null
nested_value l1.ps.remove_rc "$?"

sleep 2
nested_value l1.left.sandboxes "$(cri RuntimeService/ListPodSandbox '{}' | grep -c '"id"')"
nested_value l1.left.kestrel "$(procs '[/]nested/bin/kestrel')"
nested_value l1.left.shim "$(procs '[c]ontainerd-shim-kestrel')"
nested_value l1.left.sockets "$(ls /run/containerd/s 2>/dev/null | grep -c kestrel)"
nested_value l1.left.state "$(ls /run/kestrel-shim 2>/dev/null | wc -l)"
nested_value l1.left.mounts "$(grep -c " $d/" /proc/mounts)"
nested_value l1.left.links "$(links)"
nested_value l1.left.netns "$(ls $d/state/io.containerd.grpc.v1.cri/netns 2>/dev/null | wc -l)"
grep " $d/" /proc/mounts | sed 's/^/POD-CRI-LEFT-MOUNT /'
ls /sys/class/net | sed 's/^/POD-CRI-LINK /'
for f in $d/logs/*/*; do echo "== $f"; tail -n 30 "$f"; done
echo "== containerd.log"; grep -v 'level=info' $d/containerd.log | tail -n 40
kill $ctd; wait $ctd 2>/dev/null
[ "$in_vm" = 1 ]
