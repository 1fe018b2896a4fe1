//! The pure parts of nativebench: the command line, medians, and cycle arithmetic.

/// The benchmarks, in the order they run and print. Each name is the guest benchmark's it is the
/// native analogue of (`bench: <name> ...` lines of guests/lgtest).
pub const NAMES: [&str; 5] = [
    "hypercall",
    "getpid",
    "page-fault",
    "context-switch",
    "timer-latency",
];

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Timed runs per benchmark; the median run is reported.
    pub runs: usize,
    /// The benchmarks to run, in `NAMES` order.
    pub names: Vec<&'static str>,
}

pub const USAGE: &str = "usage: nativebench [--runs N] [NAME...]   (NAME: hypercall getpid page-fault context-switch timer-latency)";

/// `[--runs N] [NAME...]`; no names means all of them.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Options, String> {
    let mut runs = 7;
    let mut wanted = Vec::new();
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(a) = it.next() {
        match a {
            "--runs" => {
                let v = it.next().ok_or("--runs needs a value")?;
                runs = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("bad --runs '{v}' (1..=1000)"))?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            name => {
                let known = NAMES
                    .iter()
                    .find(|n| **n == name)
                    .ok_or_else(|| format!("unknown benchmark '{name}'"))?;
                wanted.push(*known);
            }
        }
    }
    let names = NAMES
        .iter()
        .copied()
        .filter(|n| wanted.is_empty() || wanted.contains(n))
        .collect();
    Ok(Options { runs, names })
}

/// The median of `v` (the lower middle one of an even count), `None` if empty. Sorts `v`.
pub fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// Cycles per operation of one timed run, rounded to nearest.
pub fn per_op(cycles: u64, ops: u64) -> u64 {
    if ops == 0 {
        return 0;
    }
    (cycles + ops / 2) / ops
}

/// The TSC rate in Hz from a TSC delta over a CLOCK_MONOTONIC delta.
pub fn tsc_hz(tsc_delta: u64, ns_delta: u64) -> Option<u64> {
    if ns_delta == 0 {
        return None;
    }
    let hz = u128::from(tsc_delta) * 1_000_000_000 / u128::from(ns_delta);
    u64::try_from(hz).ok().filter(|&h| h > 0)
}

/// `ns` nanoseconds in TSC cycles at `hz`.
pub fn ns_to_cycles(ns: u64, hz: u64) -> u64 {
    u64::try_from(u128::from(ns) * u128::from(hz) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// The line the harness reads: `native: <name> <cycles> cycles`.
pub fn line(name: &str, cycles: u64) -> String {
    format!("native: {name} {cycles} cycles")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut [7, 7, 7, 1000]), Some(7));
    }

    #[test]
    fn args_default_all() {
        let o = parse_args::<&str>(&[]).unwrap();
        assert_eq!(o.runs, 7);
        assert_eq!(o.names, NAMES.to_vec());
    }

    #[test]
    fn args_subset_keeps_canonical_order() {
        let o = parse_args(&["timer-latency", "--runs", "3", "hypercall"]).unwrap();
        assert_eq!(o.runs, 3);
        assert_eq!(o.names, vec!["hypercall", "timer-latency"]);
    }

    #[test]
    fn args_errors() {
        assert!(parse_args(&["--runs"]).is_err());
        assert!(parse_args(&["--runs", "0"]).is_err());
        assert!(parse_args(&["--runs", "x"]).is_err());
        assert!(parse_args(&["nop"]).is_err());
        assert!(parse_args(&["--help"]).is_err());
    }

    #[test]
    fn cycle_arithmetic() {
        assert_eq!(per_op(1000, 3), 333);
        assert_eq!(per_op(1001, 2), 501);
        assert_eq!(per_op(5, 0), 0);
        assert_eq!(tsc_hz(2_000_000, 1_000_000), Some(2_000_000_000));
        assert_eq!(tsc_hz(1, 0), None);
        assert_eq!(ns_to_cycles(200_000, 2_000_000_000), 400_000);
        assert_eq!(ns_to_cycles(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn line_format() {
        assert_eq!(line("page-fault", 1234), "native: page-fault 1234 cycles");
    }
}
