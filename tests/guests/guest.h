/* Shared constants and macros for the kvm suite's freestanding guests (GNU as, AT&T syntax,
 * run through the C preprocessor). Every guest is entered per the Xen PVH boot ABI
 * (xen/include/public/arch-x86/hvm/start_info.h): 32-bit protected mode, paging off, flat
 * CS/DS/ES/SS of unspecified selectors, EBX = physical address of hvm_start_info.
 *
 * The guests must run on a host whose KVM emulates every instruction (kvm-pvm, see
 * shared/notes/test-hosts.md §1): no IRET, INT n, INT3, XSAVE or CMPXCHG16B anywhere, and
 * no more than a few tens of thousands of instructions on the success path. */
#pragma once

#define COM1_PORT        0x3f8
#define COM1_LSR         (COM1_PORT + 5)
#define LSR_THRE         0x20         /* 16550 LSR bit 5: transmit holding register empty */
#define DEBUG_EXIT_PORT  0xf4         /* isa-debug-exit compatible; kestrel exits with V & 0xff */
#define I8042_CMD_PORT   0x64
#define I8042_CMD_RESET  0xfe         /* pulse the CPU reset line */

#define HVM_START_MAGIC  0x336ec578   /* hvm_start_info.magic, "xEn3" with bit 31 of "n" set */

#define LAPIC_BASE       0xfee00000   /* xAPIC MMIO default base (SDM Vol. 3A §11.4.1) */
#define LAPIC_ID         0x20         /* bits 31:24 = xAPIC ID */
#define LAPIC_SVR        0xf0
#define LAPIC_ICR_LO     0x300
#define LAPIC_ICR_HI     0x310
#define ICR_BUSY         (1 << 12)    /* delivery status: send pending */

/* Selectors of guest_gdt in lib.S. */
#define SEL_CODE32 0x08
#define SEL_DATA   0x10
#define SEL_CODE64 0x18

/* Exit codes the guests report through DEBUG_EXIT_PORT on failure paths. Chosen clear of
 * kestrel's own exit codes (0..5) so the runner can tell who decided the outcome. */
#define EXIT_BAD_START_INFO   80
#define EXIT_LONG_MODE_WRONG  81
#define EXIT_CPUID_SIGNATURE  10
#define EXIT_CPUID_HV_BIT     11
#define EXIT_CPUID_APIC_ID    12
#define EXIT_CPUID_X2APIC_ID  13
#define EXIT_TRIPLE_FAULT_MISSED 96
#define EXIT_RESET_IGNORED    97
#define EXIT_SMP_WRONG_IDS    98
#define EXIT_SMP_TIMEOUT      99
#define EXIT_DIRTY_PAGE_LOST  91   /* dirty_pages: a page does not hold what the last pass wrote */

/* Load our own flat GDT (the VMM's lives in memory we do not own), reload every segment
 * register and take a stack from this image. Needs no stack itself. */
.macro guest_flat_setup stack_top
	cli
	cld
	lgdt	guest_gdt_desc
	ljmp	$SEL_CODE32, $1f
1:	movw	$SEL_DATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	movl	$\stack_top, %esp
.endm

/* Write the low byte of an immediate to the debug-exit port, then stop for good. */
.macro guest_exit code
	movb	$\code, %al
	outb	%al, $DEBUG_EXIT_PORT
9:	hlt
	jmp	9b
.endm
