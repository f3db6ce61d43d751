#!/bin/sh
# containerd 1.6 (Debian's) runs a busybox container in a kestrel pod VM through
# containerd-shim-kestrel-v2: `ctr run --runtime io.containerd.kestrel.v2` with containerd's
# state under /tmp, a local OCI image (tools/build-pod-image.sh, no registry), the native
# snapshotter (L1 has no overlay module). The container's output and exit code must reach
# ctr; its memory and command line must be the pod VM's, not L1's. Then a detached
# container: exec (output, exit code), ps, pause/resume (the VM), SIGTERM, delete; then a
# SIGKILLed shim, cleaned up by containerd through the shim's `delete`; then a pod of two
# containers grouped by the CRI annotations (one shim, one VM). Afterwards no
# kestrel, shim, socket, state directory or bundle mount may be left.
# L1 gets the shim, the pod initramfs and the image from tools/build-pod-image.sh, which
# tools/nested/build-l1.sh runs when the shim was built beside kestrel.
#@ timeout 900
#@ expect-script-rc 0
#@ l1-binaries /usr/bin/containerd /usr/bin/ctr /usr/sbin/mke2fs /usr/bin/script /usr/sbin/runc?
#@ expect-line ^POD-CTR-OUT hello from a kestrel pod$
#@ expect-value l1.ctr.rc == 7
#@ expect-value l1.loguri.file_rc == 4
#@ expect-value l1.loguri.file_lines == 2
#@ expect-value l1.loguri.binary_rc == 6
#@ expect-value l1.loguri.binary_out == bin-out
#@ expect-value l1.loguri.binary_err == bin-err
#@ expect-value l1.loguri.binary_args == c1g default --tag t1
#@ expect-value l1.ctr.guest_cmdline_has_agent_initrd == 1
#@ expect-value l1.ctr.memtotal_kb < 300000
#@ expect-line ^POD-EXEC-OUT exec says hi$
#@ expect-line ^POD-STDIN-OUT line two$
#@ expect-line ^POD-STDIN-OUT stdin closed$
#@ expect-value l1.stdin.rc == 0
#@ expect-value l1.tty.rc == 5
#@ expect-line ^POD-TTY-OUT (\^@)?stdin and stdout are a terminal$
#@ expect-value l1.events.c1_exit == 1
#@ expect-value l1.events.c1_start == 1
#@ expect-value l1.events.c1_create == 1
#@ expect-value l1.events.c1_delete == 1
#@ expect-value l1.events.e1_added == 1
#@ expect-value l1.events.e1_started == 1
#@ expect-value l1.events.c2_paused == 1
#@ expect-value l1.events.c2_resumed == 1
#@ expect-value l1.exec.rc == 3
#@ expect-value l1.exec_tty.rc == 4
#@ expect-line ^POD-EXEC-TTY-OUT (\^@)?exec has a terminal$
#@ expect-value l1.ps.lines >= 1
#@ expect-value l1.metrics.pids >= 1
#@ expect-value l1.metrics.memory > 0
#@ expect-value l1.paused.status == PAUSED
#@ expect-value l1.resumed.status == RUNNING
#@ expect-value l1.killed.status == STOPPED
#@ expect-value l1.c3.kestrel_before == 1
#@ expect-value l1.c3.status_after_shim_kill == gone
#@ expect-value l1.c3.kestrel_after == 0
#@ expect-value l1.pod.kestrels == 1
#@ expect-value l1.pod.shims == 1
#@ expect-value l1.pod.same_vm == 1
#@ expect-value l1.pod.sandbox_after_app_delete == RUNNING
#@ expect-value l1.left.mounts == 0
#@ expect-line ^POD-OVERLAY-OUT overlay run 1$
#@ expect-line ^POD-OVERLAY-OUT overlay run 2$
#@ expect-value l1.overlay.cache_files_1 == 1
#@ expect-value l1.overlay.cache_files_2 == 1
#@ expect-value l1.overlay.cache_id_2 == $l1.overlay.cache_id_1
#@ expect-value l1.overlay.cached_creates == 2
#@ expect-value l1.prune.stale_unused_left == 0
#@ expect-value l1.prune.stale_in_use_left == 1
#@ expect-value l1.prune.logged == 1
#@ expect-value l1.left.kestrel == 0
#@ expect-value l1.left.shim == 0
#@ expect-value l1.left.sockets == 0
#@ expect-value l1.left.state == 0
. /nested/case-lib.sh
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
[ -x /usr/local/bin/containerd-shim-kestrel-v2 ] || { echo "pod-ctr: no shim in L1 (tools/nested/build-l1.sh adds it when the shim is built beside kestrel)"; exit 2; }
d=/tmp/ctd
mkdir -p $d/logs /etc/containerd
# overlayfs before containerd starts: its overlayfs snapshotter checks for it at load.
insmod /nested/pod-modules/overlay.ko || echo "pod-ctr: insmod overlay failed"
start_containerd $d
c="ctr -a $d/containerd.sock -n default"
$c images import --snapshotter native /usr/share/kestrel/busybox-oci.tar
# containerd's view of the shim's events: they must decode (envelope and type URL resolved).
$c events > $d/events 2>&1 &
events=$!
t0=$(date +%s)
timeout -s KILL 600 $c run --snapshotter native --runtime io.containerd.kestrel.v2 --rm docker.io/kestrel/busybox:test c1 \
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

# Phase 1b: stdin through the FIFO to the process, EOF when ctr's stdin ends.
printf 'line one\nline two\n' | timeout -s KILL 300 $c run --snapshotter native --runtime io.containerd.kestrel.v2 --rm \
  docker.io/kestrel/busybox:test c1b sh -c 'cat; echo stdin closed' > $d/in.out 2>&1
nested_value l1.stdin.rc "$?"
sed 's/^/POD-STDIN-OUT /' $d/in.out

# Phase 1c: a terminal (ctr run -t needs one of its own: script(1) gives it a pty). The
# line may start with "^@": the pty's echo of a NUL byte typed in from script's side.
timeout 300 script -qec "$c run -t --snapshotter native --runtime io.containerd.kestrel.v2 --rm docker.io/kestrel/busybox:test c1t sh -c '[ -t 0 ] && [ -t 1 ] && echo stdin and stdout are a terminal; exit 5'" /dev/null > $d/tty.out 2>&1
nested_value l1.tty.rc "$?"
tr -d '\r\000' < $d/tty.out | sed 's/^/POD-TTY-OUT /'

# Phase 1d: log URIs (`ctr run --log-uri`, containerd's shim stdio URIs): a file that gets
# both streams, and a logging program (binary://) with stdout on fd 3, stderr on fd 4.
timeout -s KILL 300 $c run --snapshotter native --runtime io.containerd.kestrel.v2 --rm --log-uri "file://$d/logfile/ctr.log" \
  docker.io/kestrel/busybox:test c1f sh -c 'echo file-out; echo file-err >&2; exit 4' > /dev/null 2>&1
nested_value l1.loguri.file_rc "$?"
sed 's/^/POD-LOGURI-FILE /' $d/logfile/ctr.log
nested_value l1.loguri.file_lines "$(grep -c -E '^file-(out|err)$' $d/logfile/ctr.log)"
cat > $d/logger <<EOF
#!/bin/sh
exec 5>&-
echo "\$CONTAINER_ID \$CONTAINER_NAMESPACE \$*" > $d/bin.args
cat <&3 > $d/bin.out &
cat <&4 > $d/bin.err
wait
EOF
chmod 755 $d/logger
timeout -s KILL 300 $c run --snapshotter native --runtime io.containerd.kestrel.v2 --rm --log-uri "binary://$d/logger?--tag=t1" \
  docker.io/kestrel/busybox:test c1g sh -c 'echo bin-out; echo bin-err >&2; exit 6' > /dev/null 2>&1
nested_value l1.loguri.binary_rc "$?"
nested_value l1.loguri.binary_out "$(cat $d/bin.out)"
nested_value l1.loguri.binary_err "$(cat $d/bin.err)"
nested_value l1.loguri.binary_args "$(cat $d/bin.args)"

# Phase 2: a detached container; exec, pids, pause/resume, SIGTERM, delete.
procs() {  # number of processes whose command line matches the regex $1 (L1's busybox has no pgrep)
  n=0
  for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f" 2>/dev/null | grep -q -- "$1" && n=$((n + 1)); done
  echo $n
}
$c run -d --snapshotter native --runtime io.containerd.kestrel.v2 docker.io/kestrel/busybox:test c2 sh -c 'sleep 1000'
timeout -s KILL 120 $c task exec --exec-id e1 c2 sh -c 'echo exec says hi; hostname; exit 3' > $d/exec.out 2>&1
nested_value l1.exec.rc "$?"
sed 's/^/POD-EXEC-OUT /' $d/exec.out
timeout 120 script -qec "$c task exec -t --exec-id e2 c2 sh -c '[ -t 0 ] && [ -t 1 ] && echo exec has a terminal; exit 4'" /dev/null > $d/exectty.out 2>&1
nested_value l1.exec_tty.rc "$?"
tr -d '\r\000' < $d/exectty.out | sed 's/^/POD-EXEC-TTY-OUT /'
$c task ps c2 | sed 's/^/POD-PS /'
nested_value l1.ps.lines "$($c task ps c2 | tail -n +2 | grep -c '[0-9]')"
$c task metrics c2 | sed 's/^/POD-METRICS /'
nested_value l1.metrics.pids "$($c task metrics c2 | awk '$1 == "pids.current" { print $2 }')"
nested_value l1.metrics.memory "$($c task metrics c2 | awk '$1 == "memory.usage" { print $2 }')"
$c task pause c2
nested_value l1.paused.status "$($c task ls | awk '$1 == "c2" { print $3 }')"
$c task resume c2
nested_value l1.resumed.status "$($c task ls | awk '$1 == "c2" { print $3 }')"
$c task kill c2
i=0
while [ "$($c task ls | awk '$1 == "c2" { print $3 }')" != STOPPED ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
nested_value l1.killed.status "$($c task ls | awk '$1 == "c2" { print $3 }')"
$c task delete c2 | sed 's/^/POD-DELETE /'
$c container delete c2

# Phase 3: the shim of a running pod is SIGKILLed: containerd's cleanup runs the shim's
# `delete`, which must kill the pod's kestrel and remove its socket and state.
$c run -d --snapshotter native --runtime io.containerd.kestrel.v2 docker.io/kestrel/busybox:test c3 sh -c 'sleep 1000'
nested_value l1.c3.kestrel_before "$(procs '[/]nested/bin/kestrel')"
for f in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' < "$f" 2>/dev/null | grep -q '^[^ ]*containerd-shim-kestrel-v2 '; then
    p=${f#/proc/}; p=${p%/cmdline}; echo "killing shim $p"; kill -9 "$p"
  fi
done
# containerd notices the closed connection, runs `delete` and drops the task.
i=0
while [ "$($c task ls | awk '$1 == "c3" { print $3 }')" = RUNNING ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
st=$($c task ls | awk '$1 == "c3" { print $3 }')
nested_value l1.c3.status_after_shim_kill "${st:-gone}"
sleep 1
nested_value l1.c3.kestrel_after "$(procs '[/]nested/bin/kestrel')"
$c task delete c3 >/dev/null 2>&1
$c container delete c3

# Phase 4: a pod of two containers grouped as the CRI plugin marks them (annotations): one
# shim, one VM; both containers see the same kernel boot id; the sandbox goes last.
ann="--annotation io.kubernetes.cri.sandbox-id=pod1"
$c run -d --snapshotter native --runtime io.containerd.kestrel.v2 $ann --annotation io.kubernetes.cri.container-type=sandbox \
  docker.io/kestrel/busybox:test pod1 sh -c 'sleep 1000'
$c run -d --snapshotter native --runtime io.containerd.kestrel.v2 $ann --annotation io.kubernetes.cri.container-type=container \
  docker.io/kestrel/busybox:test pod1-app sh -c 'sleep 1000'
nested_value l1.pod.kestrels "$(procs '[/]nested/bin/kestrel')"
nested_value l1.pod.shims "$(procs '[c]ontainerd-shim-kestrel')"
b1=$(timeout -s KILL 120 $c task exec --exec-id b1 pod1 cat /proc/sys/kernel/random/boot_id)
b2=$(timeout -s KILL 120 $c task exec --exec-id b2 pod1-app cat /proc/sys/kernel/random/boot_id)
echo "POD-BOOT-IDS $b1 $b2 (L1: $(cat /proc/sys/kernel/random/boot_id))"
if [ -n "$b1" ] && [ "$b1" = "$b2" ] && [ "$b1" != "$(cat /proc/sys/kernel/random/boot_id)" ]; then same=1; else same=0; fi
nested_value l1.pod.same_vm "$same"
$c task kill -s SIGKILL pod1-app
sleep 2
$c task delete pod1-app | sed 's/^/POD-DELETE /'
$c container delete pod1-app
nested_value l1.pod.sandbox_after_app_delete "$($c task ls | awk '$1 == "pod1" { print $3 }')"
$c task kill -s SIGKILL pod1
sleep 2
$c task delete pod1 | sed 's/^/POD-DELETE /'
$c container delete pod1
# Phase 5: the overlayfs snapshotter; the second container of an image reuses the first
# one's rootfs image (per-image cache, keyed by the layers) instead of building it again.
# The cache starts empty: earlier cases in this L1 (pod-cri) cached their images there too.
# Before the second run the cache also gets two stale entries (copies of the image, last
# used 8 days ago, beyond the default week): one unused, which taking an image from the
# cache prunes, and one a running kestrel has open as a disk (its image lock), which stays.
cache=/var/lib/kestrel-shim/images
rm -rf $cache
$c images import /usr/share/kestrel/busybox-oci.tar
for n in 1 2; do
  if [ $n = 2 ]; then
    img=$(ls $cache/*.ext4 | head -n 1)
    for k in aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb; do cp $img $cache/$k.ext4 && touch -d @$(( $(date +%s) - 8 * 86400 )) $cache/$k.ext4; done
    "$KESTREL" run --kernel /l2/vmlinux --initrd /usr/share/kestrel/pod-initrd.cpio.gz --memory 128M \
      --disk $cache/bbbbbbbbbbbbbbbb.ext4,ro > $d/holder.log 2>&1 < /dev/null &
    holder=$!
    i=0
    while ! grep -q "virtio-blk '$cache/bbbbbbbbbbbbbbbb.ext4'" $d/holder.log && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
    grep '^kestrel' $d/holder.log | sed 's/^/POD-OVERLAY-HOLDER /'
  fi
  timeout -s KILL 150 $c run --runtime io.containerd.kestrel.v2 --rm docker.io/kestrel/busybox:test ov$n \
    sh -c "echo overlay run $n; exit 0" | sed 's/^/POD-OVERLAY-OUT /'
  [ -s $d/logs ] && tail -n 5 $d/logs/*/shim.log | sed 's/^/POD-OVERLAY-SHIMLOG /'
  if [ $n = 2 ]; then
    nested_value l1.prune.stale_unused_left "$(ls $cache/aaaaaaaaaaaaaaaa.ext4 2>/dev/null | wc -l)"
    nested_value l1.prune.stale_in_use_left "$(ls $cache/bbbbbbbbbbbbbbbb.ext4 2>/dev/null | wc -l)"
    nested_value l1.prune.logged "$(cat $d/logs/*/shim.log | grep -c 'removed 1 image(s) unused for 604800 s .*1 as old kept, in use')"
    kill $holder; wait $holder 2>/dev/null
    rm -f $cache/bbbbbbbbbbbbbbbb.ext4
  fi
  nested_value l1.overlay.cache_files_$n "$(ls $cache/*.ext4 2>/dev/null | wc -l)"
  # The inode: the same file, not rebuilt (a hit only sets its mtime, "last used").
  nested_value l1.overlay.cache_id_$n "$(stat -c %i $cache/*.ext4 2>/dev/null | head -n 1)"
done
nested_value l1.overlay.cached_creates "$(cat $d/logs/*/shim.log | grep -c 'cached per image')"

sleep 2
nested_value l1.left.kestrel "$(procs '[/]nested/bin/kestrel')"
nested_value l1.left.shim "$(procs '[c]ontainerd-shim-kestrel')"
nested_value l1.left.sockets "$(ls /run/containerd/s 2>/dev/null | grep -c kestrel)"
nested_value l1.left.state "$(ls /run/kestrel-shim 2>/dev/null | wc -l)"
nested_value l1.left.mounts "$(grep -c ' /tmp/ctd/state' /proc/mounts)"
kill $events
sed 's/^/POD-EVENT /' $d/events
nested_value l1.events.c1_exit "$(grep -c '/tasks/exit .*"container_id":"c1".*"exit_status":7' $d/events)"
nested_value l1.events.c1_start "$(grep -c '/tasks/start .*"container_id":"c1"' $d/events)"
nested_value l1.events.c1_create "$(grep -c '/tasks/create .*"container_id":"c1"' $d/events)"
nested_value l1.events.c1_delete "$(grep -c '/tasks/delete .*"container_id":"c1"' $d/events)"
nested_value l1.events.e1_started "$(grep -c '/tasks/exec-started .*"exec_id":"e1"' $d/events)"
nested_value l1.events.e1_added "$(grep -c '/tasks/exec-added .*"exec_id":"e1"' $d/events)"
nested_value l1.events.c2_paused "$(grep -c '/tasks/paused .*"container_id":"c2"' $d/events)"
nested_value l1.events.c2_resumed "$(grep -c '/tasks/resumed .*"container_id":"c2"' $d/events)"
for f in $d/logs/*/*; do echo "== $f"; tail -n 40 "$f"; done
echo "== containerd.log"; grep -v 'level=info' $d/containerd.log | tail -n 30
kill $ctd; wait $ctd 2>/dev/null
[ "$rc" = 7 ]
