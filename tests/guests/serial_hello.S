/* serial_hello: checks the PVH start-info magic behind EBX, writes "kestrel-serial-ok\n"
 * to COM1 and exits 0 through the debug-exit port. Exit 80 if EBX does not point at an
 * hvm_start_info. */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	cld
	movl	$boot_stack_top, %esp
	cmpl	$HVM_START_MAGIC, (%ebx)
	jne	bad_start_info
	movl	$hello, %esi
	call	serial_puts
	guest_exit 0

bad_start_info:
	movl	$no_magic, %esi
	call	serial_puts
	guest_exit EXIT_BAD_START_INFO

	.section .rodata
hello:
	.asciz	"kestrel-serial-ok\n"
no_magic:
	.asciz	"bad-start-info: EBX does not point at hvm_start_info\n"
