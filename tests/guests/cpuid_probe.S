/* cpuid_probe: checks what a KVM guest should see through CPUID:
 *   leaf 0x40000000: EBX:ECX:EDX = "KVMKVMKVM\0\0\0" (Documentation/virt/kvm/x86/cpuid.rst)
 *                                                               else exit 10
 *   leaf 1: ECX bit 31 (hypervisor present)                     else exit 11
 *   leaf 1: EBX[31:24] initial APIC ID = 0 on the boot vCPU     else exit 12
 *   leaf 0xB subleaf 0 (if max leaf >= 0xB): EDX x2APIC ID = 0  else exit 13
 * Prints what it read, then "cpuid-ok\n" and exits 0. */
#include "guest.h"

	.section .text.entry, "ax"
	.code32
	.globl	pvh_entry
pvh_entry:
	cli
	cld
	movl	$boot_stack_top, %esp

	movl	$0x40000000, %eax
	cpuid
	movl	%ebx, signature
	movl	%ecx, signature + 4
	movl	%edx, signature + 8
	movl	$0, signature + 12
	movl	$msg_sig, %esi
	call	serial_puts
	movl	$signature, %esi
	call	serial_puts
	movb	$'\n', %al
	call	serial_putc
	cmpl	$0x4b4d564b, signature        /* "KVMK" */
	jne	bad_signature
	cmpl	$0x564b4d56, signature + 4    /* "VMKV" */
	jne	bad_signature
	cmpl	$0x0000004d, signature + 8    /* "M\0\0\0" */
	jne	bad_signature

	movl	$1, %eax
	cpuid
	movl	%ebx, %edi
	btl	$31, %ecx
	jnc	no_hypervisor_bit
	movl	$msg_apic, %esi
	call	serial_puts
	movl	%edi, %eax
	shrl	$24, %eax
	call	serial_puthex8
	movb	$'\n', %al
	call	serial_putc
	testl	$0xff000000, %edi
	jnz	bad_apic_id

	xorl	%eax, %eax
	cpuid
	cmpl	$0xb, %eax
	jb	done
	movl	$0xb, %eax
	xorl	%ecx, %ecx
	cpuid
	movl	%edx, %edi
	movl	$msg_x2apic, %esi
	call	serial_puts
	movl	%edi, %eax
	call	serial_puthex32
	movb	$'\n', %al
	call	serial_putc
	testl	%edi, %edi
	jnz	bad_x2apic_id
done:
	movl	$msg_ok, %esi
	call	serial_puts
	guest_exit 0

bad_signature:
	guest_exit EXIT_CPUID_SIGNATURE
no_hypervisor_bit:
	guest_exit EXIT_CPUID_HV_BIT
bad_apic_id:
	guest_exit EXIT_CPUID_APIC_ID
bad_x2apic_id:
	guest_exit EXIT_CPUID_X2APIC_ID

	.section .rodata
msg_sig:	.asciz	"cpuid-signature="
msg_apic:	.asciz	"cpuid-apic-id="
msg_x2apic:	.asciz	"cpuid-x2apic-id="
msg_ok:		.asciz	"cpuid-ok\n"

	.section .bss
	.balign 4
signature:
	.skip	16      /* 12 signature bytes + NUL terminator */
