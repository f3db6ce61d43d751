#!/bin/sh
# Guest half of blk-ratelimit: O_DIRECT reads timed with the guest's own clock (/proc/uptime)
# on vda (bandwidth limit, then the rate a PATCH set), vdb (ops limit) and vdc (no limit: the
# nested host's own pace, and L1's mailbox). The configured rates come on the command line:
# kestrel.rl.bw1= kestrel.rl.bw2= (bytes/s) kestrel.rl.ops= (reads/s).
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|vd[a-z]|blk'
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^kestrel\.rl\.$1=//p"; }
bw1=$(arg bw1); bw2=$(arg bw2); ops=$(arg ops)
[ -n "$bw1" ] && [ -n "$bw2" ] && [ -n "$ops" ] || fail "no kestrel.rl.* rates on the command line"
for d in vda vdb vdc; do wait_for /dev/$d || fail "no /dev/$d"; done

# timed DEV BS COUNT: reads COUNT blocks of BS bytes from /dev/DEV with O_DIRECT (one
# request each); prints the seconds it took on the guest's clock.
timed() {
  read -r t0 _ < /proc/uptime
  dd if="/dev/$1" of=/dev/null bs="$2" count="$3" iflag=direct 2>/dev/null || fail "dd from /dev/$1"
  read -r t1 _ < /proc/uptime
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
# report KEY UNITS SECONDS LIMIT: the rate seen and its ratio to LIMIT in per mille.
report() {
  rate=$(awk -v n="$2" -v s="$3" 'BEGIN { printf "%.1f", n / s }')
  value "guest.$1.rate" "$rate"
  value "guest.$1.seconds" "$3"
  value "guest.$1.permille" "$(awk -v n="$2" -v s="$3" -v l="$4" 'BEGIN { printf "%d", n * 1000 / (s * l) + 0.5 }')"
  echo "blk-ratelimit: $1: $rate per second over $3 s, configured $4"
}

# Without a limit, for scale: the limits below must be well under what this host manages.
s=$(timed vdc 64k 128)
value guest.unlimited.kib_s "$(awk -v s="$s" 'BEGIN { printf "%d", 8192 / s }')"
s=$(timed vdc 4k 256)
value guest.unlimited.iops "$(awk -v s="$s" 'BEGIN { printf "%d", 256 / s }')"

# Bandwidth limit from PUT /drives: about 10 s worth in 64 KiB requests.
n=$(( bw1 * 10 / 65536 ))
s=$(timed vda 64k "$n")
report bw1 $(( n * 65536 )) "$s" "$bw1"

# L1 changes vda's limit with PATCH /drives, then writes PATCHED into vdc's first sector.
echo "KESTREL-RL-PATCH-NOW"
i=0
until [ "$(dd if=/dev/vdc bs=512 count=1 iflag=direct 2>/dev/null | head -c 7)" = PATCHED ]; do
  i=$((i + 1))
  [ "$i" -lt 600 ] || fail "L1 never said PATCHED"
  sleep 0.2
done
n=$(( bw2 * 10 / 65536 ))
s=$(timed vda 64k "$n")
report bw2 $(( n * 65536 )) "$s" "$bw2"

# Ops limit from PUT /drives: about 10 s worth of 4 KiB reads.
n=$(( ops * 10 ))
s=$(timed vdb 4k "$n")
report ops "$n" "$s" "$ops"
