//! `key=value` words of the kernel command line, for the modes that take parameters
//! (`lgtest=net-echo ip=10.0.0.1/24`, `lgtest=net-ping ip=... peer=... count=5`, ...).

/// The value of the last `key=` word of `cmdline` (the last one wins, as for `lgtest=`).
pub fn value<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    cmdline
        .split(|b| b.is_ascii_whitespace() || *b == 0)
        .filter_map(|word| {
            word.strip_prefix(key.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        })
        .next_back()
}

/// A decimal number, or hex with `0x`, with an optional `k`/`m`/`g` (binary) suffix.
pub fn parse_u64(text: &[u8]) -> Option<u64> {
    let (digits, scale) = match text.last()? {
        b'k' | b'K' => (text.get(..text.len() - 1)?, 1u64 << 10),
        b'm' | b'M' => (text.get(..text.len() - 1)?, 1 << 20),
        b'g' | b'G' => (text.get(..text.len() - 1)?, 1 << 30),
        _ => (text, 1),
    };
    let (digits, radix) = match digits.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        let n = char::from(d).to_digit(radix)?;
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(n))?;
    }
    v.checked_mul(scale)
}

/// `a.b.c.d`.
pub fn parse_ipv4(text: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for o in out.iter_mut() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *o = u8::try_from(parse_u64(part)?).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `a.b.c.d/len` (a missing `/len` means /24).
pub fn parse_cidr(text: &[u8]) -> Option<([u8; 4], u8)> {
    let mut halves = text.splitn(2, |&b| b == b'/');
    let ip = parse_ipv4(halves.next()?)?;
    let len = match halves.next() {
        Some(l) => u8::try_from(parse_u64(l)?).ok().filter(|&l| l <= 32)?,
        None => 24,
    };
    Some((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values() {
        let cmd = b"lgtest=net-ping ip=10.0.0.2/24 peer=10.0.0.1 count=5 peer=10.0.0.9\0junk=1";
        assert_eq!(value(cmd, "ip"), Some(&b"10.0.0.2/24"[..]));
        assert_eq!(value(cmd, "peer"), Some(&b"10.0.0.9"[..]), "the last wins");
        assert_eq!(value(cmd, "count"), Some(&b"5"[..]));
        assert_eq!(
            value(cmd, "junk"),
            Some(&b"1"[..]),
            "a NUL separates words too"
        );
        assert_eq!(value(cmd, "coun"), None);
        assert_eq!(value(cmd, "lgtest"), Some(&b"net-ping"[..]));
        assert_eq!(value(b"id=", "id"), Some(&b""[..]));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"10485760"), Some(10_485_760));
        assert_eq!(parse_u64(b"10m"), Some(10 << 20));
        assert_eq!(parse_u64(b"4k"), Some(4096));
        assert_eq!(parse_u64(b"0x10"), Some(16));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"k"), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
        assert_eq!(parse_u64(b"18446744073709551615g"), None);
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_ipv4(b"192.168.19.2"), Some([192, 168, 19, 2]));
        assert_eq!(parse_ipv4(b"192.168.19"), None);
        assert_eq!(parse_ipv4(b"192.168.19.2.1"), None);
        assert_eq!(parse_ipv4(b"192.168.19.256"), None);
        assert_eq!(parse_ipv4(b"1..2.3"), None);
        assert_eq!(parse_cidr(b"10.0.0.1/24"), Some(([10, 0, 0, 1], 24)));
        assert_eq!(parse_cidr(b"10.0.0.1"), Some(([10, 0, 0, 1], 24)));
        assert_eq!(parse_cidr(b"10.0.0.1/33"), None);
        assert_eq!(parse_cidr(b"10.0.0.1/"), None);
    }
}
