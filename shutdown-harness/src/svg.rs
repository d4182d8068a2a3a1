//! A timeline of a run: time on x, one lane per outcome, the signal and the exit marked,
//! and a disruption command's steps numbered on it with a legend below (so that a drop
//! lines up with the host event that caused it).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::observation::{CommandStep, ServerExit};
use crate::outcome::Outcome;
use crate::report::Report;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 20.0;
const LANE: f64 = 34.0;
const TOP: f64 = 40.0;
/// Time bins across the plot; each bin of a lane is shaded by how many requests ended in it.
const BINS: usize = 400;
/// Most command steps drawn and listed in the legend.
const STEPS_DRAWN: usize = 40;
/// Height of one legend line.
const LEGEND_LINE: f64 = 15.0;

/// Renders the report as a standalone SVG document.
pub fn render(report: &Report) -> String {
    let lanes = lanes_of(report);
    let span = report.duration.max(0.001) + 1.0;
    let s = &report.summary;
    let steps: Vec<&CommandStep> = s
        .commands
        .iter()
        .flat_map(|c| &c.steps)
        .take(STEPS_DRAWN)
        .collect();
    let height = TOP + LANE * lanes.len().max(1) as f64 + 40.0 + LEGEND_LINE * steps.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14">{}, {:?}: dropped={} ok={} refused={} (request start time, s)</text>"#,
        escape(&server_name(&s.server_command)),
        s.scenario,
        s.dropped,
        s.ok,
        s.refused
    );
    for (i, (outcome, bins)) in lanes.iter().enumerate() {
        draw_lane(&mut svg, TOP + LANE * i as f64, *outcome, bins);
    }
    let bottom = TOP + LANE * lanes.len().max(1) as f64;
    draw_time_axis(&mut svg, span, bottom);
    let mut marker = |t: f64, label: &str, color: &str| {
        let mx = x_of(t, span);
        let _ = writeln!(
            svg,
            r#"<line x1="{mx:.1}" y1="{}" x2="{mx:.1}" y2="{bottom}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{}" fill="{color}">{label}</text>"#,
            TOP - 8.0,
            mx + 3.0,
            TOP - 10.0
        );
    };
    if s.commands.is_empty() {
        marker(
            s.signal_at,
            &format!("SIG{}", s.signal.trim_start_matches("SIG")),
            "#9467bd",
        );
    }
    for command in &s.commands {
        marker(command.started, "command", "#9467bd");
        marker(command.ended, "ended", "#9467bd");
    }
    if let ServerExit::Exited { after_signal, .. } | ServerExit::HandedOver { after_signal } =
        s.server_exit
    {
        marker(s.signal_at + after_signal, "exit", "#333");
    }
    draw_steps(&mut svg, &steps, span, bottom);
    svg.push_str("</svg>\n");
    svg
}

/// The program's file name, or the URL, for the title.
fn server_name(command: &[String]) -> String {
    let first = command.first().map_or("", String::as_str);
    if first.contains("://") {
        return first.to_string();
    }
    first.rsplit('/').next().unwrap_or(first).to_string()
}

/// Text made safe inside an SVG element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Width of the plot area.
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;

/// Where time `t` lies on the x axis of a plot spanning `span` seconds.
fn x_of(t: f64, span: f64) -> f64 {
    LEFT + (t / span).clamp(0.0, 1.0) * PLOT_WIDTH
}

/// Requests per time bin, one lane per outcome row, by start time.
fn lanes_of(report: &Report) -> BTreeMap<Outcome, Vec<usize>> {
    let span = report.duration.max(0.001) + 1.0;
    let mut lanes: BTreeMap<Outcome, Vec<usize>> = BTreeMap::new();
    for r in &report.requests {
        let bin = ((r.start / span) * BINS as f64) as usize;
        lanes
            .entry(r.outcome.row())
            .or_insert_with(|| vec![0; BINS])[bin.min(BINS - 1)] += 1;
    }
    lanes
}

/// One lane: its label and a shaded cell per non-empty bin.
fn draw_lane(svg: &mut String, y: f64, outcome: Outcome, bins: &[usize]) {
    let color = if outcome.is_drop() {
        "#d62728"
    } else if outcome == Outcome::Refused {
        "#1f77b4"
    } else if outcome.is_clean_close() || outcome == Outcome::Opened {
        "#ff7f0e"
    } else {
        "#2ca02c"
    };
    let total: usize = bins.iter().sum();
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{}">{} ({total})</text>"#,
        y + LANE / 2.0 + 4.0,
        outcome.label()
    );
    let peak = bins.iter().copied().max().unwrap_or(1).max(1) as f64;
    for (b, &count) in bins.iter().enumerate().filter(|(_, c)| **c > 0) {
        // Drops are drawn at full strength however few they are: one must be visible.
        let opacity = if outcome.is_drop() {
            1.0
        } else {
            0.25 + 0.75 * count as f64 / peak
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{color}" fill-opacity="{opacity:.2}"><title>{count}</title></rect>"#,
            LEFT + PLOT_WIDTH * b as f64 / BINS as f64,
            y + 4.0,
            (PLOT_WIDTH / BINS as f64).max(1.5),
            LANE - 8.0
        );
    }
}

/// Each command step as a thin numbered line across the lanes, and a legend below the
/// time axis: number, time, the step's text.
fn draw_steps(svg: &mut String, steps: &[&CommandStep], span: f64, bottom: f64) {
    for (i, step) in steps.iter().enumerate() {
        let sx = x_of(step.at, span);
        let _ = writeln!(
            svg,
            r##"<line x1="{sx:.1}" y1="{TOP}" x2="{sx:.1}" y2="{bottom}" stroke="#8c564b" stroke-dasharray="3,3"><title>{}</title></line><text x="{:.1}" y="{:.1}" fill="#8c564b" font-size="10">{}</text>"##,
            escape(&step.line),
            sx + 2.0,
            TOP + 10.0 + 10.0 * (i % 3) as f64,
            i + 1
        );
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{:.1}" fill="#8c564b">{:>2}  {:7.3} s  {}</text>"##,
            bottom + 35.0 + LEGEND_LINE * i as f64,
            i + 1,
            step.at,
            escape(&step.line)
        );
    }
}

/// A grid line and a label every second.
fn draw_time_axis(svg: &mut String, span: f64, bottom: f64) {
    for sec in 0..=(span as usize) {
        let tx = x_of(sec as f64, span);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{bottom}" stroke="#ddd"/><text x="{tx:.1}" y="{}" text-anchor="middle">{sec}</text>"##,
            bottom + 15.0
        );
    }
}
