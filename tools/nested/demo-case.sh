#!/bin/sh
# L1 half of tools/demo.sh in the nested test host: boots the Debian kernel under kestrel
# into the demo guest case (tests/nested/guest-cases/demo.sh); interactive when the L1 console
# is the user's terminal (run-tests --interactive), scripted otherwise.
#@ timeout 600
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-line ^kestrel-guest:.*# nproc
#@ expect-line ^KESTREL-DEMO-DONE
. /nested/case-lib.sh
mode=scripted
[ "${NESTED_INTERACTIVE:-0}" = 1 ] && mode=interactive
boot_guest --timeout 590 --append "kestrel.case=demo kestrel.demo=$mode" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 512M
