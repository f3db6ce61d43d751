#!/bin/sh
# The console both ways with real Linux: kestrel runs on a pseudo-terminal (socat, as under a
# user's terminal: kestrel then reads stdin in raw mode), the guest prints a READY line and
# L1 types 6000 bytes of base64 text, which the guest's tty must receive unchanged (sha256
# on both sides), through UART receive interrupts.
#@ timeout 300
#@ expect-rc 0
#@ l1-binaries /usr/bin/socat
#@ expect-line ^KESTREL-GUEST-CASE-END console rc=0$
#@ expect-value guest.console.bytes == 6000
#@ expect-value guest.console.sha256 == $l1.console.sha256
#@ expect-value guest.ttyS0.rx_irqs >= 1
. /nested/case-lib.sh
rm -f /tmp/con-in /tmp/con-out /tmp/con-rc
head -c 4500 /dev/urandom | base64 -w 76 | head -c 6000 > /tmp/con-typed
nested_value l1.console.sha256 "$(nested_sha256 /tmp/con-typed)"
mkfifo /tmp/con-in
exec 3<>/tmp/con-in   # held open: socat must not see EOF on its stdin mid-session
# kestrel on the slave side of a pty; socat relays the pty to stdin/stdout (tee'd so the
# typist below can wait for the guest's READY line).
cat > /tmp/con-kestrel <<'WRAP'
#!/bin/sh
{ printf 'exec /nested/bin/kestrel'; for a in "$@"; do printf " '%s'" "$a"; done; echo; } > /tmp/con-run.sh
socat STDIO SYSTEM:"sh /tmp/con-run.sh; echo \$? > /tmp/con-rc",pty,setsid,ctty,rawer < /tmp/con-in | tee /tmp/con-out
exit "$(cat /tmp/con-rc 2>/dev/null || echo 255)"
WRAP
chmod +x /tmp/con-kestrel
(
  i=0
  until grep -q KESTREL-GUEST-CONSOLE-READY /tmp/con-out 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 2400 ] && exit 1; sleep 0.1
  done
  sleep 0.5
  cat /tmp/con-typed > /tmp/con-in
) &
typist=$!
KESTREL=/tmp/con-kestrel boot_guest --timeout 240 --append "quiet kestrel.case=console" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M
rc=$?
kill "$typist" 2>/dev/null
exec 3>&-
rm -f /tmp/con-in /tmp/con-out /tmp/con-rc /tmp/con-run.sh /tmp/con-kestrel /tmp/con-typed
exit "$rc"
