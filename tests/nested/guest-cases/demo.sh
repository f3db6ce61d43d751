#!/bin/sh
# Guest half of tools/demo.sh (kestrel.case=demo). kestrel.demo=interactive: a busybox shell on
# the console until the user leaves it (exit / Ctrl-D), then the init powers the guest off.
# Otherwise a scripted session typed into a real interactive shell (-v echoes each command
# after the prompt, as if typed), ending with KESTREL-DEMO-DONE.
mode=scripted
for word in $(cat /proc/cmdline); do
  case $word in kestrel.demo=*) mode=${word#kestrel.demo=} ;; esac
done
export PS1='kestrel-guest:$PWD# ' HOME=/root TERM=${TERM:-linux}
cd /root
echo
echo "=== Linux $(uname -r) booted under kestrel: $(grep -c '^processor' /proc/cpuinfo) vCPUs, $(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo) MiB ==="
if [ "$mode" = interactive ]; then
  echo "=== Busybox shell on the guest console. 'exit' (or Ctrl-D) powers the guest off. ==="
  setsid cttyhack sh -l
else
  printf '%s\n' 'uname -a' 'nproc' 'free -m' 'cat /proc/cmdline' | sh -iv 2>&1 | grep -v 'job control turned off'
  echo
  echo "KESTREL-DEMO-DONE"
fi
