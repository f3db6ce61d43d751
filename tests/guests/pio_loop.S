/* pio_loop: 100000 reads of the unclaimed port 0x80 (each one a KVM_EXIT_IO that kestrel
 * dispatches to no device), then exit 0 through the debug-exit port. For benchmarks of what
 * one vCPU exit costs in kestrel (tools/bench-metrics.sh: with and without metrics). */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	movl	$100000, %ecx
1:	inb	$0x80, %al
	loop	1b
	guest_exit 0
