/* long_mode: switches itself from the PVH 32-bit entry into 64-bit long mode (SDM Vol. 3A
 * §10.8.5 "Initializing IA-32e Mode": PAE paging tables, CR4.PAE, EFER.LME, CR0.PG, then a
 * far jump to a code segment with L=1), checks EFER.LMA, computes fib(90) and a 64x64
 * multiply in 64-bit registers and prints "long-mode-ok fib90=27f80ddaa1ba7878\n".
 * Exit 0 on success, 81 if a check fails. About 4k instructions. */
#include "guest.h"

#define MSR_EFER   0xc0000080
#define EFER_LME   (1 << 8)
#define EFER_LMA   10           /* bit number */
#define CR4_PAE    (1 << 5)
#define CR0_PE_PG  0x80000001
#define PTE_P_RW   0x3
#define PDE_2M     0x83         /* P | RW | PS */

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	guest_flat_setup boot_stack_top

	/* Identity-map the first 2 MiB (this image, its stack and tables) with one 2 MiB page. */
	movl	$pml4, %edi
	xorl	%eax, %eax
	movl	$(3 * 4096 / 4), %ecx
	rep stosl
	movl	$(pdpt + PTE_P_RW), pml4
	movl	$(pd + PTE_P_RW), pdpt
	movl	$PDE_2M, pd
	movl	$pml4, %eax
	movl	%eax, %cr3

	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$CR0_PE_PG, %eax
	movl	%eax, %cr0
	ljmp	$SEL_CODE64, $long64

	.code64
long64:
	movl	$boot_stack_top, %esp   /* zero-extends: RSP's upper half is undefined here */
	movl	$MSR_EFER, %ecx
	rdmsr
	btl	$EFER_LMA, %eax
	jnc	wrong

	xorl	%eax, %eax              /* fib(0) */
	movl	$1, %ebx                /* fib(1) */
	movl	$90, %ecx
1:	leaq	(%rax, %rbx), %rdx
	movq	%rbx, %rax
	movq	%rdx, %rbx
	decl	%ecx
	jnz	1b
	movabsq	$0x27f80ddaa1ba7878, %rdx
	cmpq	%rdx, %rax
	jne	wrong
	movq	%rax, %r15

	movabsq	$0x123456789, %rax
	movabsq	$0x987654321, %rcx
	imulq	%rcx, %rax
	movabsq	$0xd77d742cce1833a9, %rdx
	cmpq	%rdx, %rax
	jne	wrong

	movl	$msg_ok, %esi
	call	puts64
	movq	%r15, %rax
	call	puthex64
	movb	$'\n', %al
	call	putc64
	guest_exit 0

wrong:
	movl	$msg_wrong, %esi
	call	puts64
	guest_exit EXIT_LONG_MODE_WRONG

/* 64-bit twins of lib.S's serial routines (those are 32-bit code). */
putc64:
	pushq	%rax
	pushq	%rcx
	pushq	%rdx
	movl	$100000, %ecx
	movw	$COM1_LSR, %dx
1:	inb	%dx, %al
	testb	$LSR_THRE, %al
	jnz	2f
	decl	%ecx
	jnz	1b
2:	movq	16(%rsp), %rax
	movw	$COM1_PORT, %dx
	outb	%al, %dx
	popq	%rdx
	popq	%rcx
	popq	%rax
	ret

puts64:
	pushq	%rax
	pushq	%rsi
1:	lodsb
	testb	%al, %al
	jz	2f
	call	putc64
	jmp	1b
2:	popq	%rsi
	popq	%rax
	ret

puthex64:
	pushq	%rax
	pushq	%rbx
	pushq	%rcx
	movq	%rax, %rbx
	movl	$16, %ecx
1:	rolq	$4, %rbx
	movb	%bl, %al
	andb	$0xf, %al
	addb	$'0', %al
	cmpb	$'9', %al
	jbe	2f
	addb	$('a' - '9' - 1), %al
2:	call	putc64
	decl	%ecx
	jnz	1b
	popq	%rcx
	popq	%rbx
	popq	%rax
	ret

	.section .rodata
msg_ok:		.asciz	"long-mode-ok fib90="
msg_wrong:	.asciz	"long-mode-wrong\n"

	.section .bss
	.balign 4096
pml4:	.skip	4096
pdpt:	.skip	4096
pd:	.skip	4096
