/* serial_flood: prints to COM1 forever, as fast as the host runs it, and never exits on its
 * own. Each line is "flood <8 hex digits of a line counter> " followed by a fixed 64-byte
 * text and "\n". The kvm runner points kestrel's serial output at something that never takes
 * the bytes (a pipe nobody reads, /dev/full, a FIFO whose reader never reads) and checks that
 * SIGTERM still ends kestrel promptly.
 *
 * The fixed text goes out with REP OUTSB and without polling LSR.THRE: the point is the
 * highest byte rate, and kestrel's THR is always empty (transmit is instantaneous from the
 * guest's view, devices/legacy/uart16550.hpp). kvm-pvm's emulator runs REP OUTSB as one port
 * write per byte; no IRET, INT or extended state anywhere (guest.h). */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	cld
	movl	$boot_stack_top, %esp
	movl	$start, %esi
	call	serial_puts
	xorl	%edi, %edi          /* line counter */
line:
	movl	$prefix, %esi
	call	serial_puts
	movl	%edi, %eax
	call	serial_puthex32
	movl	$text, %esi
	movl	$(text_end - text), %ecx
	movw	$COM1_PORT, %dx
	rep outsb
	incl	%edi
	jmp	line

	.section .rodata
start:
	.asciz	"serial-flood-start\n"
prefix:
	.asciz	"flood "
text:
	.ascii	" abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 012345678\n"
text_end:
