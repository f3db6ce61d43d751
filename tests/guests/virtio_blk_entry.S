/* Entry stub of the virtio_blk guest: from the PVH 32-bit entry into 64-bit long mode (as
 * long_mode.S does, SDM Vol. 3A §10.8.5), then `vblk_main(start_info)` in C; its return value
 * goes to the debug-exit port.
 *
 * Paging identity-maps the first 4 GiB with 2 MiB pages: this image and its buffers in the
 * first 2 MiB, and the PCI BAR window 0xc0000000..0xdfffffff that the driver reaches by MMIO.
 * The top GiB (BAR window, ECAM, LAPIC/IOAPIC) is mapped uncached (PCD|PWT), as MMIO should be.
 * About 8k instructions, most of them the 2048-entry page-directory loop. */
#include "guest.h"

#define MSR_EFER   0xc0000080
#define EFER_LME   (1 << 8)
#define CR4_PAE    (1 << 5)
#define CR0_PE_PG  0x80000001
#define PTE_P_RW   0x3
#define PDE_2M     0x83         /* P | RW | PS */
#define PDE_UC     0x18         /* PWT | PCD */
#define PD_ENTRIES 2048         /* 4 page directories x 512 x 2 MiB = 4 GiB */

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	guest_flat_setup vblk_stack_top     /* EBX (hvm_start_info) survives it */

	movl	$pml4, %edi
	xorl	%eax, %eax
	movl	$(6 * 4096 / 4), %ecx
	rep stosl
	movl	$(pdpt + PTE_P_RW), pml4
	movl	$(pd + 0 * 4096 + PTE_P_RW), pdpt + 0
	movl	$(pd + 1 * 4096 + PTE_P_RW), pdpt + 8
	movl	$(pd + 2 * 4096 + PTE_P_RW), pdpt + 16
	movl	$(pd + 3 * 4096 + PTE_P_RW), pdpt + 24

	movl	$pd, %edi
	movl	$PDE_2M, %eax
	movl	$PD_ENTRIES, %ecx
1:	cmpl	$(PD_ENTRIES / 4), %ecx         /* last quarter: 3..4 GiB */
	ja	2f
	orl	$PDE_UC, %eax
2:	movl	%eax, (%edi)
	addl	$0x200000, %eax
	addl	$8, %edi
	decl	%ecx
	jnz	1b

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
	movl	$vblk_stack_top, %esp   /* zero-extends: RSP's upper half is undefined here */
	movl	%ebx, %edi              /* SysV first argument: hvm_start_info address */
	call	vblk_main
	outb	%al, $DEBUG_EXIT_PORT
3:	hlt
	jmp	3b

	.section .bss
	.balign 4096
pml4:	.skip	4096
pdpt:	.skip	4096
pd:	.skip	4 * 4096
	.balign 16
	.skip	16384
vblk_stack_top:
