#!/bin/sh
# virtio-balloon with free page reporting (--free-page-reporting): the guest's virtio_balloon
# takes VIRTIO_BALLOON_F_REPORTING; 96 MiB the guest wrote and freed come back to the host
# through the reporting queue (kestrel's counters at exit: at least 64 MiB reported, none
# refused), and memory the guest uses again afterwards holds what it wrote (a 64 MiB file's
# checksum).
#@ timeout 240
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_balloon
#@ expect-line ^KESTREL-GUEST-CASE-END balloon rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.balloon.bound == 1
#@ expect-value guest.balloon.reporting == 1
#@ expect-value guest.balloon.reuse_ok == 1
#@ expect-value kestrel.balloon0.reported_bytes >= 67108864
#@ expect-value kestrel.balloon0.reports > 0
#@ expect-value kestrel.balloon0.bad_ranges == 0
#@ expect-value kestrel.balloon0.malformed_chains == 0
#@ expect-value kestrel.balloon0.queue_errors == 0
. /nested/case-lib.sh
boot_guest --timeout 220 --append "quiet kestrel.case=balloon" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M --free-page-reporting
