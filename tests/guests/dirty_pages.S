/* dirty_pages: the snapshot tests' guest (needs 16 MiB of RAM). Pass n (n = 1, 2, ...)
 * checks that the first word of every 4 KiB page in [2 MiB, 14 MiB) still holds what pass
 * n-1 wrote there (pass 1 checks for zero), writes the page's pass-n value
 * (page address XOR n * 0x9e3779b1) over it, then stores n in `passes` (in this image) and
 * prints "pass XXXXXXXX\n" (n in hex) on COM1, waits 2000 port reads and starts pass n+1.
 * It never stops: the test ends it. A page that does not hold what it should prints
 * "bad page AAAAAAAA pass XXXXXXXX\n" and exits EXIT_DIRTY_PAGE_LOST through the debug-exit
 * port (with --debug-exit; without it the guest halts). So a restored guest continues from its
 * pass count and finds every page as it left it, or says which one it lost. */
#include "guest.h"

#define REGION_START 0x200000
#define REGION_END   0xe00000
#define PAGE         4096
#define GOLDEN       0x9e3779b1

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	guest_flat_setup boot_stack_top
	movl	$started, %esi
	call	serial_puts

next_pass:
	movl	passes, %ebx            /* ebx = n - 1: what the pages hold now */
	imull	$GOLDEN, %ebx, %ecx     /* ecx = (n - 1) * GOLDEN; 0 for pass 1 */
	leal	1(%ebx), %edx
	imull	$GOLDEN, %edx, %edx     /* edx = n * GOLDEN */
	movl	$REGION_START, %edi
1:	movl	%edi, %eax
	testl	%ebx, %ebx
	jz	2f                      /* pass 1: the page must still be zero */
	xorl	%ecx, %eax
	jmp	3f
2:	xorl	%eax, %eax
3:	cmpl	%eax, (%edi)
	jne	lost
	movl	%edi, %eax
	xorl	%edx, %eax
	movl	%eax, (%edi)
	addl	$PAGE, %edi
	cmpl	$REGION_END, %edi
	jb	1b

	incl	%ebx
	movl	%ebx, passes
	movl	$pass_text, %esi
	call	serial_puts
	movl	%ebx, %eax
	call	serial_puthex32
	movb	$'\n', %al
	call	serial_putc
	movl	$2000, %ecx
4:	inb	$0x80, %al
	loop	4b
	jmp	next_pass

lost:
	movl	$bad_text, %esi
	call	serial_puts
	movl	%edi, %eax
	call	serial_puthex32
	movl	$pass_word, %esi
	call	serial_puts
	leal	1(%ebx), %eax
	call	serial_puthex32
	movb	$'\n', %al
	call	serial_putc
	guest_exit EXIT_DIRTY_PAGE_LOST

	.section .rodata
started:
	.asciz	"dirty_pages: start\n"
pass_text:
	.asciz	"pass "
bad_text:
	.asciz	"bad page "
pass_word:
	.asciz	" pass "

	.data
	.align	4
passes:
	.long	0
