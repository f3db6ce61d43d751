#!/bin/sh
# Guest half of blk-swap: vda starts as L1's 1 MiB placeholder, read in a loop (O_DIRECT, so
# requests are in flight when the swap comes); after READY, L1 swaps in a bigger image. The
# virtio_blk driver gets the config-change interrupt and logs "new size"; the guest then
# reads the whole new disk, again with O_DIRECT (no page of the old image is cached).
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|vd[a-z]|blk|I/O error'
wait_for /dev/vda || fail "no /dev/vda"
before=$(cat /sys/block/vda/size)
value guest.size.before "$before"
( while [ ! -e /tmp/stop ]; do dd if=/dev/vda of=/dev/null bs=64k iflag=direct 2>/dev/null; done ) &
echo "KESTREL-SWAP-READY"
i=0
while [ "$(cat /sys/block/vda/size)" = "$before" ] && [ "$i" -lt 600 ]; do sleep 0.25; i=$((i + 1)); done
: > /tmp/stop
wait
value guest.size.after "$(cat /sys/block/vda/size)"
value guest.newsize.logged "$(dmesg | grep -c 'vda.*new size')"
dmesg | grep -E 'virtio_blk|vda' | sed 's/^/guest-dmesg: /'
value guest.disk.sha256 "$(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
value guest.io_errors "$(dmesg | grep -c 'I/O error')"
