/* host_cannot_run: executes INT3 with an empty IDT. On hardware virtualization the #BP
 * cannot be delivered (#GP, then #DF, then shutdown: SDM Vol. 3A §6.15) and kestrel exits 4.
 * On kvm-pvm, KVM's instruction emulator cannot execute INT3 at all (test-hosts.md §1):
 * KVM_EXIT_INTERNAL_ERROR, and kestrel must exit 5 explaining that the host is emulating the
 * guest, with RIP and the instruction bytes. Either way: never a hang. Exit 96 if execution
 * somehow continues. */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	lidt	empty_idt
	int3
	guest_exit EXIT_TRIPLE_FAULT_MISSED

	.section .rodata
	.balign 8
	.word	0
empty_idt:
	.word	0       /* limit */
	.long	0       /* base */
