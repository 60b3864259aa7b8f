//! The throughput chart, drawn on the server as SVG: succeeded and failed
//! jobs per step, two lines over a light grid, with the largest value and
//! the span's ends as labels. No script, no external asset.

use std::fmt::Write;

use crate::history::Minute;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 12.0;

/// The chart of `points` (step start in ms since the epoch, totals), with the
/// x labels made by `label`.
pub(crate) fn throughput(points: &[(u64, Minute)], label: impl Fn(u64) -> String) -> String {
    let max = points.iter().map(|(_, m)| m.succeeded.max(m.failed)).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| LEFT + if points.len() > 1 { plot_w * i as f64 / (points.len() - 1) as f64 } else { 0.0 };
    let y = |v: u64| TOP + plot_h * (1.0 - v as f64 / max as f64);
    let line = |value: &dyn Fn(&Minute) -> u64| {
        points.iter().enumerate().fold(String::new(), |mut d, (i, (_, m))| {
            let _ = write!(d, "{}{:.1},{:.1}", if i == 0 { "M" } else { " L" }, x(i), y(value(m)));
            d
        })
    };
    let mut svg = String::with_capacity(4096 + points.len() * 30);
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="jobs succeeded and failed per step" xmlns="http://www.w3.org/2000/svg">"#
    );
    for k in 0..=4 {
        let gy = TOP + plot_h * f64::from(k) / 4.0;
        let _ = write!(svg, r#"<line class="grid" x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}"/>"#, WIDTH - 8.0);
    }
    let _ = write!(svg, r#"<text class="axis" x="{}" y="{}" text-anchor="end">{max}</text>"#, LEFT - 6.0, TOP + 4.0);
    let _ = write!(svg, r#"<text class="axis" x="{}" y="{}" text-anchor="end">0</text>"#, LEFT - 6.0, TOP + plot_h);
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let base = HEIGHT - 6.0;
        let _ = write!(svg, r#"<text class="axis" x="{LEFT}" y="{base}">{}</text>"#, escape(&label(first.0)));
        let _ = write!(
            svg,
            r#"<text class="axis" x="{}" y="{base}" text-anchor="end">{}</text>"#,
            WIDTH - 8.0,
            escape(&label(last.0))
        );
    }
    if !points.is_empty() {
        let _ = write!(svg, r#"<path class="succeeded" d="{}"/>"#, line(&|m| m.succeeded));
        let _ = write!(svg, r#"<path class="failed" d="{}"/>"#, line(&|m| m.failed));
    }
    svg.push_str("</svg>");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_lines_scaled_to_the_largest_value() {
        let points = [
            (0, Minute { succeeded: 10, failed: 0 }),
            (60_000, Minute { succeeded: 20, failed: 5 }),
            (120_000, Minute { succeeded: 0, failed: 20 }),
        ];
        let svg = throughput(&points, |ms| format!("t{}", ms / 60_000));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains(">20</text>") && svg.contains(">t0</text>") && svg.contains(">t2</text>"), "{svg}");
        // The largest value touches the top of the plot.
        assert!(svg.contains(&format!("L{:.1},{:.1}", LEFT + (WIDTH - LEFT - 8.0) / 2.0, TOP)), "{svg}");
        assert!(!throughput(&[], |_| String::new()).contains("<path"));
    }
}
