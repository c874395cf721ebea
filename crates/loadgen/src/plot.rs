//! The latency-over-time PNG: accepted throughput per second (top) and P50 /
//! P99 latency per second on a log scale (bottom), with bands on the seconds
//! that had 429s (orange) or errors (red).
//!
//! A table of percentiles says *how bad*; the picture says *when* and whether
//! the 429s and latency spikes line up. plotters draws the shapes and encodes
//! the PNG. Its text rendering needs a TrueType font from the system or
//! embedded in the binary; neither is a given on a fresh machine, so labels are
//! drawn here with a small built-in 5×7 pixel font instead (upper case, digits
//! and a little punctuation), which needs nothing at run time.

use std::path::Path;

use plotters::prelude::*;
use thiserror::Error;

use super::report::{LoadReport, SecondStats};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 800;
/// Plot-area bounds in pixels (left, right; tops and bottoms per panel).
const LEFT: i32 = 90;
const RIGHT: i32 = 1170;
const TOP_PANEL: (i32, i32) = (60, 370);
const BOTTOM_PANEL: (i32, i32) = (430, 740);

const BLUE: RGBColor = RGBColor(31, 119, 180);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 52, 180);
const GREY: RGBColor = RGBColor(150, 150, 150);
const GRID: RGBColor = RGBColor(225, 225, 225);
const INK: RGBColor = RGBColor(40, 40, 40);
const ORANGE_MARK: RGBColor = RGBColor(255, 150, 30);
const RED_MARK: RGBColor = RGBColor(220, 40, 40);

/// Why the PNG could not be written.
#[derive(Debug, Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    /// The PNG being written.
    pub path: String,
    /// What the drawing library reported.
    pub message: String,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws the report's timeline into a PNG at `path`.
pub fn write_png(report: &LoadReport, path: &Path) -> Result<(), PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, report).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type DrawResult =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(root: &Area<'_>, report: &LoadReport) -> DrawResult {
    root.fill(&WHITE)?;
    let timeline = &report.results.timeline;
    let seconds = (timeline.len().max(1)) as f64;
    let c = &report.config;
    let title = format!(
        "CHAT-ANALYTICS LOADGEN  OFFERED {:.0} MSG/S  {} CONNECTIONS  {}",
        c.rate,
        c.connections,
        report.started_at.format("%Y-%m-%d %H:%M UTC")
    );
    text(root, 20, 16, 2, INK, &title)?;

    // Top: throughput, linear.
    let peak = timeline
        .iter()
        .map(|t| t.accepted_messages as f64)
        .fold(c.rate, f64::max);
    let (tp_max, tp_step) = nice_axis(peak * 1.1);
    let top = Panel {
        top: TOP_PANEL.0,
        bottom: TOP_PANEL.1,
        xmax: seconds,
        scale: Scale::Linear { max: tp_max },
    };
    marks(root, &top, timeline)?;
    top.grid_linear(root, tp_step)?;
    top.x_ticks(root)?;
    top.frame(root)?;
    if c.rate > 0.0 {
        dashed(root, &top, c.rate, GREY)?;
    }
    // Seconds past the configured duration only hold the drain's stragglers;
    // their small counts are not a throughput drop.
    let measured_seconds = c.duration_s.ceil().max(1.0) as u32;
    series(
        root,
        &top,
        timeline,
        |t| (t.second < measured_seconds).then_some(t.accepted_messages as f64),
        BLUE,
    )?;
    text(root, LEFT, TOP_PANEL.0 - 18, 2, INK, "ACCEPTED MSG/S")?;
    legend(
        root,
        TOP_PANEL.0 - 18,
        &[
            (BLUE, "ACCEPTED"),
            (GREY, "OFFERED"),
            (ORANGE_MARK, "429"),
            (RED_MARK, "ERRORS"),
        ],
    )?;

    // Bottom: latency, log scale so a stall does not flatten P50.
    let lowest = timeline
        .iter()
        .filter(|t| t.p50_ms > 0.0)
        .map(|t| t.p50_ms)
        .fold(f64::INFINITY, f64::min);
    let highest = timeline.iter().map(|t| t.p99_ms).fold(0.0, f64::max);
    let (lo_exp, hi_exp) = log_bounds(lowest, highest);
    let bottom = Panel {
        top: BOTTOM_PANEL.0,
        bottom: BOTTOM_PANEL.1,
        xmax: seconds,
        scale: Scale::Log { lo_exp, hi_exp },
    };
    marks(root, &bottom, timeline)?;
    bottom.grid_log(root)?;
    bottom.x_ticks(root)?;
    bottom.frame(root)?;
    series(
        root,
        &bottom,
        timeline,
        |t| (t.p50_ms > 0.0).then_some(t.p50_ms),
        GREEN,
    )?;
    series(
        root,
        &bottom,
        timeline,
        |t| (t.p99_ms > 0.0).then_some(t.p99_ms),
        PURPLE,
    )?;
    text(root, LEFT, BOTTOM_PANEL.0 - 18, 2, INK, "LATENCY MS (LOG)")?;
    legend(
        root,
        BOTTOM_PANEL.0 - 18,
        &[(GREEN, "P50"), (PURPLE, "P99")],
    )?;
    text(
        root,
        LEFT + (RIGHT - LEFT) / 2 - 150,
        BOTTOM_PANEL.1 + 30,
        2,
        INK,
        "SECONDS AFTER WARM-UP",
    )?;
    Ok(())
}

/// How a panel maps values to pixels vertically.
#[derive(Debug, Clone, Copy)]
enum Scale {
    Linear { max: f64 },
    Log { lo_exp: i32, hi_exp: i32 },
}

/// One plot area and its coordinate mapping.
struct Panel {
    top: i32,
    bottom: i32,
    xmax: f64,
    scale: Scale,
}

impl Panel {
    fn x(&self, seconds: f64) -> i32 {
        LEFT + ((seconds / self.xmax).clamp(0.0, 1.0) * f64::from(RIGHT - LEFT)).round() as i32
    }

    fn y(&self, v: f64) -> i32 {
        let frac = match self.scale {
            Scale::Linear { max } => {
                if max > 0.0 {
                    v / max
                } else {
                    0.0
                }
            }
            Scale::Log { lo_exp, hi_exp } => {
                let span = f64::from((hi_exp - lo_exp).max(1));
                (v.max(1e-9).log10() - f64::from(lo_exp)) / span
            }
        };
        self.bottom - (frac.clamp(0.0, 1.0) * f64::from(self.bottom - self.top)).round() as i32
    }

    fn frame(&self, root: &Area<'_>) -> DrawResult {
        root.draw(&Rectangle::new(
            [(LEFT, self.top), (RIGHT, self.bottom)],
            INK.stroke_width(1),
        ))
    }

    fn hline(&self, root: &Area<'_>, y: i32) -> DrawResult {
        root.draw(&PathElement::new(vec![(LEFT, y), (RIGHT, y)], GRID))
    }

    fn grid_linear(&self, root: &Area<'_>, step: f64) -> DrawResult {
        let Scale::Linear { max } = self.scale else {
            return Ok(());
        };
        let mut v = 0.0;
        while v <= max + step * 0.01 {
            let y = self.y(v);
            self.hline(root, y)?;
            let label = format_tick(v);
            let w = text_width(&label, 2);
            text(root, LEFT - 8 - w, y - 7, 2, INK, &label)?;
            v += step;
        }
        Ok(())
    }

    fn grid_log(&self, root: &Area<'_>) -> DrawResult {
        let Scale::Log { lo_exp, hi_exp } = self.scale else {
            return Ok(());
        };
        for e in lo_exp..=hi_exp {
            let v = 10f64.powi(e);
            let y = self.y(v);
            self.hline(root, y)?;
            let label = format_tick(v);
            let w = text_width(&label, 2);
            text(root, LEFT - 8 - w, y - 7, 2, INK, &label)?;
        }
        Ok(())
    }

    fn x_ticks(&self, root: &Area<'_>) -> DrawResult {
        let (_, step) = nice_axis(self.xmax);
        let mut s = 0.0;
        while s <= self.xmax + step * 0.01 {
            let x = self.x(s);
            root.draw(&PathElement::new(
                vec![(x, self.top), (x, self.bottom)],
                GRID,
            ))?;
            let label = format_tick(s);
            let w = text_width(&label, 2);
            text(root, x - w / 2, self.bottom + 8, 2, INK, &label)?;
            s += step;
        }
        Ok(())
    }
}

/// Orange (429) and red (error) bands behind the series.
fn marks(root: &Area<'_>, p: &Panel, timeline: &[SecondStats]) -> DrawResult {
    for t in timeline {
        let x0 = p.x(f64::from(t.second));
        let x1 = p.x(f64::from(t.second) + 1.0).max(x0 + 2);
        if t.throttled > 0 {
            root.draw(&Rectangle::new(
                [(x0, p.top), (x1, p.bottom)],
                ORANGE_MARK.mix(0.15).filled(),
            ))?;
            root.draw(&Rectangle::new(
                [(x0, p.top), (x1, p.top + 8)],
                ORANGE_MARK.filled(),
            ))?;
        }
        if t.errors > 0 {
            root.draw(&Rectangle::new(
                [(x0, p.top), (x1, p.bottom)],
                RED_MARK.mix(0.2).filled(),
            ))?;
            root.draw(&Rectangle::new(
                [(x0, p.bottom - 8), (x1, p.bottom)],
                RED_MARK.filled(),
            ))?;
        }
    }
    Ok(())
}

/// A polyline through the per-second values (at the middle of each second);
/// seconds without a value break the line.
fn series(
    root: &Area<'_>,
    p: &Panel,
    timeline: &[SecondStats],
    value: impl Fn(&SecondStats) -> Option<f64>,
    color: RGBColor,
) -> DrawResult {
    let mut run: Vec<(i32, i32)> = Vec::new();
    let flush = |run: &mut Vec<(i32, i32)>| -> DrawResult {
        if run.len() == 1 {
            let (x, y) = run[0];
            root.draw(&Circle::new((x, y), 2, color.filled()))?;
        } else if run.len() > 1 {
            root.draw(&PathElement::new(
                std::mem::take(run),
                color.stroke_width(2),
            ))?;
        }
        run.clear();
        Ok(())
    };
    for t in timeline {
        match value(t) {
            Some(v) => run.push((p.x(f64::from(t.second) + 0.5), p.y(v))),
            None => flush(&mut run)?,
        }
    }
    flush(&mut run)
}

/// A horizontal dashed line at `v`.
fn dashed(root: &Area<'_>, p: &Panel, v: f64, color: RGBColor) -> DrawResult {
    let y = p.y(v);
    let mut x = LEFT;
    while x < RIGHT {
        let end = (x + 8).min(RIGHT);
        root.draw(&PathElement::new(
            vec![(x, y), (end, y)],
            color.stroke_width(2),
        ))?;
        x += 14;
    }
    Ok(())
}

/// Colour swatches with names, right-aligned above a panel.
fn legend(root: &Area<'_>, y: i32, items: &[(RGBColor, &str)]) -> DrawResult {
    let width: i32 = items.iter().map(|(_, s)| 20 + text_width(s, 2) + 16).sum();
    let mut x = RIGHT - width;
    for (color, name) in items {
        root.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], color.filled()))?;
        x += 20;
        text(root, x, y, 2, INK, name)?;
        x += text_width(name, 2) + 16;
    }
    Ok(())
}

/// A round upper bound and tick step for a linear axis reaching `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.2);
    }
    let rough = max / 6.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// Decades spanning `lowest..highest` ms, at least two.
fn log_bounds(lowest: f64, highest: f64) -> (i32, i32) {
    let lo = if lowest.is_finite() && lowest > 0.0 {
        (lowest.log10().floor() as i32).clamp(-3, 6)
    } else {
        -1
    };
    let hi = if highest.is_finite() && highest > 0.0 {
        highest.log10().ceil() as i32
    } else {
        lo + 2
    };
    (lo, hi.clamp(lo + 1, 7))
}

fn format_tick(v: f64) -> String {
    if v >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}K", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Width in pixels of `s` drawn at `scale`.
fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 6 * scale
}

/// Draws `s` with the 5×7 pixel font, top-left at (x, y), each font pixel a
/// `scale`×`scale` square. Lower case is drawn as upper case.
fn text(root: &Area<'_>, x: i32, y: i32, scale: i32, color: RGBColor, s: &str) -> DrawResult {
    let mut cx = x;
    for ch in s.chars() {
        let rows = glyph(ch.to_ascii_uppercase());
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..5 {
                if bits & (0x10 >> c) != 0 {
                    let px = cx + c * scale;
                    let py = y + r as i32 * scale;
                    root.draw(&Rectangle::new(
                        [(px, py), (px + scale - 1, py + scale - 1)],
                        color.filled(),
                    ))?;
                }
            }
        }
        cx += 6 * scale;
    }
    Ok(())
}

/// Rows of a 5×7 glyph, bit 4 is the leftmost pixel.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '\'' => [0x0C, 0x04, 0x08, 0, 0, 0, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes_round_up() {
        assert_eq!(nice_axis(1100.0), (1200.0, 200.0));
        assert_eq!(nice_axis(11_000.0), (12_000.0, 2_000.0));
        assert_eq!(nice_axis(7.0), (8.0, 2.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn log_bounds_cover_the_values() {
        assert_eq!(log_bounds(0.4, 230.0), (-1, 3));
        assert_eq!(log_bounds(f64::INFINITY, 0.0), (-1, 1));
        assert_eq!(log_bounds(5.0, 5.0), (0, 1));
    }

    #[test]
    fn ticks_read_well() {
        assert_eq!(format_tick(2000.0), "2K");
        assert_eq!(format_tick(15.0), "15");
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(0.01), "0.01");
    }
}
