/* SPDX-License-Identifier: GPL-2.0-only */
/* What the two halves of the C shim share. */
#ifndef LG_H
#define LG_H

#include <linux/hrtimer.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include <asm/fpu/api.h>

#include "generated/lg_rust.h"

/* One open /dev/lguest: the kernel objects of a guest; its state proper is Rust's (dev). */
struct lg_file {
	LgDevice *dev;
	/* Writers of LHREQ_BREAK 1 wait here for the BREAK 0. */
	wait_queue_head_t break_wq;
	/* The owner sleeps here while its guest is halted. */
	wait_queue_head_t irq_wq;
	/* The task that initialized the guest, referenced so its address stays unique. */
	struct task_struct *owner;
	/* The guest's one-shot clock event: raises virtual irq 0. */
	struct hrtimer timer;
	/* The guest's FPU registers, swapped in for the duration of each read(). */
	struct fpu_guest fpu;
	bool fpu_allocated;
	/* Host state parked while the guest runs (lg_guest_enter_begin/end). */
	unsigned long dr7;
	u64 efer;
	u64 sysenter_cs;
};

extern const LgKernelOps lg_ops;

void lg_file_init_timer(struct lg_file *f);

#endif
