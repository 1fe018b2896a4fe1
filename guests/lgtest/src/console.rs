//! `println!` over the console device (`io/console.rs`: `SEND_DMA` to the console page, or
//! `CONSOLE_WRITE` until the device is found). Each line is gathered in a buffer on the caller's stack and
//! sent with one hypercall, so lines never interleave even when a trap handler prints while the
//! interrupted code was half-way through a line of its own.

use core::fmt;

const LINE: usize = 256;

pub struct LineWriter {
    buf: [u8; LINE],
    len: usize,
}

impl LineWriter {
    pub const fn new() -> Self {
        LineWriter {
            buf: [0; LINE],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if let Some(line) = self.buf.get(..self.len) {
            crate::io::console::write(line);
        }
        self.len = 0;
    }
}

impl fmt::Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
            if b == b'\n' || self.len == LINE {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Drop for LineWriter {
    /// Whatever did not end in a newline still reaches the console.
    fn drop(&mut self) {
        if self.len != 0 {
            self.flush();
        }
    }
}

/// `println!` for the guest console (`#[macro_use]` on this module makes it visible crate-wide).
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut w = $crate::console::LineWriter::new();
        // LineWriter never fails; a formatting error would only lose this line.
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!("{}\n", format_args!($($arg)*)));
    }};
}
