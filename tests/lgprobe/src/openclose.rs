//! `lgprobe openclose [N]`: N open/close cycles; every other one also INITIALIZEs and sends an
//! IRQ, so that tearing down a live guest is exercised as much as an idle file.

use lg_core::abi::{self, lhreq};
use lg_core::errno::Errno;

use crate::model::OWNER_READ;
use crate::proto::{self, good_args, init_words, Mapping};
use crate::report::{same, Report};

pub fn run(rep: &mut Report, n: u64) -> Result<(), String> {
    let mem = Mapping::guest()?;
    let words = init_words(&good_args(&mem));
    let (before, _) = rep.counts();
    for i in 0..n {
        let r = (|| {
            let fd = proto::fresh()?;
            // Every file starts uninitialized, however the previous one ended.
            same(proto::read(&fd), Err(Errno::EINVAL)).map_err(|e| format!("first read: {e}"))?;
            if i % 2 == 1 {
                same(proto::write_words(&fd, &words), Ok(56))
                    .map_err(|e| format!("INITIALIZE: {e}"))?;
                let irq = i % abi::NR_IRQS;
                same(proto::write_words(&fd, &[lhreq::IRQ, irq]), Ok(16))
                    .map_err(|e| format!("IRQ {irq}: {e}"))?;
                same(proto::read(&fd), Err(OWNER_READ)).map_err(|e| format!("owner read: {e}"))?;
            }
            Ok(())
        })();
        rep.quiet(|| format!("openclose cycle {i}"), r);
    }
    let (after, _) = rep.counts();
    rep.note(&format!(
        "openclose: {} cycles, half of them with a guest",
        after - before
    ));
    Ok(())
}
