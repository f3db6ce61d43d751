#!/bin/sh
# /init of the L2 (guest) initramfs. Reports what the guest kernel saw as one marker line
# for the host-side checks, runs the per-case guest scripts, then powers off (kestrel exit 0
# via ACPI S5). Marker lines:
#   KESTREL-GUEST-INIT uptime=<s>         guest /proc/uptime when /init started
#   KESTREL-GUEST cpus=<n> online=<list> memtotal_kb=<n> cmdline=<exact /proc/cmdline>
#   KESTREL-GUEST-CASE-BEGIN <name> / KESTREL-GUEST-CASE-END <name> rc=<n>
#   KESTREL-GUEST-DONE
#   KESTREL-GUEST-SIGINT uptime=<s>       (kestrel.sigint=poweroff) SIGINT came; powering off
# Per-case scripts: /etc/kestrel/case.sh (put in with build-guest-initramfs.sh --extra) and
# /cases/NAME.sh for every `kestrel.case=NAME` on the kernel command line.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
hostname kestrel-guest
read -r up _ < /proc/uptime
echo "KESTREL-GUEST-INIT uptime=$up"

if [ -s /etc/kestrel/modules ]; then
  while read -r m; do
    insmod "/lib/modules/$m" || echo "KESTREL-GUEST-MODULE-FAILED $m"
  done < /etc/kestrel/modules
fi

# kestrel.sigint=poweroff (the SendCtrlAltDel case): PID 1 powers off on SIGINT, which the
# kernel sends it for Ctrl-Alt-Del once /proc/sys/kernel/ctrl-alt-del is 0 — what a real init
# sets at start (the kernel's default, 1, reboots at once). A case script may leave
# /tmp/kestrel-on-sigint.sh for the handler to run first. Without the flag nothing changes.
sigint_poweroff=0
case " $(cat /proc/cmdline) " in *" kestrel.sigint=poweroff "*) sigint_poweroff=1 ;; esac
if [ "$sigint_poweroff" = 1 ]; then
  echo 0 > /proc/sys/kernel/ctrl-alt-del
  trap 'read -r up _ < /proc/uptime; echo "KESTREL-GUEST-SIGINT uptime=$up"
        [ -f /tmp/kestrel-on-sigint.sh ] && sh /tmp/kestrel-on-sigint.sh
        sync; poweroff -f' INT
fi

cpus=$(grep -c '^processor' /proc/cpuinfo)
online=$(cat /sys/devices/system/cpu/online 2>/dev/null)
memtotal=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
echo "KESTREL-GUEST cpus=$cpus online=$online memtotal_kb=$memtotal cmdline=$(cat /proc/cmdline)"

run_case() { # NAME SCRIPT
  echo "KESTREL-GUEST-CASE-BEGIN $1"
  sh "$2"
  echo "KESTREL-GUEST-CASE-END $1 rc=$?"
}
[ -f /etc/kestrel/case.sh ] && run_case extra /etc/kestrel/case.sh
for word in $(cat /proc/cmdline); do
  case $word in
    kestrel.case=*)
      name=${word#kestrel.case=}
      if [ -f "/cases/$name.sh" ]; then run_case "$name" "/cases/$name.sh"
      else echo "KESTREL-GUEST-CASE-MISSING $name"; fi ;;
  esac
done

if [ "$sigint_poweroff" = 1 ]; then
  # A trapped signal ends `wait` at once, and the trap runs (a foreground sleep would delay it).
  echo "KESTREL-GUEST-AWAIT-SIGINT"
  sleep 180 &
  wait $!
  echo "KESTREL-GUEST-NO-SIGINT"
fi
echo "KESTREL-GUEST-DONE"
sync
poweroff -f
# Only reached if the power-off did not take (no ACPI S5): the kernel then panics on init
# exiting, and panic=-1 reboot=k turn that into a reset the VMM reports.
sleep 5
