// SPDX-License-Identifier: GPL-2.0-only
/*
 * lg.ko, the C side: the module's entry and exit and the /dev/lguest misc device. Everything that
 * decides anything lives in Rust (rust-core/); the C shim only translates between the kernel's
 * world and Rust's (this file: the device; lg_services.c: the services Rust borrows). The boundary
 * is declared once, in generated/lg_rust.h, which build.rs writes from the Rust definitions.
 *
 * Load order: refuse hosts we cannot serve -> tell Rust about the host -> allocate and vmap the
 * switcher pages for every possible CPU -> register /dev/lguest. Unload is the reverse.
 */
#define pr_fmt(fmt) "lg: " fmt

#include <linux/cc_platform.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/cpufeature.h>
#include <asm/fpu/xcr.h>
#include <asm/fpu/xstate.h>
#include <asm/hypervisor.h>
#include <asm/mem_encrypt.h>
#include <asm/pgtable.h>
#include <asm/tlbflush.h>
#include <asm/tsc.h>

#include "lg.h"

/*
 * Test hook: pretend to be a host we must refuse, so the refusal path can be tested in a QEMU VM
 * that is none of these. "xenpv", "sme" or "tdx"; empty (the default) means "the real host".
 */
static char *simulate_host = "";
module_param(simulate_host, charp, 0400);
MODULE_PARM_DESC(simulate_host, "testing only: act as if the host were xenpv, sme or tdx");

/*
 * A ring-1 world switch needs a host that really runs at ring 0 with plain page tables. Under Xen
 * PV the "host" is itself deprivileged (raw CR3/IDT writes fault); with SME/SEV/TDX every page-table
 * entry needs an encryption bit our shadow tables do not carry. Refuse rather than misbehave.
 */
static int lg_check_host(void)
{
	bool xenpv = boot_cpu_has(X86_FEATURE_XENPV) || x86_hyper_type == X86_HYPER_XEN_PV;
	bool sme = sme_me_mask != 0 || cc_platform_has(CC_ATTR_HOST_MEM_ENCRYPT);
	bool cc_guest = cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT);

	xenpv |= !strcmp(simulate_host, "xenpv");
	sme |= !strcmp(simulate_host, "sme");
	cc_guest |= !strcmp(simulate_host, "tdx");

	if (xenpv) {
		pr_err("refusing to load: this kernel is a Xen PV guest, and lguest needs a host kernel that runs in ring 0\n");
		return -ENODEV;
	}
	if (sme) {
		pr_err("refusing to load: host memory encryption (SME) is active, and lguest's shadow page tables cannot carry the encryption bit\n");
		return -ENODEV;
	}
	if (cc_guest) {
		pr_err("refusing to load: this kernel is a confidential-computing guest (SEV/TDX), where lguest's world switch cannot work\n");
		return -ENODEV;
	}
	return 0;
}

/* ---- The switcher area: one vmap() of per-CPU pages (rust-core/src/switcher/layout.rs). ---- */

static struct page **sw_pages;
static unsigned long sw_nr_pages;
static void *sw_base;

static void lg_free_switcher(void)
{
	unsigned long i;

	/* First the per-CPU page tables that map the switcher into guests. */
	lg_rust_switcher_unmapped();
	if (sw_base)
		vunmap(sw_base);
	sw_base = NULL;
	for (i = 0; sw_pages && i < sw_nr_pages; i++)
		if (sw_pages[i])
			__free_page(sw_pages[i]);
	kvfree(sw_pages);
	sw_pages = NULL;
}

static void lg_flush_local(void *unused)
{
	__flush_tlb_all();
}

/*
 * vmap() gives every page the same protection (PAGE_KERNEL: RW, NX). The code pages must be
 * executable and must not stay writable, so we rewrite their PTEs in our own vmap area to read-only
 * + executable, and flush every CPU's TLB.
 */
static int lg_protect_text(unsigned long text_pages)
{
	unsigned long i;

	for (i = 0; i < text_pages; i++) {
		unsigned int level;
		pte_t *pte = lookup_address((unsigned long)sw_base + i * PAGE_SIZE, &level);

		if (!pte || level != PG_LEVEL_4K)
			return -EFAULT;
		set_pte(pte, pte_mkexec(pte_wrprotect(*pte)));
	}
	on_each_cpu(lg_flush_local, NULL, 1);
	return 0;
}

static int lg_map_switcher(void)
{
	LgSwitcherLayout layout;
	const uint8_t *code;
	size_t code_len;
	uint64_t *pfns = NULL;
	unsigned long i;
	int err;

	err = lg_rust_switcher_layout(&layout);
	if (err)
		return err;
	sw_nr_pages = layout.nr_pages;
	sw_pages = kvcalloc(sw_nr_pages, sizeof(*sw_pages), GFP_KERNEL);
	pfns = kvcalloc(sw_nr_pages, sizeof(*pfns), GFP_KERNEL);
	if (!sw_pages || !pfns)
		goto nomem;
	for (i = 0; i < sw_nr_pages; i++) {
		sw_pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!sw_pages[i])
			goto nomem;
		pfns[i] = page_to_pfn(sw_pages[i]);
	}
	/* The code goes in through the pages' direct-map address, before they become read-only. */
	lg_rust_switcher_code(&code, &code_len);
	if (code_len > layout.text_pages * PAGE_SIZE) {
		err = -E2BIG;
		goto fail;
	}
	for (i = 0; i * PAGE_SIZE < code_len; i++)
		memcpy(page_address(sw_pages[i]), code + i * PAGE_SIZE,
		       min_t(size_t, PAGE_SIZE, code_len - i * PAGE_SIZE));
	sw_base = vmap(sw_pages, sw_nr_pages, VM_MAP, PAGE_KERNEL);
	if (!sw_base)
		goto nomem;
	err = lg_protect_text(layout.text_pages);
	if (!err)
		err = lg_rust_switcher_mapped((u64)(unsigned long)sw_base, pfns, sw_nr_pages);
	if (err)
		goto fail;
	kvfree(pfns);
	return 0;
nomem:
	err = -ENOMEM;
	pr_err("cannot allocate %lu switcher pages\n", sw_nr_pages);
fail:
	kvfree(pfns);
	lg_free_switcher();
	return err;
}

/* ---- /dev/lguest ---- */

static int lg_open(struct inode *inode, struct file *file)
{
	struct lg_file *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return -ENOMEM;
	f->dev = kvmalloc(lg_rust_device_size(), GFP_KERNEL);
	if (!f->dev) {
		kfree(f);
		return -ENOMEM;
	}
	lg_rust_device_init(f->dev);
	init_waitqueue_head(&f->break_wq);
	init_waitqueue_head(&f->irq_wq);
	lg_file_init_timer(f);
	file->private_data = f;
	return 0;
}

static int lg_release(struct inode *inode, struct file *file)
{
	struct lg_file *f = file->private_data;

	/* Unpins every guest page and frees the shadow tables; touches no user memory. */
	lg_rust_device_drop(f->dev, f);
	hrtimer_cancel(&f->timer);
	if (f->fpu_allocated)
		fpu_free_guest_fpstate(&f->fpu);
	if (f->owner)
		put_task_struct(f->owner);
	kvfree(f->dev);
	kfree(f);
	return 0;
}

static ssize_t lg_write(struct file *file, const char __user *ubuf, size_t len, loff_t *off)
{
	struct lg_file *f = file->private_data;
	u8 buf[LG_MAX_WRITE];
	u64 val = 0;
	s64 r;

	/* Refuse oversized writes before touching user memory: no side effects. */
	if (len > sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;

	r = lg_rust_write(f->dev, f, buf, len, (u64)(unsigned long)current, &val);
	switch (r) {
	case LG_WRITE_ACTION_RETURN:
		return (ssize_t)val;
	case LG_WRITE_ACTION_WAIT_BREAK_OFF:
		/* Kick the owner out of the guest (or out of its halt) so that it sees the break. */
		wake_up_interruptible(&f->irq_wq);
		if (f->owner)
			kick_process(f->owner);
		if (wait_event_interruptible(f->break_wq, !lg_rust_break_requested(f->dev)))
			return -ERESTARTSYS;
		return len;
	case LG_WRITE_ACTION_WAKE_BREAK:
		wake_up_all(&f->break_wq);
		return len;
	case LG_WRITE_ACTION_INITIALIZED:
		/* Only one write can ever initialize a file, so this runs once per file. */
		f->owner = get_task_struct(current);
		return len;
	default:
		return r < 0 ? (ssize_t)r : -EIO;
	}
}

static ssize_t lg_read(struct file *file, char __user *ubuf, size_t len, loff_t *off)
{
	struct lg_file *f = file->private_data;
	u64 me = (u64)(unsigned long)current;
	ssize_t r;

	/* Refusals (not initialized, not the owner, dead guest) need no FPU dance. */
	if (!lg_rust_will_run(f->dev, me))
		return lg_rust_read(f->dev, f, me, (u64)(uintptr_t)ubuf, len);
	if (!f->fpu_allocated) {
		if (!fpu_alloc_guest_fpstate(&f->fpu))
			return -ENOMEM;
		f->fpu_allocated = true;
		/*
		 * The guest fpstate has room for the default features only: on hosts with XFD keep
		 * the dynamic ones (AMX) disarmed, so a guest using them takes #NM instead of leaking
		 * tile state. (Without XFD there are no dynamic features, and the kernel WARNs if we
		 * ask.)
		 */
		if (boot_cpu_has(X86_FEATURE_XFD))
			fpu_update_guest_xfd(&f->fpu, XFEATURE_MASK_USER_DYNAMIC);
	}
	/*
	 * The guest gets its own FPU/SSE/AVX registers for the whole read(): the kernel saves and
	 * restores them across preemption into the guest fpstate, and the launcher's are back before
	 * we return, so signals, ptrace and core dumps see the launcher's.
	 */
	fpu_swap_kvm_fpstate(&f->fpu, true);
	r = lg_rust_read(f->dev, f, me, (u64)(uintptr_t)ubuf, len);
	fpu_swap_kvm_fpstate(&f->fpu, false);
	return r;
}

static const struct file_operations lg_fops = {
	.owner = THIS_MODULE,
	.open = lg_open,
	.release = lg_release,
	.read = lg_read,
	.write = lg_write,
	.llseek = no_llseek,
};

static struct miscdevice lg_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lguest",
	.fops = &lg_fops,
	.mode = 0600,
};

static int __init lg_init(void)
{
	LgHostInfo info = {
		.nr_cpus = nr_cpu_ids,
		.la57 = pgtable_l5_enabled(),
		.fsgsbase = boot_cpu_has(X86_FEATURE_FSGSBASE),
		.pku = boot_cpu_has(X86_FEATURE_OSPKE),
		.ibpb = boot_cpu_has(X86_FEATURE_IBPB),
		.stable_tsc = boot_cpu_has(X86_FEATURE_CONSTANT_TSC) &&
			      boot_cpu_has(X86_FEATURE_NONSTOP_TSC),
		.phys_bits = boot_cpu_data.x86_phys_bits,
		.cr4 = cr4_read_shadow(),
		.xcr0 = boot_cpu_has(X86_FEATURE_OSXSAVE) ? xgetbv(XCR_XFEATURE_ENABLED_MASK) : 0,
		.tsc_khz = tsc_khz,
		.user_top = TASK_SIZE_MAX,
	};
	int err;

	err = lg_check_host();
	if (err)
		return err;
	err = lg_rust_init(&lg_ops, &info);
	if (err)
		return err;
	err = lg_map_switcher();
	if (err)
		return err;
	err = misc_register(&lg_dev);
	if (err) {
		pr_err("cannot register /dev/lguest: %d\n", err);
		lg_free_switcher();
		return err;
	}
	return 0;
}

static void __exit lg_exit(void)
{
	misc_deregister(&lg_dev);
	lg_free_switcher();
}

module_init(lg_init);
module_exit(lg_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("lguest developers");
MODULE_DESCRIPTION("lguest: a minimal ring-1 paravirtual hypervisor for x86_64");
