#!/bin/sh
# Pods, kestrel next to runc in this one L1 (tools/bench-pod.sh builds the run; settings in
# /nested/bench/params): containerd 1.6 with its state under /tmp, the local busybox image
# (tools/build-pod-image.sh), the native snapshotter.
#  start: `ctr run --rm` of a container that prints one line, timed by guest_load from exec
#         to that line (pod start: for kestrel the pod VM's boot included) and to ctr's exit;
#         BENCH_ROUNDS rounds, the order alternating.
#  memory: one idle container (`sleep`) per runtime; the PSS (/proc/PID/smaps_rollup) of every
#         process that serves it — kestrel (guest RAM touched included) + its shim, or the
#         runc shim + the container's processes — 5 s and 20 s after ctr returned; kestrel
#         also with the shim's free page reporting off (kestrel-nofpr).
# Lines: BENCH-RESULT vmm=V round=R start_ms=S exit_ms=E ok=0|1 and BENCH-MEM vmm=V pss_kb=K.
# ctr's create path, not the CRI plugin's RunPodSandbox (not measured here).
#@ timeout 7200
#@ l1-binaries /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc /usr/sbin/mke2fs
#@ allow-line .
. /nested/bench/lib.sh
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
d=/tmp/ctd
mkdir -p $d
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
# runc puts each container in a cgroup: L1's init mounts none.
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup || echo "bench-pod: no cgroup2"
containerd --config $d/config.toml > $d/containerd.log 2>&1 &
i=0
while [ ! -S $d/containerd.sock ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
c="ctr -a $d/containerd.sock -n bench"
$c images import --snapshotter native /usr/share/kestrel/busybox-oci.tar > /dev/null
img=docker.io/kestrel/busybox:test
runtime() { case $1 in kestrel) echo io.containerd.kestrel.v2 ;; runc) echo io.containerd.runc.v2 ;; esac; }
# runc cannot pivot_root out of L1's initramfs root: --no-pivot (for runc only).
opts() { [ "$1" = runc ] && echo --no-pivot; }

r=1
while [ "$r" -le "$BENCH_ROUNDS" ]; do
  for v in $(bench_order "$r" "runc kestrel"); do
    # shellcheck disable=SC2046
    timeout 600 "$LOAD" time --mark pod-is-up --label "$v" -- \
      $c run --rm --snapshotter native --runtime "$(runtime $v)" $(opts $v) $img "s$r$v" echo pod-is-up > /tmp/bp.out 2>&1
    line=$(grep 'GUEST-LOAD time' /tmp/bp.out)
    start=$(echo "$line" | sed -n 's/.*exec_to_mark_ms=\([0-9.-]*\).*/\1/p')
    exit_ms=$(echo "$line" | sed -n 's/.*exec_to_exit_ms=\([0-9.]*\).*/\1/p')
    rc=$(echo "$line" | sed -n 's/.* rc=\([0-9-]*\).*/\1/p')
    ok=0; [ "$rc" = 0 ] && grep -q '^pod-is-up' /tmp/bp.out && ok=1
    [ "$ok" = 1 ] || { echo "bench-pod: $v round $r failed:"; tail -n 5 /tmp/bp.out; }
    echo "BENCH-RESULT vmm=$v round=$r start_ms=${start:-0} exit_ms=${exit_ms:-0} ok=$ok"
  done
  r=$((r + 1))
done

pss_of() {  # total Pss kB of the processes whose command line matches regex $1
  t=0
  for p in /proc/[0-9]*; do
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "$1" || continue
    k=$(awk '/^Pss:/ { print $2 }' "$p/smaps_rollup" 2>/dev/null)
    t=$((t + ${k:-0}))
  done
  echo $t
}
# kestrel twice: with the shim's default (free page reporting on), then with it off
# (kestrel-nofpr), each sampled 5 s and 20 s after `ctr run -d` returned.
cp /etc/kestrel/shim.json /tmp/shim.json.orig
for v in runc kestrel kestrel-nofpr; do
  rt=${v%-nofpr}
  if [ "$v" = kestrel-nofpr ]; then
    sed 's/^{/{"free_page_reporting": false, /' /tmp/shim.json.orig > /etc/kestrel/shim.json
  fi
  # shellcheck disable=SC2046
  $c run -d --snapshotter native --runtime "$(runtime $rt)" $(opts $rt) $img "idle$v" sleep 100000
  for wait in 5 15; do
    sleep $wait
    if [ "$rt" = kestrel ]; then
      pss=$(pss_of '^/nested/bin/kestrel run\|containerd-shim-kestrel-v2')
    else
      pss=$(pss_of 'containerd-shim-runc-v2\|^sleep 100000')
    fi
    [ "$wait" = 5 ] && echo "BENCH-MEM vmm=$v pss_kb=$pss" || echo "BENCH-MEM vmm=$v@20s pss_kb=$pss"
  done
  $c task kill -s KILL "idle$v"; sleep 2; $c task delete "idle$v" > /dev/null 2>&1; $c container delete "idle$v"
done
cp /tmp/shim.json.orig /etc/kestrel/shim.json
echo "BENCH-DONE"
