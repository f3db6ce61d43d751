/* Pieces every guest links in: the PVH ELF note naming `pvh_entry`, the flat GDT, a boot
 * stack and polled COM1 output (32-bit code). */
#include "guest.h"

/* Xen PVH entry note (xen/include/public/elfnote.h, XEN_ELFNOTE_PHYS32_ENTRY = 18): a
 * 32-bit physical entry address. The PT_NOTE segment is 4-byte aligned, as Linux emits it;
 * QEMU pads the name to p_align, so any larger alignment would move the descriptor.
 * The descriptor is 4 bytes as the Xen ABI allows, but QEMU 7.2 (hw/i386/x86.c,
 * read_pvh_start_addr) reads it as a size_t, i.e. 8 bytes: the 12 zero bytes after it form
 * a valid empty note (namesz = descsz = type = 0), so those extra 4 bytes read as zero and
 * stay inside the note segment. */
	.section .note.Xen, "a", @note
	.balign 4
	.long	4, 4, 18
	.asciz	"Xen"
	.long	pvh_entry
	.long	0, 0, 0

	.section .rodata
	.balign 8
	.globl	guest_gdt, guest_gdt_desc
guest_gdt:
	.quad	0                       /* null */
	.quad	0x00cf9a000000ffff      /* 0x08: 32-bit code, base 0, limit 4 GiB */
	.quad	0x00cf92000000ffff      /* 0x10: data, base 0, limit 4 GiB */
	.quad	0x00af9a000000ffff      /* 0x18: 64-bit code (L=1, D=0) */
guest_gdt_end:
	.balign 4
	.word	0
guest_gdt_desc:
	.word	guest_gdt_end - guest_gdt - 1
	.long	guest_gdt

	.section .bss
	.balign 16
	.globl	boot_stack_top
	.skip	4096
boot_stack_top:

	.text
	.code32

/* al = byte. Polls LSR.THRE, but only for a bounded time: a VMM whose UART never reports
 * THRE should still get the byte (and the test a readable failure) rather than a hang. */
	.globl	serial_putc
serial_putc:
	pushl	%eax
	pushl	%ecx
	pushl	%edx
	movl	$100000, %ecx
	movw	$COM1_LSR, %dx
1:	inb	%dx, %al
	testb	$LSR_THRE, %al
	jnz	2f
	decl	%ecx
	jnz	1b
2:	movl	8(%esp), %eax
	movw	$COM1_PORT, %dx
	outb	%al, %dx
	popl	%edx
	popl	%ecx
	popl	%eax
	ret

/* esi = NUL-terminated string. */
	.globl	serial_puts
serial_puts:
	pushl	%eax
	pushl	%esi
1:	lodsb
	testb	%al, %al
	jz	2f
	call	serial_putc
	jmp	1b
2:	popl	%esi
	popl	%eax
	ret

/* eax = value: serial_puthex32 prints 8 hex digits, serial_puthex8 the low 2. */
	.globl	serial_puthex32, serial_puthex8
serial_puthex8:
	pushl	%eax
	pushl	%ebx
	pushl	%ecx
	movl	%eax, %ebx
	shll	$24, %ebx
	movl	$2, %ecx
	jmp	1f
serial_puthex32:
	pushl	%eax
	pushl	%ebx
	pushl	%ecx
	movl	%eax, %ebx
	movl	$8, %ecx
1:	roll	$4, %ebx
	movb	%bl, %al
	andb	$0xf, %al
	addb	$'0', %al
	cmpb	$'9', %al
	jbe	2f
	addb	$('a' - '9' - 1), %al
2:	call	serial_putc
	decl	%ecx
	jnz	1b
	popl	%ecx
	popl	%ebx
	popl	%eax
	ret
