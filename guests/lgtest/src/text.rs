//! A small owned text buffer for `core::fmt` without an allocator (test failure details, crash
//! messages). Output that does not fit is truncated at a character boundary.

use core::fmt;

pub struct FixedStr<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Something did not fit: later (shorter) writes are dropped so the text never has a hole.
    truncated: bool,
}

impl<const N: usize> FixedStr<N> {
    pub const fn new() -> Self {
        FixedStr {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in (see `write_str`).
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FixedStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.truncated = take < s.len();
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + take),
            s.as_bytes().get(..take),
        ) {
            dst.copy_from_slice(src);
            self.len += take;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Display for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn formats_and_truncates_on_char_boundary() {
        let mut s = FixedStr::<6>::new();
        write!(s, "ab{}", 12).unwrap();
        assert_eq!(s.as_str(), "ab12");
        write!(s, "é€").unwrap();
        assert_eq!(s.as_str(), "ab12é");
        write!(s, "x").unwrap();
        assert_eq!(s.as_str(), "ab12é");

        let mut t = FixedStr::<5>::new();
        write!(t, "abc€").unwrap();
        write!(t, "d").unwrap();
        assert_eq!(t.as_str(), "abc", "no hole after a truncated character");
    }
}
