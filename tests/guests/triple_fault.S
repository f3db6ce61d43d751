/* triple_fault: loads an IDT with limit 0 and executes UD2. #UD cannot be delivered
 * (vector 6 is beyond the limit: #GP), neither can that #GP (#DF), nor the #DF: the CPU
 * shuts down (SDM Vol. 3A §7.15, "Interrupt 8 — Double Fault Exception") and KVM reports
 * KVM_EXIT_SHUTDOWN; kestrel must exit 4. Exit 96 if execution somehow continues. */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	lidt	empty_idt
	ud2
	guest_exit EXIT_TRIPLE_FAULT_MISSED

	.section .rodata
	.balign 8
	.word	0
empty_idt:
	.word	0       /* limit */
	.long	0       /* base */
