#!/bin/sh
# Guest half of vsock (the guest is CID 3): an echo listener on port 1234 for one connection
# from L1, and a random stream sent out to the host (CID 2) port 5000.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|pci|vsock'
wait_for /dev/vsock || fail "no /dev/vsock"
timeout 180 socat VSOCK-LISTEN:1234 EXEC:cat &
listener=$!
echo "KESTREL-VSOCK-LISTENING port=1234"
head -c "$(random_size 2097152 4194304)" /dev/urandom > /tmp/g2h
value guest.g2h.size "$(stat -c %s /tmp/g2h)"
value guest.g2h.sha256 "$(sha256 /tmp/g2h)"
timeout 120 socat -u FILE:/tmp/g2h VSOCK-CONNECT:2:5000
value guest.g2h.rc $?
# The listener ends once L1 has connected, sent its data and closed its half.
wait "$listener"
value guest.echo.rc $?
