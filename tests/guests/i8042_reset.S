/* i8042_reset: asks the keyboard controller to pulse the reset line (command 0xFE to port
 * 0x64); the VMM must treat that as a guest reset (kestrel exits 3). If the write is ignored
 * the guest spins for a bounded time and then exits 97 instead of hanging. */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	movb	$I8042_CMD_RESET, %al
	outb	%al, $I8042_CMD_PORT
	/* A VMM may act on the reset asynchronously (QEMU does); give it time before
	 * declaring the write ignored. ~3.5 s when every instruction is emulated. */
	movl	$2500000, %ecx
1:	decl	%ecx
	jnz	1b
	guest_exit EXIT_RESET_IGNORED
