#!/bin/sh
# Guest half of tools/bench-guest.sh (/cases/bench-io.sh in /l2/bench-io.cpio.gz): block
# patterns on /dev/vda with O_DIRECT, then TCP streams to and from L1 (10.0.2.1) over the tap.
# Settings from the kernel command line: bench.seconds=S per block pattern, bench.mib=N per
# stream, bench.patterns=blk,net (either or both), bench.blk=LABEL,... (a subset of the block
# patterns, default all). guest_load prints one GUEST-LOAD line per
# pattern, timed with this guest's clock.
. /etc/kestrel/guest-lib.sh
secs=5 mib=64 patterns=blk,net only=all
for w in $(cat /proc/cmdline); do
  case $w in
    bench.seconds=*) secs=${w#*=} ;;
    bench.mib=*) mib=${w#*=} ;;
    bench.patterns=*) patterns=${w#*=} ;;
    bench.blk=*) only=${w#*=} ;;
  esac
done
load=/usr/bin/guest_load

case ,$patterns, in *,blk,*)
  wait_for /dev/vda || fail "no /dev/vda"
  echo "BENCH-GUEST vda queues=$(ls /sys/block/vda/mq | wc -l) scheduler=$(cat /sys/block/vda/queue/scheduler | tr ' ' ,) size_bytes=$(( $(cat /sys/block/vda/size) * 512 ))"
  # Untimed first pass: the guest's buffers and the first touches of guest RAM (nested page
  # faults in L1) are not part of any figure.
  $load blk /dev/vda --rw randread --bs 4096 --qd 32 --seconds 1 --label warmup > /dev/null || fail "warm-up I/O failed"
  while read -r label rw bs qd; do
    case ,$only, in ,all,|*,$label,*) ;; *) continue ;; esac
    $load blk /dev/vda --rw "$rw" --bs "$bs" --qd "$qd" --seconds "$secs" --label "$label" || fail "$label failed"
  done <<PATTERNS
4k-randread-qd1 randread 4096 1
4k-randread-qd32 randread 4096 32
128k-seqread-qd4 read 131072 4
128k-seqwrite-qd4 write 131072 4
PATTERNS
  ;;
esac

case ,$patterns, in *,net,*)
  GUEST_DMESG='virtio|eth[0-9]'
  wait_for /sys/class/net/eth0 || fail "no eth0"
  ip addr add 10.0.2.2/24 dev eth0 && ip link set eth0 up || fail "eth0 set-up failed"
  $load tcp-send 10.0.2.1:5001 --mib "$mib" --label tcp-guest-to-l1 || fail "stream to L1 failed"
  $load tcp-recv 10.0.2.1:5002 --label tcp-l1-to-guest || fail "stream from L1 failed"
  ;;
esac
