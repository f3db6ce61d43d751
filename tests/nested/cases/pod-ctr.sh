#!/bin/sh
# containerd 1.6 (Debian's) runs a busybox container in a kestrel pod VM through
# containerd-shim-kestrel-v2: `ctr run --runtime io.containerd.kestrel.v2` with containerd's
# state under /tmp, a local OCI image (tools/build-pod-image.sh, no registry), the native
# snapshotter (L1 has no overlay module). The container's output and exit code must reach
# ctr; its memory and command line must be the pod VM's, not L1's; afterwards no kestrel,
# shim, socket or state directory may be left.
# Needs: tools/build-pod-image.sh DIR, then run-tests --l1-extra DIR --cases pod-ctr.
#@ timeout 900
#@ expect-script-rc 0
#@ l1-binaries /usr/bin/containerd /usr/bin/ctr /usr/sbin/mke2fs /usr/sbin/runc?
#@ expect-line ^POD-CTR-OUT hello from a kestrel pod$
#@ expect-value l1.ctr.rc == 7
#@ expect-value l1.ctr.guest_cmdline_has_agent_initrd == 1
#@ expect-value l1.ctr.memtotal_kb < 300000
#@ expect-value l1.left.kestrel == 0
#@ expect-value l1.left.shim == 0
#@ expect-value l1.left.sockets == 0
#@ expect-value l1.left.state == 0
. /nested/case-lib.sh
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
[ -x /usr/local/bin/containerd-shim-kestrel-v2 ] || { echo "pod-ctr: no shim in L1 (run-tests --l1-extra from tools/build-pod-image.sh)"; exit 2; }
d=/tmp/ctd
mkdir -p $d/logs /etc/containerd
cat > $d/config.toml <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
TOML
KESTREL_SHIM_LOG_DIR=$d/logs containerd --config $d/config.toml > $d/containerd.log 2>&1 &
ctd=$!
i=0
while [ ! -S $d/containerd.sock ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
c="ctr -a $d/containerd.sock -n default"
$c images import --snapshotter native /usr/share/kestrel/busybox-oci.tar
t0=$(date +%s)
timeout 600 $c run --snapshotter native --runtime io.containerd.kestrel.v2 --rm docker.io/kestrel/busybox:test c1 \
  sh -c 'echo hello from a kestrel pod; grep MemTotal /proc/meminfo; cat /proc/cmdline; exit 7' > $d/out 2> $d/err
rc=$?
t1=$(date +%s)
sed 's/^/POD-CTR-OUT /' $d/out
sed 's/^/POD-CTR-ERR /' $d/err
nested_value l1.ctr.rc "$rc"
nested_value l1.ctr.seconds "$((t1 - t0))"
nested_value l1.ctr.memtotal_kb "$(awk '/^MemTotal/ { print $2 }' $d/out)"
# The pod VM's command line is the shim's (reboot=k), L1's is not.
if grep -q 'reboot=k' $d/out && ! grep -q 'reboot=k' /proc/cmdline; then has=1; else has=0; fi
nested_value l1.ctr.guest_cmdline_has_agent_initrd "$has"
sleep 2
nested_value l1.left.kestrel "$(pgrep -f /nested/bin/kestrel | wc -l)"
nested_value l1.left.shim "$(pgrep -f containerd-shim-kestrel | wc -l)"
nested_value l1.left.sockets "$(ls /run/containerd/s 2>/dev/null | grep -c kestrel)"
nested_value l1.left.state "$(ls /run/kestrel-shim 2>/dev/null | wc -l)"
for f in $d/logs/*/*; do echo "== $f"; tail -n 40 "$f"; done
echo "== containerd.log"; grep -v 'level=info' $d/containerd.log | tail -n 30
kill $ctd; wait $ctd 2>/dev/null
[ "$rc" = 7 ]
