//! Formatting into a fixed-size byte buffer: kill reasons and log messages without an allocator.

use core::fmt;

/// A `core::fmt::Write` sink over a byte slice. Output that does not fit is silently truncated
/// (at a UTF-8 character boundary), which is what we want for reasons and log lines.
pub struct FixedBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
    /// Set once something did not fit: later writes are dropped so the text never has a hole.
    truncated: bool,
}

impl<'a> FixedBuf<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        FixedBuf {
            buf,
            len: 0,
            truncated: false,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Write for FixedBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        let room = self.buf.len().saturating_sub(self.len);
        let mut take = s.len().min(room);
        while take > 0 && !s.is_char_boundary(take) {
            take -= 1;
        }
        self.truncated = take < s.len();
        let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + take),
            s.as_bytes().get(..take),
        ) else {
            return Ok(());
        };
        dst.copy_from_slice(src);
        self.len += take;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn truncates_at_char_boundary() {
        let mut raw = [0u8; 5];
        let mut b = FixedBuf::new(&mut raw);
        let tail = "é€x";
        write!(b, "ab{tail}").unwrap();
        assert_eq!(b.as_bytes(), "abé".as_bytes());
        write!(b, "more").unwrap();
        assert_eq!(b.len(), 4);
    }
}
