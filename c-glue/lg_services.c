// SPDX-License-Identifier: GPL-2.0-only
/*
 * The kernel services the Rust half of lg.ko borrows (LgKernelOps): pages for shadow page
 * tables, the launcher's memory, pinning guest pages, timers and sleeping, and the host side of
 * entering a guest — everything around the switcher that needs the kernel's own inline helpers.
 */
#define pr_fmt(fmt) "lg: " fmt

#include <linux/freezer.h>
#include <linux/highmem.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mutex.h>
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <asm/debugreg.h>
#include <asm/desc.h>
#include <asm/trapnr.h>
#include <asm/idtentry.h>
#include <asm/mce.h>
#include <asm/msr.h>

#include "lg.h"

static void lg_log(uint32_t level, const uint8_t *msg, size_t len)
{
	int n = (int)min_t(size_t, len, 1024);

	switch (level) {
	case 0 ... 3:
		pr_err("%.*s\n", n, msg);
		break;
	case 4:
		pr_warn("%.*s\n", n, msg);
		break;
	default:
		pr_info("%.*s\n", n, msg);
		break;
	}
}

/* Pages the module holds on behalf of guests, for the leak checks of the tests. */
static atomic64_t lg_pinned_pages = ATOMIC64_INIT(0);
static atomic64_t lg_table_pages = ATOMIC64_INIT(0);

static int lg_get_counter(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(kp->arg));
}

static const struct kernel_param_ops lg_counter_ops = { .get = lg_get_counter };
module_param_cb(pinned_pages, &lg_counter_ops, &lg_pinned_pages, 0444);
MODULE_PARM_DESC(pinned_pages, "guest pages currently pinned by shadow page tables");
module_param_cb(table_pages, &lg_counter_ops, &lg_table_pages, 0444);
MODULE_PARM_DESC(table_pages, "pages currently allocated for page tables of guests");

static uint8_t *lg_alloc_page(uint64_t *pa)
{
	struct page *page = alloc_page(GFP_KERNEL | __GFP_ZERO);

	if (!page)
		return NULL;
	atomic64_inc(&lg_table_pages);
	*pa = page_to_phys(page);
	return page_address(page);
}

static void lg_free_page(uint8_t *va)
{
	atomic64_dec(&lg_table_pages);
	free_page((unsigned long)va);
}

static int32_t lg_copy_from_user(uint8_t *dst, uint64_t uaddr, size_t len)
{
	return copy_from_user(dst, (const void __user *)(uintptr_t)uaddr, len) ? -EFAULT : 0;
}

static int32_t lg_copy_to_user(uint64_t uaddr, const uint8_t *src, size_t len)
{
	return copy_to_user((void __user *)(uintptr_t)uaddr, src, len) ? -EFAULT : 0;
}

static int32_t lg_pin_page(uint64_t uaddr, uint64_t *pfn)
{
	struct page *page;
	int n = pin_user_pages_fast(uaddr, 1, FOLL_WRITE | FOLL_LONGTERM, &page);

	if (n != 1)
		return n < 0 ? n : -EFAULT;
	atomic64_inc(&lg_pinned_pages);
	*pfn = page_to_pfn(page);
	return 0;
}

static void lg_unpin_page(uint64_t pfn)
{
	struct page *page = pfn_to_page(pfn);

	/* The guest may have written it through the shadow mapping. */
	unpin_user_pages_dirty_lock(&page, 1, true);
	atomic64_dec(&lg_pinned_pages);
}

static uint64_t lg_cpu_gdt_rw(uint32_t cpu)
{
	return (uint64_t)(unsigned long)get_cpu_gdt_rw(cpu);
}

static bool lg_signal_pending(void)
{
	return signal_pending(current);
}

static void lg_yield_point(void)
{
	cond_resched();
	try_to_freeze();
}

static uint64_t lg_realtime_ns(void)
{
	return ktime_get_real_ns();
}

static enum hrtimer_restart lg_timer_fired(struct hrtimer *t)
{
	struct lg_file *f = container_of(t, struct lg_file, timer);

	lg_rust_raise_irq(f->dev, 0);
	wake_up_interruptible(&f->irq_wq);
	return HRTIMER_NORESTART;
}

void lg_file_init_timer(struct lg_file *f)
{
	hrtimer_init(&f->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
	f->timer.function = lg_timer_fired;
}

static void lg_set_timer(void *ctx, uint64_t ns)
{
	struct lg_file *f = ctx;

	if (!ns) {
		hrtimer_cancel(&f->timer);
		return;
	}
	hrtimer_start(&f->timer, ns_to_ktime(ns), HRTIMER_MODE_REL);
}

static void lg_wait_for_irq(void *ctx, uint32_t mask)
{
	struct lg_file *f = ctx;

	/* A signal ends the wait early; the run loop then returns to the launcher. */
	(void)wait_event_interruptible(f->irq_wq, lg_rust_should_wake(f->dev, mask));
}

void lg_call_irq_handler(unsigned long entry);

/*
 * Entering the guest: everything the switcher does not swap itself, in the order of
 * x86_64-hazards.md §9: preemption and interrupts off; RCU told (a guest may run a long time
 * without a host context switch); hardware breakpoints parked; SYSCALL disabled (EFER.SCE=0, so a
 * guest `syscall` raises #UD instead of entering the host at LSTAR); SYSENTER disabled
 * (SYSENTER_CS=0).
 */
static uint32_t lg_guest_enter_begin(void *ctx)
{
	struct lg_file *f = ctx;

	preempt_disable();
	local_irq_disable();
	rcu_note_context_switch(false);
	f->dr7 = local_db_save();
	rdmsrl(MSR_EFER, f->efer);
	if (f->efer & EFER_SCE)
		wrmsrl(MSR_EFER, f->efer & ~EFER_SCE);
	if (boot_cpu_has(X86_FEATURE_SEP)) {
		rdmsrl(MSR_IA32_SYSENTER_CS, f->sysenter_cs);
		wrmsrl(MSR_IA32_SYSENTER_CS, 0);
	}
	return smp_processor_id();
}

/*
 * Back from the guest with interrupts still off: restore what we parked, then run the host
 * handlers for whatever interrupted the guest — a machine check, an NMI, a device interrupt —
 * before interrupts come back on (the local APIC has the interrupt in service already).
 * `vector` is the exit's vector (256 and up: none).
 */
static void lg_guest_enter_end(void *ctx, uint64_t vector, bool nmi, bool mce)
{
	struct lg_file *f = ctx;

	if (boot_cpu_has(X86_FEATURE_SEP))
		wrmsrl(MSR_IA32_SYSENTER_CS, f->sysenter_cs);
	if (f->efer & EFER_SCE)
		wrmsrl(MSR_EFER, f->efer);
	/* A guest #DB (single step, ICEBP) leaves its status bits in DR6: do not hand them on. */
	if (vector == X86_TRAP_DB)
		set_debugreg(DR6_RESERVED, 6);
	local_db_restore(f->dr7);

	if (mce) {
		/* As KVM does: let the MCE core judge, with registers that blame the launcher. */
		struct pt_regs regs = { .cs = 3, .flags = X86_EFLAGS_IF };

		do_machine_check(&regs);
	}
	if (nmi)
		lg_call_irq_handler((unsigned long)asm_exc_nmi_noist);
	if (vector >= FIRST_EXTERNAL_VECTOR && vector < NR_VECTORS) {
		struct desc_ptr idt;

		store_idt(&idt);
		lg_call_irq_handler(gate_offset((gate_desc *)idt.address + vector));
	}
	local_irq_enable();
	preempt_enable();
}

/* ---- DMA between guests (rust-core/src/dma): the lock, key identity, other guests' memory. ---- */

static DEFINE_MUTEX(lg_dma_mutex);

static void lg_dma_lock(void)
{
	mutex_lock(&lg_dma_mutex);
}

static void lg_dma_unlock(void)
{
	mutex_unlock(&lg_dma_mutex);
}

/*
 * Like a futex key: memory the launcher maps MAP_SHARED from a file is identified by the file and
 * the offset in it, so two launchers mapping the same file at different addresses meet there.
 */
static int32_t lg_dma_identify(uint64_t uaddr, uint64_t *file, uint64_t *offset)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	int32_t r = -EFAULT;

	if (!mm)
		return -EFAULT;
	mmap_read_lock(mm);
	vma = vma_lookup(mm, uaddr);
	if (vma) {
		r = 0;
		if ((vma->vm_flags & VM_SHARED) && vma->vm_file) {
			*file = (uint64_t)(unsigned long)file_inode(vma->vm_file);
			*offset = ((uint64_t)vma->vm_pgoff << PAGE_SHIFT) + (uaddr - vma->vm_start);
			r = 1;
		}
	}
	mmap_read_unlock(mm);
	return r;
}

static void lg_dma_hold(uint64_t file)
{
	ihold((struct inode *)(unsigned long)file);
}

static void lg_dma_release(uint64_t file)
{
	iput((struct inode *)(unsigned long)file);
}

static int64_t lg_access_remote(void *ctx, uint64_t uaddr, uint8_t *buf, size_t len, bool write)
{
	struct lg_file *f = ctx;

	if (!f->owner)
		return 0;
	return access_process_vm(f->owner, uaddr, buf, len, write ? FOLL_WRITE : 0);
}

static const LgDevice *lg_file_device(void *ctx)
{
	return ((struct lg_file *)ctx)->dev;
}

static void lg_wake(void *ctx)
{
	struct lg_file *f = ctx;

	wake_up_interruptible(&f->irq_wq);
	if (f->owner)
		kick_process(f->owner);
}

const LgKernelOps lg_ops = {
	.log = lg_log,
	.alloc_page = lg_alloc_page,
	.free_page = lg_free_page,
	.copy_from_user = lg_copy_from_user,
	.copy_to_user = lg_copy_to_user,
	.pin_page = lg_pin_page,
	.unpin_page = lg_unpin_page,
	.cpu_gdt_rw = lg_cpu_gdt_rw,
	.guest_enter_begin = lg_guest_enter_begin,
	.guest_enter_end = lg_guest_enter_end,
	.signal_pending = lg_signal_pending,
	.yield_point = lg_yield_point,
	.set_timer = lg_set_timer,
	.wait_for_irq = lg_wait_for_irq,
	.realtime_ns = lg_realtime_ns,
	.dma_lock = lg_dma_lock,
	.dma_unlock = lg_dma_unlock,
	.dma_identify = lg_dma_identify,
	.dma_hold = lg_dma_hold,
	.dma_release = lg_dma_release,
	.access_remote = lg_access_remote,
	.file_device = lg_file_device,
	.wake = lg_wake,
};
