/* serial_echo: reads COM1 by polling LSR.DR until it receives 0x04, then prints
 * "echo-count=<hex> sum=<hex>\n" (byte count and 32-bit byte sum, 0x04 excluded) and
 * exits 0. The kvm runner types into kestrel through a pseudo-terminal, so this checks that
 * terminal input reaches the guest whole, including a paste larger than the UART's buffers.
 * Polling only: no interrupt handler (no IRET on kvm-pvm). */
#include "guest.h"

#define LSR_DR 0x01

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	cld
	movl	$boot_stack_top, %esp
	movl	$ready, %esi
	call	serial_puts
	xorl	%edi, %edi          /* count */
	xorl	%ebp, %ebp          /* sum */
poll:
	movw	$COM1_LSR, %dx
	inb	%dx, %al
	testb	$LSR_DR, %al
	jz	poll
	movw	$COM1_PORT, %dx
	inb	%dx, %al
	cmpb	$0x04, %al
	je	done
	movzbl	%al, %eax
	addl	%eax, %ebp
	incl	%edi
	jmp	poll
done:
	movl	$count_label, %esi
	call	serial_puts
	movl	%edi, %eax
	call	serial_puthex32
	movl	$sum_label, %esi
	call	serial_puts
	movl	%ebp, %eax
	call	serial_puthex32
	movl	$newline, %esi
	call	serial_puts
	guest_exit 0

	.section .rodata
ready:
	.asciz	"echo-ready\n"
count_label:
	.asciz	"echo-count="
sum_label:
	.asciz	" sum="
newline:
	.asciz	"\n"
