//! The system calls (numbers and conventions: `lgtest::uapi`). Each works on the caller's saved
//! registers: arguments from RDI, RSI, RDX; the result into the saved RAX.

use super::mm;
use super::process::{self, Kernel};
use super::sched::Action;
use crate::hcall;
use lg_core::abi::{hcall as nr, PAGE_SIZE};
use lgtest::uapi::{self, err, errno, sys};

pub fn syscall(k: &mut Kernel, cur: usize) -> Action {
    let r = k.procs[cur].regs;
    let (a0, a1) = (r.rdi, r.rsi);
    let result = match r.rax {
        sys::WRITE => write(k, cur, a0, a1),
        sys::GETPID => k.procs[cur].pid,
        sys::YIELD => {
            k.procs[cur].regs.rax = 0;
            return Action::Yield;
        }
        sys::EXIT => return Action::End(process::Exit::Code(a0)),
        sys::MMAP => mmap(k, cur, a0),
        sys::MUNMAP => munmap(k, cur, a0, a1),
        sys::FORK => super::fork::fork(k, cur),
        sys::WAITPID => match process::wait(k, cur, a0) {
            Ok(Some(status)) => status,
            Ok(None) => {
                k.procs[cur].state = process::State::Waiting(a0);
                return Action::Block; // `process::end` of the child sets RAX and wakes us
            }
            Err(()) => err(errno::ECHILD),
        },
        sys::REPORT => {
            let pid = k.procs[cur].pid;
            k.report(pid, a0);
            0
        }
        _ => err(errno::ENOSYS),
    };
    k.procs[cur].regs.rax = result;
    Action::Resume
}

/// `write(buf, len)`: the whole buffer is checked (and faulted in) before any of it is printed.
fn write(k: &mut Kernel, cur: usize, buf: u64, len: u64) -> u64 {
    let p = &k.procs[cur];
    if !uapi::is_user_range(buf, len) {
        return err(errno::EFAULT);
    }
    let mut page = buf & !(PAGE_SIZE - 1);
    while page < buf + len {
        if mm::resolve(p.pml4, &p.regions, page, false).is_err() {
            return err(errno::EFAULT);
        }
        page += PAGE_SIZE;
    }
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64);
        let dst = chunk.get_mut(..n as usize).unwrap_or(&mut []);
        if mm::copy_from_user(p.pml4, &p.regions, buf + done, dst).is_err() {
            return err(errno::EFAULT);
        }
        crate::io::console::write(dst);
        done += n;
    }
    len
}

/// `mmap(len)`: a new region, first fit above `MMAP_BASE` with a guard page either side; no
/// page is mapped until it is touched.
fn mmap(k: &mut Kernel, cur: usize, len: u64) -> u64 {
    let p = &mut k.procs[cur];
    let Some(len) = uapi::page_round_up(len).filter(|&l| l != 0) else {
        return err(errno::EINVAL);
    };
    let Some(start) = p
        .regions
        .find_gap(uapi::MMAP_BASE, uapi::MMAP_END, len, PAGE_SIZE)
    else {
        return err(errno::ENOMEM);
    };
    match p.regions.add(start, start + len) {
        Ok(()) => start,
        Err(_) => err(errno::ENOMEM),
    }
}

/// `munmap(addr, len)`: exactly a region `mmap` made. One user flush for all its pages.
fn munmap(k: &mut Kernel, cur: usize, addr: u64, len: u64) -> u64 {
    let p = &mut k.procs[cur];
    let Some(len) = uapi::page_round_up(len) else {
        return err(errno::EINVAL);
    };
    let end = addr.saturating_add(len);
    if addr < uapi::MMAP_BASE || !p.regions.remove(addr, end) {
        return err(errno::EINVAL);
    }
    if mm::unmap_range(p.pml4, addr, end) {
        hcall::flush_tlb(nr::FLUSH_USER);
    }
    0
}
