/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Calling a host interrupt (or NMI) handler that a guest exit interrupted.
 *
 * When a host interrupt arrives in guest mode the switcher returns to the host with IRQs off and
 * the vector noted; the local APIC already has the interrupt in service, so its handler must run
 * now or the EOI never happens. We call the handler the host IDT names for the vector with a
 * synthetic interrupt frame saying "kernel mode, IRQs off", exactly as KVM does after a VM exit
 * (arch/x86/kvm/vmx/vmenter.S); the handler's IRETQ returns here.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/nospec-branch.h>
#include <asm/segment.h>

/* void lg_call_irq_handler(unsigned long entry) */
SYM_FUNC_START(lg_call_irq_handler)
	push %rbp
	mov %rsp, %rbp
	and $-16, %rsp
	push $__KERNEL_DS
	push %rbp
	pushf
	push $__KERNEL_CS
	CALL_NOSPEC rdi
	/* The handler's IRETQ already restored RSP; say so again for objtool. */
	mov %rbp, %rsp
	pop %rbp
	RET
SYM_FUNC_END(lg_call_irq_handler)
