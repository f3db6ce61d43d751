#!/bin/sh
# virtio-rng (--rng): the guest's hw_random core uses virtio_rng, and two 1024-byte reads of
# /dev/hwrng come back full, differ from each other and cover most byte values (expected
# about 251 distinct of 256 for 1024 random bytes; below 200 is vanishingly unlikely).
#@ timeout 200
#@ expect-rc 0
#@ guest-modules virtio_pci virtio-rng
#@ expect-line ^KESTREL-GUEST-CASE-END rng rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.rng_current =~ virtio_rng(\.\d+)?
#@ expect-value guest.rng.bytes == 1024
#@ expect-value guest.rng.distinct >= 200
#@ expect-value guest.rng.sha256 != $guest.rng2.sha256
# The bytes came through kestrel's virtio-rng (its counters at exit): at least the 2048 read.
#@ expect-value kestrel.rng0.bytes >= 2048
#@ expect-value kestrel.rng0.entropy_errors == 0
#@ expect-value kestrel.rng0.malformed_chains == 0
. /nested/case-lib.sh
boot_guest --timeout 180 --append "quiet kestrel.case=rng" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M --rng
