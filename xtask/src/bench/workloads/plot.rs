//! Allocated against used, over time, as an SVG: one panel per container
//! and resource, allocated in blue, used in orange, OOM kills in red.

use std::fmt::Write as _;

/// Blue: what is allocated (the limit in force).
pub const ALLOCATED: &str = "#1f77b4";
/// Orange: what is used.
pub const USED: &str = "#ff7f0e";
const OOM: &str = "#d62728";

/// One line of a panel: `(seconds, value)` points; `step` draws it as a
/// step function (a limit holds until it changes).
pub struct Line {
    pub label: &'static str,
    pub color: &'static str,
    pub step: bool,
    /// `None` breaks the line (no limit in force).
    pub points: Vec<(f64, Option<f64>)>,
}

/// One chart.
pub struct Panel {
    pub title: String,
    /// Unit shown on the y axis ("cores", "MiB").
    pub unit: &'static str,
    pub lines: Vec<Line>,
    /// Times of OOM kills, seconds.
    pub marks: Vec<f64>,
}

const W: f64 = 520.0;
const H: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 30.0;

/// A round step for about `n` ticks over `[0, max]`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if (v * 10.0).fract().abs() < 1e-9 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn panel(out: &mut String, p: &Panel, x0: f64, y0: f64, t_max: f64) {
    let y_max = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|&(_, v)| v))
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.08;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |t: f64| x0 + LEFT + t / t_max.max(1e-9) * pw;
    let sy = |v: f64| y0 + TOP + ph - v / y_max * ph;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        x0 + LEFT,
        y0 + 16.0,
        esc(&p.title)
    );
    let ys = nice_step(y_max, 4.0);
    let mut v = 0.0;
    while v <= y_max {
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            x0 + LEFT + pw,
            x0 + LEFT - 4.0,
            y + 3.0,
            fmt_tick(v)
        );
        v += ys;
    }
    let xs = nice_step(t_max, 6.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
            y0 + TOP,
            y0 + TOP + ph,
            y0 + TOP + ph + 12.0,
            fmt_tick(t)
        );
        t += xs;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#888"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">s</text><text x="{:.1}" y="{:.1}" font-size="10" transform="rotate(-90 {:.1} {:.1})" text-anchor="middle">{}</text>"##,
        x0 + LEFT,
        y0 + TOP,
        x0 + LEFT + pw,
        y0 + TOP + ph + 24.0,
        x0 + 12.0,
        y0 + TOP + ph / 2.0,
        x0 + 12.0,
        y0 + TOP + ph / 2.0,
        p.unit
    );
    for &m in &p.marks {
        let x = sx(m);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{OOM}" stroke-width="2"/>"#,
            y0 + TOP,
            y0 + TOP + ph
        );
    }
    for l in &p.lines {
        let mut segs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        let mut last: Option<f64> = None;
        for &(t, v) in &l.points {
            match v {
                Some(v) => {
                    let seg = segs.last_mut().expect("one segment at least");
                    if l.step
                        && let Some(prev) = last
                    {
                        seg.push((sx(t), sy(prev)));
                    }
                    seg.push((sx(t), sy(v)));
                    last = Some(v);
                }
                None => {
                    last = None;
                    if segs.last().is_some_and(|s| !s.is_empty()) {
                        segs.push(Vec::new());
                    }
                }
            }
        }
        for s in segs.iter().filter(|s| s.len() > 1) {
            let pts: Vec<String> = s.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                l.color,
                pts.join(" ")
            );
        }
    }
    // Legend, top right.
    let mut lx = x0 + W - RIGHT;
    for l in p.lines.iter().rev() {
        lx -= 8.0 + 6.5 * l.label.len() as f64 + 18.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            lx + 14.0,
            y0 + 12.0,
            y0 + 12.0,
            l.color,
            lx + 18.0,
            y0 + 16.0,
            esc(l.label)
        );
    }
}

/// An SVG document: `title` above a grid of panels (`rows`, each a row of
/// panels side by side), all on one time axis `[0, t_max]` seconds.
pub fn svg(title: &str, rows: &[Vec<Panel>], t_max: f64) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (width, height) = (W * cols as f64, 30.0 + H * rows.len() as f64);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="15" font-weight="bold">{}</text>
"#,
        esc(title)
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, p) in row.iter().enumerate() {
            panel(&mut out, p, W * c as f64, 30.0 + H * r as f64, t_max);
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(2000.0, 4.0), 500.0);
        assert_eq!(nice_step(2.2, 4.0), 1.0);
        assert_eq!(nice_step(100.0, 6.0), 20.0);
    }

    #[test]
    fn lines_break_where_there_is_no_limit() {
        let p = Panel {
            title: "cpu".into(),
            unit: "cores",
            lines: vec![Line {
                label: "allocated",
                color: ALLOCATED,
                step: true,
                points: vec![(0.0, Some(1.0)), (1.0, Some(2.0)), (2.0, None), (3.0, Some(1.0)), (4.0, Some(1.0))],
            }],
            marks: vec![2.5],
        };
        let s = svg("t", &[vec![p]], 4.0);
        assert_eq!(s.matches("<polyline").count(), 2, "{s}");
        assert!(s.contains(OOM));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
    }
}
