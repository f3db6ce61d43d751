/* smp_ap: the boot vCPU starts the second one with the INIT-SIPI-SIPI sequence of the
 * MultiProcessor Specification 1.4, §B.4, through the xAPIC ICR (SDM Vol. 3A §11.6.1); its
 * delays are bounded loops. The AP starts in real mode at CS = vector << 8, IP = 0, runs a
 * 16-bit trampoline copied below 1 MiB that enters protected mode on this image's GDT, reads
 * its APIC ID, prints "ap-alive\n" and then raises a flag in memory. The BSP polls the flag
 * for 2^34 TSC cycles at most, prints "apic-ids bsp=XX ap=XX\n" and then "smp-ok\n".
 * Exit 0 if BSP ID is 0 and AP ID is 1, 98 on other IDs, 99 if the AP never came up. */
#include "guest.h"

/* Page-aligned, below 1 MiB, clear of kestrel's boot structures (0x500..0xefff, command
 * line at 0x20000..0x2ffff) and of the EBDA at 0x9fc00. */
#define TRAMPOLINE_ADDR  0x70000
#define SIPI_VECTOR      (TRAMPOLINE_ADDR >> 12)
#define ICR_INIT_ALL_BUT_SELF  0x000c4500   /* shorthand 11b, level assert, INIT */
#define ICR_SIPI_ALL_BUT_SELF  0x000c4600   /* shorthand 11b, level assert, start-up */
#define AP_ALIVE_MAGIC   0x600dc0de
/* How long the BSP waits for the AP's flag, in TSC cycles: the high word of the 64-bit count
 * (4 << 32 = 2^34 cycles, 5 to 9 s at 2 to 3.5 GHz). A count of polls is no bound: the AP's
 * "ap-alive" is 9 port writes, each an exit to the VMM, and in the nested test host one exit
 * costs as much as millions of the BSP's polls. */
#define AP_WAIT_TSC_HIGH 4

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	guest_flat_setup boot_stack_top

	movl	LAPIC_BASE + LAPIC_ID, %eax
	shrl	$24, %eax
	movl	%eax, bsp_apic_id
	/* Software-enable the LAPIC, spurious vector 0xff (SDM §11.9). */
	movl	$0x1ff, LAPIC_BASE + LAPIC_SVR

	movl	$ap_trampoline, %esi
	movl	$TRAMPOLINE_ADDR, %edi
	movl	$(ap_trampoline_end - ap_trampoline), %ecx
	rep movsb

	movl	$ICR_INIT_ALL_BUT_SELF, %eax
	call	send_ipi
	movl	$20000, %ecx           /* MP spec: 10 ms; a VMM delivers INIT at once */
	call	delay
	movl	$(ICR_SIPI_ALL_BUT_SELF | SIPI_VECTOR), %eax
	call	send_ipi
	movl	$2000, %ecx            /* MP spec: 200 us */
	call	delay
	movl	$(ICR_SIPI_ALL_BUT_SELF | SIPI_VECTOR), %eax
	call	send_ipi               /* ignored by an AP already started by the first */

	rdtsc
	movl	%eax, %esi
	movl	%edx, %edi
1:	cmpl	$AP_ALIVE_MAGIC, ap_alive
	je	ap_up
	pause
	rdtsc
	subl	%esi, %eax
	sbbl	%edi, %edx
	cmpl	$AP_WAIT_TSC_HIGH, %edx
	jb	1b
	movl	$msg_timeout, %esi
	call	serial_puts
	guest_exit EXIT_SMP_TIMEOUT

ap_up:
	movl	$msg_ids_bsp, %esi
	call	serial_puts
	movl	bsp_apic_id, %eax
	call	serial_puthex8
	movl	$msg_ids_ap, %esi
	call	serial_puts
	movl	ap_apic_id, %eax
	call	serial_puthex8
	movb	$'\n', %al
	call	serial_putc
	cmpl	$0, bsp_apic_id
	jne	wrong_ids
	cmpl	$1, ap_apic_id
	jne	wrong_ids
	movl	$msg_ok, %esi
	call	serial_puts
	guest_exit 0
wrong_ids:
	guest_exit EXIT_SMP_WRONG_IDS

/* eax = ICR low word. Waits (bounded) for the previous IPI to leave the LAPIC first. */
send_ipi:
	pushl	%ecx
	movl	$100000, %ecx
1:	testl	$ICR_BUSY, LAPIC_BASE + LAPIC_ICR_LO
	jz	2f
	decl	%ecx
	jnz	1b
2:	movl	$0, LAPIC_BASE + LAPIC_ICR_HI
	movl	%eax, LAPIC_BASE + LAPIC_ICR_LO
	popl	%ecx
	ret

/* ecx = iterations. */
delay:
	decl	%ecx
	jnz	delay
	ret

/* The AP after the trampoline: 32-bit protected mode on guest_gdt. */
ap_entry32:
	movw	$SEL_DATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movl	$ap_stack_top, %esp
	cld
	movl	LAPIC_BASE + LAPIC_ID, %eax
	shrl	$24, %eax
	movl	%eax, ap_apic_id
	movl	$msg_ap_alive, %esi
	call	serial_puts
	/* Raised last, so the BSP's output never interleaves with ours. */
	movl	$AP_ALIVE_MAGIC, ap_alive
1:	hlt
	jmp	1b

/* Copied to TRAMPOLINE_ADDR; position-independent within its segment (CS = 0x7000). */
	.code16
ap_trampoline:
	cli
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	ap_gdt_desc - ap_trampoline
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_CODE32, $ap_entry32
	.balign 4
ap_gdt_desc:
	.word	0x1f                    /* guest_gdt: 4 descriptors */
	.long	guest_gdt
ap_trampoline_end:
	.code32

	.section .rodata
msg_ap_alive:	.asciz	"ap-alive\n"
msg_ids_bsp:	.asciz	"apic-ids bsp="
msg_ids_ap:	.asciz	" ap="
msg_ok:		.asciz	"smp-ok\n"
msg_timeout:	.asciz	"smp-timeout: AP never raised its flag\n"

	.section .data
	.balign 4
ap_alive:	.long	0
ap_apic_id:	.long	0xffffffff
bsp_apic_id:	.long	0xffffffff

	.section .bss
	.balign 16
	.skip	1024
ap_stack_top:
