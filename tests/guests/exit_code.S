/* exit_code: writes 42 to the debug-exit port; the VMM must exit with 42. */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	guest_exit 42
