#!/bin/sh
# PUT /actions SendCtrlAltDel (Firecracker's i8042 Ctrl-Alt-Del), two boots through the API:
# "fc" with the boot arguments Firecracker users pass (i8042.noaux i8042.nomux i8042.nopnp
# i8042.dumbkbd: no mouse port, no keyboard probe; kestrel drops i8042.nopnp, which cannot work
# under hardware-reduced ACPI: vmm/guest_cmdline.hpp) and "plain" with none. Both find the
# i8042 as \_SB.KBD (PNP0303); atkbd probes the keyboard in "plain" only. Each time the guest's PID 1 gets SIGINT
# from the kernel's ctrl_alt_del() and powers off: kestrel exits 0 with no reset.
#@ timeout 600
#@ expect-rc 0
#@ guest-modules virtio_pci
#@ l1-binaries /usr/bin/curl
#@ expect-line ^KESTREL-GUEST-CASE-END cad rc=0$
#@ expect-line ^KESTREL-GUEST-SIGINT uptime=
#@ reject-line KESTREL-GUEST-NO-SIGINT|KESTREL-GUEST-MODULE-FAILED|guest requested a reset
#@ expect-line i8042.nopnp dropped from the guest's command line
#@ expect-value l1.fc.cad.http == 204
#@ expect-value l1.plain.cad.http == 204
#@ expect-value l1.early.cad.http == 400
#@ expect-value l1.fc.rc == 0
#@ expect-value l1.plain.rc == 0
#@ expect-value guest.fc.cad_sysctl == 0
#@ expect-value guest.fc.keyboard == AT Raw Set 2 keyboard
#@ expect-value guest.plain.keyboard == AT Raw Set 2 keyboard
#@ expect-value guest.fc.nopnp_given == 0
#@ expect-value guest.fc.i8042 =~ PNP: PS/2 Controller \[PNP0303:KBD_?\] at 0x60,0x64 irq \d+
#@ expect-value guest.fc.irq1_line =~ IO-APIC 1-edge i8042
#@ expect-value guest.plain.i8042 =~ PNP: PS/2 Controller \[PNP0303:KBD_?\] at 0x60,0x64 irq \d+
#@ expect-value guest.plain.irq1_line =~ IO-APIC 1-edge i8042
#@ expect-value guest.fc.irq1_at_sigint >= 11
#@ expect-value guest.fc.irq1_at_sigint > $guest.fc.irq1_before
#@ expect-value guest.plain.irq1_at_sigint > $guest.plain.irq1_before
. /nested/case-lib.sh

call() {  # SOCKET METHOD PATH [BODY] -> prints the HTTP status, body to /tmp/cad.out
  curl -s -o /tmp/cad.out -w '%{http_code}' --unix-socket "$1" -X "$2" "http://localhost$3" \
    ${4:+-H 'Content-Type: application/json' -d "$4"}
}

boot() {  # TAG EXTRA-BOOT-ARGS
  tag=$1
  api=/tmp/cad-$tag.sock con=/tmp/cad-$tag.console
  rm -f "$api" "$con"
  "$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info > /tmp/cad-$tag.log 2>&1 &
  kpid=$!
  for i in $(seq 50); do [ -S "$api" ] && break; sleep 0.1; done
  # Before InstanceStart there is no guest to type to.
  [ "$tag" = fc ] && nested_value l1.early.cad.http "$(call "$api" PUT /actions '{"action_type": "SendCtrlAltDel"}')"
  token="kestrel.token=cad-$tag-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=cad kestrel.tag=$tag kestrel.sigint=poweroff${2:+ $2}"
  echo "NESTED-CMDLINE $args"
  call "$api" PUT /boot-source "{\"kernel_image_path\": \"$L2/vmlinuz\", \"initrd_path\": \"$L2/initrd.cpio.gz\", \"boot_args\": \"$args\"}" > /dev/null
  call "$api" PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256}' > /dev/null
  r=$(call "$api" PUT /actions '{"action_type": "InstanceStart"}')
  [ "$r" = 204 ] || echo "cad: InstanceStart answered $r: $(cat /tmp/cad.out)"
  read -r t0 _ < /proc/uptime
  for i in $(seq 800); do grep -q KESTREL-CAD-READY "$con" 2>/dev/null && break; sleep 0.25; done
  nested_value "l1.$tag.cad.http" "$(call "$api" PUT /actions '{"action_type": "SendCtrlAltDel"}')"
  wait "$kpid"
  rc=$?
  read -r t1 _ < /proc/uptime
  cat "$con"
  cat /tmp/cad-$tag.log
  echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=-1"
  nested_value "l1.$tag.rc" "$rc"
  rm -f "$con" /tmp/cad-$tag.log
}

boot fc "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
boot plain ""
exit 0
