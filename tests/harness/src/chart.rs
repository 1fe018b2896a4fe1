//! bench.png: for each operation a guest bar and a native bar, cycles on a log scale, the ratio
//! above each pair. Plotters' bitmap backend; text through ab_glyph with DejaVu Sans read at run
//! time from Debian's fonts-dejavu-core (tests/deps.sh installs it; the project ships no font).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench::Row;

/// Debian fonts-dejavu-core.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const GUEST: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const NATIVE: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
const HEIGHT: u32 = 640;

/// Wide enough that every operation's slot fits its longest label (`user-context-switch-sync`).
pub fn width(rows: usize) -> u32 {
    (180 + 200 * rows as u32).max(1100)
}

/// `1234567` → `1.2M`, for the log axis.
pub fn short(v: f64) -> String {
    let (d, s) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}{s}")
    } else {
        format!("{x:.1}{s}")
    }
}

/// The y range: whole decades around every value, with room above the tallest bar for labels.
pub fn decades(values: impl Iterator<Item = u64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for v in values.filter(|&v| v > 0) {
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    (hi > 0.0).then(|| {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf((hi * 4.0).log10().ceil()),
        )
    })
}

/// Register the font once; ab_glyph wants it for the life of the program.
fn load_font(font: &Path) -> Result<(), Box<dyn Error>> {
    let bytes = std::fs::read(font).map_err(|e| {
        format!(
            "{}: {e} (install Debian's fonts-dejavu-core: make deps)",
            font.display()
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a font ab_glyph can read", font.display()))?;
    Ok(())
}

/// Draw the chart of `rows` (those with at least one number) to `out`, with `caption` (the
/// machine) under it.
pub fn render(out: &Path, rows: &[Row], caption: &str, font: &Path) -> Result<(), Box<dyn Error>> {
    load_font(font)?;
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.guest_cycles.is_some() || r.native_cycles.is_some())
        .collect();
    let (lo, hi) = decades(
        rows.iter()
            .flat_map(|r| [r.guest_cycles, r.native_cycles])
            .flatten(),
    )
    .ok_or("no measurement to draw")?;
    let n = rows.len();
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();

    let root = BitMapBackend::new(out, (width(n), HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT - 36);
    bottom.draw_text(
        caption,
        &("sans-serif", 14)
            .into_font()
            .color(&RGBColor(0x55, 0x55, 0x55)),
        (20, 10),
    )?;

    // x counts hundredths of an operation's slot (an f64 axis cannot take both custom key points
    // and a label formatter): operation i spans [100 i, 100 i + 100), its label in the middle.
    let slot = |i: usize, hundredths: i32| i as i32 * 100 + hundredths;
    let centers: Vec<i32> = (0..n).map(|i| slot(i, 50)).collect();
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "lguest: guest vs native cost per operation",
            ("sans-serif", 26),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (0..slot(n, 0)).with_key_points(centers),
            (lo..hi).log_scale(),
        )?;
    let label_of = |v: &i32| {
        usize::try_from(v.div_euclid(100))
            .ok()
            .and_then(|i| names.get(i).cloned())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v| short(*v))
        .y_desc("TSC cycles per operation (log scale)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE)
        .draw()?;

    let bars = |offset: i32, color: RGBColor, pick: fn(&Row) -> Option<u64>| {
        let mut v = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if let Some(c) = pick(r) {
                let x = slot(i, offset);
                v.push(Rectangle::new(
                    [(x, lo), (x + 34, c as f64)],
                    color.filled(),
                ));
            }
        }
        v
    };
    chart
        .draw_series(bars(14, GUEST, |r| r.guest_cycles))?
        .label("guest (lgtest, ring 1)")
        .legend(|(x, y)| Rectangle::new([(x, y - 7), (x + 14, y + 7)], GUEST.filled()));
    chart
        .draw_series(bars(52, NATIVE, |r| r.native_cycles))?
        .label("native (nativebench, same VM)")
        .legend(|(x, y)| Rectangle::new([(x, y - 7), (x + 14, y + 7)], NATIVE.filled()));

    // The number on each bar, the ratio above each pair.
    let small = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    let grey = small.color(&RGBColor(0x99, 0x99, 0x99));
    let mut texts = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        for (v, dx) in [(r.guest_cycles, 31), (r.native_cycles, 69)] {
            let (text, y, style) = match v {
                Some(v) => (short(v as f64), v as f64 * 1.08, &small),
                None => ("n/a".to_string(), lo * 1.08, &grey),
            };
            texts.push(Text::new(text, (slot(i, dx), y), style));
        }
        if let Some(ratio) = r.ratio() {
            let top = r.guest_cycles.max(r.native_cycles).unwrap_or(1) as f64;
            texts.push(Text::new(
                format!("{ratio:.1}\u{d7}"),
                (slot(i, 50), top * 1.9),
                &small,
            ));
        }
    }
    chart.draw_series(texts)?;

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels() {
        assert_eq!(short(100.0), "100");
        assert_eq!(short(1000.0), "1k");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(1_000_000.0), "1M");
        assert_eq!(short(649_627.0), "649.6k");
        assert_eq!(short(3e9), "3G");
    }

    #[test]
    fn chart_widths() {
        assert_eq!(width(1), 1100);
        assert_eq!(width(5), 1180);
        assert_eq!(width(10), 2180);
    }

    #[test]
    fn decade_range() {
        assert_eq!(decades([400u64, 129_478].into_iter()), Some((100.0, 1e6)));
        assert_eq!(decades([0u64].into_iter()), None);
        assert_eq!(decades(std::iter::empty()), None);
    }

    #[test]
    fn no_font_no_chart() {
        let out = std::env::temp_dir().join("lg-bench-never-written.png");
        let err = render(&out, &[], "x", Path::new("/nonexistent/font.ttf")).unwrap_err();
        assert!(err.to_string().contains("fonts-dejavu-core"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn renders_a_png_when_the_font_is_there() {
        if !Path::new(FONT).is_file() {
            return;
        }
        let out = std::env::temp_dir().join(format!("lg-bench-test-{}.png", std::process::id()));
        let rows = [
            Row {
                name: "hypercall".into(),
                guest_cycles: Some(129_478),
                native_cycles: Some(400),
                exits_per_op: Some(1.0),
            },
            Row {
                name: "getpid".into(),
                ..Row::default()
            },
            Row {
                name: "trap-iret".into(),
                guest_cycles: Some(296_423),
                native_cycles: None,
                exits_per_op: Some(2.01),
            },
        ];
        render(&out, &rows, "test caption", Path::new(FONT)).unwrap();
        let png = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
