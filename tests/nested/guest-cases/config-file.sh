#!/bin/sh
# Guest half of config-file (after blk-ro's): the NIC and the RNG the configuration file gave.
. /etc/kestrel/guest-lib.sh
wait_for /sys/class/net/eth0/address || fail "no eth0 (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
value guest.mac "$(cat /sys/class/net/eth0/address)"
wait_for /sys/class/misc/hw_random/rng_current || fail "no hw_random device"
value guest.rng_current "$(cat /sys/class/misc/hw_random/rng_current)"
