#!/bin/sh
# virtio-vsock through kestrel's unix-socket bridge (--vsock cid=3,socket=PATH): L1 connects to
# the guest's echo listener (`CONNECT 1234` -> `OK <port>`) and sends random data, which must
# come back unchanged; the guest connects to the host's port 5000 (kestrel dials PATH_5000,
# where socat in L1 listens) and streams random data, which L1 must receive unchanged.
#@ timeout 300
#@ expect-rc 0
#@ guest-modules virtio_pci vmw_vsock_virtio_transport
#@ guest-binaries /usr/bin/socat
#@ l1-binaries /usr/bin/socat
#@ expect-line ^KESTREL-GUEST-CASE-END vsock rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value l1.connect.reply =~ OK \d+
#@ expect-value guest.g2h.rc == 0
#@ expect-value guest.echo.rc == 0
#@ expect-value l1.echo.sha256 == $l1.h2g.sha256
#@ expect-value l1.echo.size == $l1.h2g.size
#@ expect-value guest.g2h.sha256 == $l1.g2h.sha256
#@ expect-value guest.g2h.size == $l1.g2h.size
. /nested/case-lib.sh
sock=/tmp/kestrel-vsock.sock
rm -f "$sock" "${sock}_5000" /tmp/vs-g2h /tmp/vs-echo
head -c "$(( 2097152 + $(head -c 2 /dev/urandom | od -An -tu2 | tr -d ' ') * 32 ))" /dev/urandom > /tmp/vs-h2g
nested_value l1.h2g.size "$(stat -c %s /tmp/vs-h2g)"
nested_value l1.h2g.sha256 "$(nested_sha256 /tmp/vs-h2g)"
# Host listener for the guest's connection to port 5000.
timeout 250 socat -u UNIX-LISTEN:"${sock}_5000" CREATE:/tmp/vs-g2h &
g2h_pid=$!
# Host -> guest: retried until the guest's listener is up (until then kestrel refuses the
# CONNECT and closes the socket without an OK line).
(
  i=0
  while [ "$i" -lt 150 ]; do
    i=$((i + 1))
    sleep 1
    [ -S "$sock" ] || continue
    { printf 'CONNECT 1234\n'; cat /tmp/vs-h2g; } |
      timeout 120 socat -t 30 - UNIX-CONNECT:"$sock" > /tmp/vs-echo 2>/dev/null
    head -n 1 /tmp/vs-echo | grep -q '^OK ' && break
  done
  echo "l1: host->guest connection after $i attempt(s)"
) &
h2g_pid=$!
boot_guest --timeout 240 --append "quiet kestrel.case=vsock" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M \
  --vsock "cid=3,socket=$sock"
rc=$?
kill "$h2g_pid" "$g2h_pid" 2>/dev/null
wait "$h2g_pid" "$g2h_pid" 2>/dev/null
reply=$(head -n 1 /tmp/vs-echo 2>/dev/null)
nested_value l1.connect.reply "$reply"
tail -c +$(( ${#reply} + 2 )) /tmp/vs-echo > /tmp/vs-echo.data 2>/dev/null
nested_value l1.echo.size "$(stat -c %s /tmp/vs-echo.data)"
nested_value l1.echo.sha256 "$(nested_sha256 /tmp/vs-echo.data)"
nested_value l1.g2h.size "$(stat -c %s /tmp/vs-g2h 2>/dev/null)"
nested_value l1.g2h.sha256 "$(nested_sha256 /tmp/vs-g2h 2>/dev/null)"
rm -f /tmp/vs-h2g /tmp/vs-g2h /tmp/vs-echo /tmp/vs-echo.data "$sock" "${sock}_5000"
exit "$rc"
