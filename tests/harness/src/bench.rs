//! `vmtest bench` (`make bench`): the lines tests/vm/scenarios/bench.sh prints, turned into a
//! table of guest vs native cycles per operation, bench.json and (chart.rs) bench.png.
//!
//! Benchmarks, not tests: nothing here judges a number, and a number that was not measured is
//! shown as "-" (null in the JSON), never made up.

use serde_json::{json, Value};

/// The table's rows, in order: each is measured by the guest (`bench: <name> ...`) and natively
/// in the test VM (`native: <name> ...`). Names the guest or nativebench print beyond these
/// become extra rows after them, in the order they first appear.
pub const ORDER: [&str; 5] = [
    "hypercall",
    "getpid",
    "page-fault",
    "context-switch",
    "timer-latency",
];

/// What one operation costs, as far as it was measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub name: String,
    /// TSC cycles per operation in the guest.
    pub guest_cycles: Option<u64>,
    /// TSC cycles per operation natively in the test VM.
    pub native_cycles: Option<u64>,
    /// World switches (guest exits to the host, counted by lg.ko) per guest operation.
    pub exits_per_op: Option<f64>,
}

impl Row {
    /// guest / native, rounded to one decimal.
    pub fn ratio(&self) -> Option<f64> {
        let (g, n) = (self.guest_cycles?, self.native_cycles?);
        (n > 0).then(|| (g as f64 / n as f64 * 10.0).round() / 10.0)
    }
}

/// Everything the bench section of the console said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    pub rows: Vec<Row>,
    /// `info: <key> <value>` lines, in order.
    pub info: Vec<(String, String)>,
    /// The guest runs (`guest: lgtest=<mode> ...`).
    pub guest_runs: Vec<String>,
    /// `note:` lines, skipped benchmarks, numbers measured twice.
    pub notes: Vec<String>,
    /// nativebench's TSC rate line.
    pub native_tsc_khz: Option<u64>,
}

/// `native: <name> <cycles> cycles`.
pub fn parse_native(line: &str) -> Option<(String, u64)> {
    let mut w = line.trim().strip_prefix("native: ")?.split_whitespace();
    let name = w.next()?;
    let cycles = w.next()?.parse().ok()?;
    (w.next()? == "cycles" && w.next().is_none()).then(|| (name.to_string(), cycles))
}

/// `bench: <name> <cycles> cycles [<exits> exits] [<n> <unit>]...`, all per operation (the
/// guest's user-mode benches add `<ns> ns`; other pairs are accepted and ignored).
pub fn parse_guest(line: &str) -> Option<(String, u64, Option<f64>)> {
    let mut w = line.trim().strip_prefix("bench: ")?.split_whitespace();
    let name = w.next()?;
    let cycles = w.next()?.parse().ok()?;
    if w.next()? != "cycles" {
        return None;
    }
    let mut exits = None;
    while let Some(value) = w.next() {
        let value: f64 = value.parse().ok().filter(|x: &f64| x.is_finite())?;
        if w.next()? == "exits" {
            exits = Some(value);
        }
    }
    Some((name.to_string(), cycles, exits))
}

impl Collected {
    fn row(&mut self, name: &str) -> &mut Row {
        let i = match self.rows.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    name: name.to_string(),
                    ..Row::default()
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    /// Read the bench section's lines. A name measured twice keeps the later number (bench.sh
    /// runs the guest's kernel-mode suite before its user-mode one) and says so in a note.
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> Collected {
        let mut c = Collected::default();
        for name in ORDER {
            c.row(name);
        }
        for line in lines.iter().map(|l| l.as_ref().trim()) {
            if let Some((name, cycles)) = parse_native(line) {
                let row = c.row(&name);
                let old = row.native_cycles.replace(cycles);
                if let Some(old) = old {
                    c.notes.push(format!(
                        "native {name} measured twice: {old}, then {cycles} (kept)"
                    ));
                }
            } else if let Some((name, cycles, exits)) = parse_guest(line) {
                let row = c.row(&name);
                let old = row.guest_cycles.replace(cycles);
                row.exits_per_op = exits;
                if let Some(old) = old {
                    c.notes.push(format!(
                        "guest {name} measured twice: {old}, then {cycles} (kept)"
                    ));
                }
            } else if let Some(rest) = line.strip_prefix("info: ") {
                let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                c.info.push((k.to_string(), v.trim().to_string()));
            } else if let Some(rest) = line.strip_prefix("guest: ") {
                c.guest_runs.push(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("note: ") {
                c.notes.push(rest.trim_end().to_string());
            } else if let Some(rest) = line.strip_prefix("nativebench: ") {
                if let Some(khz) = rest.strip_prefix("tsc ").and_then(|r| r.split(' ').next()) {
                    c.native_tsc_khz = khz.parse().ok();
                } else {
                    c.notes.push(line.to_string());
                }
            } else if line.starts_with("bench: ") {
                // `bench: skipped (...)`, `bench: <name> skipped (...)`.
                c.notes.push(line.to_string());
            }
        }
        c
    }

    pub fn info(&self, key: &str) -> Option<&str> {
        self.info
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn cell_u64(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// The table, as Markdown (it reads as plain text too): name | guest cycles | native cycles |
/// ratio | world switches per op.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "operation",
        "guest cycles",
        "native cycles",
        "guest/native",
        "world switches/op",
    ];
    let body: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                cell_u64(r.guest_cycles),
                cell_u64(r.native_cycles),
                r.ratio().map_or("-".into(), |x| format!("{x:.1}")),
                r.exits_per_op.map_or("-".into(), |x| format!("{x:.2}")),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &body {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 0 {
                s += &format!(" {c:<w$} |");
            } else {
                s += &format!(" {c:>w$} |");
            }
        }
        s + "\n"
    };
    let mut out = line(&header.map(String::from));
    out += "|";
    for (i, w) in width.iter().enumerate() {
        out += &if i == 0 {
            format!("{}|", "-".repeat(w + 2))
        } else {
            format!("{}:|", "-".repeat(w + 1))
        };
    }
    out += "\n";
    for r in &body {
        out += &line(r);
    }
    out
}

/// What the numbers were measured on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    pub qemu_cpu: String,
    pub smp: u32,
    pub qemu_version: String,
    pub host_cpu: String,
    /// UTC, RFC 3339.
    pub date: String,
}

impl Machine {
    /// One line for the table's caption.
    pub fn caption(&self) -> String {
        format!(
            "TSC cycles per operation; qemu -cpu {} -smp {} (TCG, QEMU {}) on {}; {}",
            self.qemu_cpu, self.smp, self.qemu_version, self.host_cpu, self.date
        )
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// bench.json.
pub fn json(m: &Machine, c: &Collected) -> Value {
    let rows: Vec<Value> = c
        .rows
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "guest_cycles": r.guest_cycles,
                "native_cycles": r.native_cycles,
                "ratio": r.ratio(),
                "exits_per_op": r.exits_per_op.map(round2),
            })
        })
        .collect();
    let guest_tsc_khz: Option<u64> = c.info("guest-tsc-khz").and_then(|v| v.parse().ok());
    json!({
        "unit": "TSC cycles per operation (exits_per_op: guest world switches per operation)",
        "machine": {
            "qemu_cpu": m.qemu_cpu,
            "smp": m.smp,
            "accel": "tcg",
            "qemu_version": m.qemu_version,
            "host_cpu": m.host_cpu,
            "vm_cpu_model": c.info("vm-cpu-model"),
            "vm_kernel": c.info("vm-kernel"),
            "native_tsc_khz": c.native_tsc_khz,
            "guest_tsc_khz": guest_tsc_khz.filter(|&k| k > 0),
            "date": m.date,
        },
        "guest_runs": c.guest_runs,
        "rows": rows,
        "notes": c.notes,
    })
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-25T16:53:35Z`).
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub const DOC_BEGIN: &str = "<!-- BENCH-TABLE-BEGIN (make bench rewrites this part) -->";
pub const DOC_END: &str = "<!-- BENCH-TABLE-END -->";

/// `doc` with what lies between the DOC_BEGIN and DOC_END lines replaced by `block`; `None` if
/// the markers are not there.
pub fn splice_doc(doc: &str, block: &str) -> Option<String> {
    let b = doc.find(DOC_BEGIN)? + DOC_BEGIN.len();
    let e = b + doc[b..].find(DOC_END)?;
    Some(format!(
        "{}\n{}\n{}",
        &doc[..b],
        block.trim_end(),
        &doc[e..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_native_lines() {
        assert_eq!(
            parse_native("native: page-fault 4852 cycles"),
            Some(("page-fault".into(), 4852))
        );
        assert_eq!(
            parse_native("  native: getpid 1 cycles\r"),
            Some(("getpid".into(), 1))
        );
        assert_eq!(parse_native("native: getpid x cycles"), None);
        assert_eq!(parse_native("native: getpid 5"), None);
        assert_eq!(parse_native("native: getpid 5 cycles extra"), None);
        assert_eq!(parse_native("nativebench: tsc 2596119 kHz"), None);
    }

    #[test]
    fn parses_guest_lines() {
        assert_eq!(
            parse_guest("bench: hypercall 129478 cycles 1.00 exits"),
            Some(("hypercall".into(), 129_478, Some(1.0)))
        );
        assert_eq!(
            parse_guest("bench: page-fault 649627 cycles 4.02 exits"),
            Some(("page-fault".into(), 649_627, Some(4.02)))
        );
        assert_eq!(
            parse_guest("bench: trap-iret 7 cycles"),
            Some(("trap-iret".into(), 7, None))
        );
        assert_eq!(parse_guest("bench: skipped (rdtsc traps at ring 1)"), None);
        assert_eq!(
            parse_guest("bench: page-fault skipped (out of memory)"),
            None
        );
        assert_eq!(
            parse_guest("bench: user-syscall 52011 cycles 1.00 exits 20004 ns"),
            Some(("user-syscall".into(), 52_011, Some(1.0)))
        );
        assert_eq!(parse_guest("bench: x 1 cycles 2"), None);
        assert_eq!(parse_guest("bench: x 1 cycles nan exits"), None);
        assert_eq!(parse_guest("bench: x 1 cycles 2.0 exits 3"), None);
        assert_eq!(parse_guest("bench: x 1 cycles exits 2.0"), None);
    }

    fn sample() -> Collected {
        Collected::from_lines(&[
            "info: vm-cpu-model QEMU TCG CPU version 2.5+",
            "nativebench: tsc 2596119 kHz (against CLOCK_MONOTONIC), cpu 0, median of 7 runs",
            "native: hypercall 400 cycles",
            "native: getpid 492 cycles",
            "native: timer-latency 67285 cycles",
            "guest: lgtest=suite exit 0",
            "info: guest-tsc-khz 0",
            "bench: hypercall 129478 cycles 1.00 exits",
            "bench: trap-iret 296423 cycles 2.01 exits",
            "bench: page-fault 649627 cycles 4.02 exits",
            "bench: page-fault 700000 cycles 3.00 exits",
            "bench: getpid skipped (no user mode)",
            "note: lguest ... exited 1",
            "ok 1 - something else",
        ])
    }

    #[test]
    fn rows_in_order_then_extras_missing_stay_missing() {
        let c = sample();
        let names: Vec<&str> = c.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hypercall",
                "getpid",
                "page-fault",
                "context-switch",
                "timer-latency",
                "trap-iret"
            ]
        );
        let hc = &c.rows[0];
        assert_eq!(hc.guest_cycles, Some(129_478));
        assert_eq!(hc.native_cycles, Some(400));
        assert_eq!(hc.ratio(), Some(323.7));
        assert_eq!(c.rows[1].guest_cycles, None);
        assert_eq!(c.rows[1].ratio(), None);
        assert_eq!(c.rows[2].guest_cycles, Some(700_000));
        assert_eq!(c.rows[2].exits_per_op, Some(3.0));
        assert_eq!(c.rows[2].native_cycles, None);
        assert_eq!(
            c.rows[3],
            Row {
                name: "context-switch".into(),
                ..Row::default()
            }
        );
        assert_eq!(c.native_tsc_khz, Some(2_596_119));
        assert_eq!(c.guest_runs, ["lgtest=suite exit 0"]);
        assert_eq!(c.info("vm-cpu-model"), Some("QEMU TCG CPU version 2.5+"));
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("page-fault measured twice")));
        assert!(c.notes.iter().any(|n| n.contains("getpid skipped")));
        assert!(c.notes.iter().any(|n| n.contains("exited 1")));
    }

    #[test]
    fn table_shows_dashes_for_missing() {
        let t = table(&sample().rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2 + 6);
        assert!(lines[0].starts_with("| operation "));
        assert!(lines[1].starts_with("|-"));
        assert!(lines[1].ends_with(":|"));
        let hc: Vec<&str> = lines[2].split('|').map(str::trim).collect();
        assert_eq!(hc, ["", "hypercall", "129478", "400", "323.7", "1.00", ""]);
        let cs: Vec<&str> = lines[5].split('|').map(str::trim).collect();
        assert_eq!(cs, ["", "context-switch", "-", "-", "-", "-", ""]);
        // Every line as wide as the header.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }

    #[test]
    fn json_has_nulls_not_zeros() {
        let m = Machine {
            qemu_cpu: "max".into(),
            smp: 2,
            date: "2026-11-25T16:53:35Z".into(),
            ..Machine::default()
        };
        let v = json(&m, &sample());
        assert_eq!(v["machine"]["qemu_cpu"], "max");
        assert_eq!(v["machine"]["date"], "2026-11-25T16:53:35Z");
        assert_eq!(v["machine"]["guest_tsc_khz"], Value::Null);
        assert_eq!(v["machine"]["native_tsc_khz"], 2_596_119);
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0]["name"], "hypercall");
        assert_eq!(rows[0]["ratio"], 323.7);
        assert_eq!(rows[0]["exits_per_op"], 1.0);
        assert_eq!(rows[3]["guest_cycles"], Value::Null);
        assert_eq!(rows[3]["native_cycles"], Value::Null);
        assert_eq!(rows[3]["ratio"], Value::Null);
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_795_625_615), "2026-11-25T16:53:35Z");
    }

    #[test]
    fn splices_between_markers() {
        let doc = format!("# t\n\n{DOC_BEGIN}\nold\ntable\n{DOC_END}\n\nafter\n");
        let new = splice_doc(&doc, "new\n").unwrap();
        assert_eq!(
            new,
            format!("# t\n\n{DOC_BEGIN}\nnew\n{DOC_END}\n\nafter\n")
        );
        assert_eq!(splice_doc(&new, "new"), Some(new.clone()));
        assert_eq!(splice_doc("no markers", "x"), None);
    }
}
