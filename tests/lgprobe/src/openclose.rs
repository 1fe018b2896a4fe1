//! `lgprobe openclose [N]`: N open/close cycles; every other one also INITIALIZEs, sends an IRQ
//! and reads (which runs the guest until it dies), so that tearing down a guest that ran is
//! exercised as much as an idle file. Every fourth cycle closes before the guest ever ran.

use lg_core::abi::{self, lhreq};
use lg_core::errno::Errno;

use crate::model::{check_dead_record, describe_record, show_read};
use crate::proto::{self, good_args, init_words, Mapping, READ_BUF};
use crate::report::{same, Report};

pub fn run(rep: &mut Report, n: u64) -> Result<(), String> {
    let mem = Mapping::guest()?;
    let words = init_words(&good_args(&mem));
    let (before, _) = rep.counts();
    let mut noted = false;
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
                if i % 4 == 3 {
                    // Closed with a guest that never ran.
                    return Ok(());
                }
                let got = proto::read_len(&fd, READ_BUF);
                let record = match &got {
                    Ok(b) => b,
                    Err(_) => return Err(format!("owner read: got {}", show_read(&got))),
                };
                check_dead_record(record, READ_BUF).map_err(|e| format!("owner read: {e}"))?;
                if !noted {
                    noted = true;
                    rep.note(&format!(
                        "openclose: guests die with {}",
                        describe_record(record)
                    ));
                }
                same(
                    proto::write_words(&fd, &[lhreq::IRQ, irq]),
                    Err(Errno::ENOENT),
                )
                .map_err(|e| format!("IRQ {irq} after death: {e}"))?;
            }
            Ok(())
        })();
        rep.quiet(|| format!("openclose cycle {i}"), r);
    }
    let (after, _) = rep.counts();
    rep.note(&format!(
        "openclose: {} cycles, half of them with a guest (half of those run until it died)",
        after - before
    ));
    Ok(())
}
