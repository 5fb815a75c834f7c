//! The compliance charts as SVG, drawn on the server: hosts by standing
//! per day, and the exposed hosts by days exposed against the policy. The
//! same strings go inline into the dashboard and the HTML report (no
//! script: the dashboard's CSP forbids it) and, parsed by usvg, into the
//! PDF, so the three cannot disagree.
//!
//! Nothing drawn comes from hosts or admins (only numbers and dates), so
//! there is nothing to escape.

use std::fmt::Write as _;

use crate::clock::rfc3339;
use crate::history::{Day, DAY};

/// Hosts with every fix applied.
pub const PROTECTED: &str = "#2e7d32";
/// Exposed hosts within the policy.
pub const EXPOSED: &str = "#f9a825";
/// Exposed hosts past the policy.
pub const BREACHING: &str = "#c62828";
/// Hosts on kernels without levels.
pub const UNSUPPORTED: &str = "#9e9e9e";
/// A day without a record.
pub const MISSING: &str = "#e8e8e8";

const FONT: &str = "font-family=\"DejaVu Sans, sans-serif\"";

/// A chart's size in SVG units (CSS pixels; the PDF scales it).
pub const WIDTH: f64 = 720.0;
/// Its height.
pub const HEIGHT: f64 = 270.0;

const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

/// `yyyy-mm-dd` of a day number.
pub fn date(day: i64) -> String {
    let mut s = rfc3339(day.saturating_mul(DAY));
    s.truncate(10);
    s
}

/// An axis label: `250k`, `1.5M`, or the number itself below 10,000.
fn compact(v: i64) -> String {
    let short = |v: i64, unit: i64, suffix: &str| {
        if v % unit == 0 {
            format!("{}{suffix}", v / unit)
        } else {
            format!("{:.1}{suffix}", v as f64 / unit as f64)
        }
    };
    if v >= 1_000_000 {
        short(v, 1_000_000, "M")
    } else if v >= 10_000 {
        short(v, 1_000, "k")
    } else {
        v.to_string()
    }
}

/// `a / b` rounded up, for `a >= 0` and `b > 0` (`i64::div_ceil` is not
/// stable).
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Axis ticks from 0 covering `max`: a step of 1, 2 or 5 times a power
/// of ten, at most six ticks.
fn ticks(max: i64) -> (i64, i64) {
    let max = max.max(1);
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            let s = step.saturating_mul(m);
            if ceil_div(max, s) <= 5 {
                return (s, ceil_div(max, s) * s);
            }
        }
        step = step.saturating_mul(10);
    }
}

fn open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\" {FONT} font-size=\"11\">\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = LEFT;
    for (colour, label) in items {
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"10\" width=\"12\" height=\"12\" fill=\"{colour}\" stroke=\"#555\" stroke-width=\"0.5\"/>\
             <text x=\"{}\" y=\"20\">{label}</text>",
            x + 16.0
        );
        x += 16.0 + 7.0 * label.len() as f64 + 18.0;
    }
}

/// The y axis from 0 to `top` in steps of `step`, with grid lines and
/// the axis title `title`.
fn y_axis(out: &mut String, step: i64, top: i64, title: &str) {
    let h = HEIGHT - TOP - BOTTOM;
    let mut v = 0;
    while v <= top {
        let y = TOP + h - h * v as f64 / top as f64;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#dddddd\" stroke-width=\"0.6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 5.0,
            y + 4.0,
            compact(v)
        );
        v += step;
    }
    let _ = write!(
        out,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{title}</text>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#333\"/>\
         <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        TOP + h / 2.0,
        TOP + h,
        TOP + h,
        WIDTH - RIGHT,
        TOP + h
    );
}

/// Hosts by standing on each day from `first` to `last` (day numbers,
/// inclusive): stacked bars of protected, exposed within `policy_days`,
/// breaching and unsupported hosts; a day without a record is a pale
/// column marked as missing.
pub fn hosts_over_time(days: &[Day], first: i64, last: i64, policy_days: i64) -> String {
    let n = (last - first + 1).max(1);
    let mut out = String::new();
    open(&mut out, "Hosts by standing per day");
    legend(
        &mut out,
        &[
            (PROTECTED, "protected"),
            (EXPOSED, "exposed, within policy"),
            (BREACHING, "past policy"),
            (UNSUPPORTED, "no level for kernel"),
            (MISSING, "no record"),
        ],
    );
    let max = days.iter().map(|d| d.hosts_total).max().unwrap_or(0);
    let (step, top) = ticks(max);
    let w = WIDTH - LEFT - RIGHT;
    let h = HEIGHT - TOP - BOTTOM;
    let slot = w / n as f64;
    let bar = if slot > 4.0 { slot * 0.8 } else { slot };
    let scale = |v: i64| h * v as f64 / top as f64;
    let mut recorded = days.iter().peekable();
    for i in 0..n {
        let day = first + i;
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        while recorded.peek().is_some_and(|d| d.day < day) {
            recorded.next();
        }
        let Some(d) = recorded.peek().filter(|d| d.day == day) else {
            let _ = write!(
                out,
                "<rect class=\"missing\" x=\"{x:.2}\" y=\"{TOP}\" width=\"{bar:.2}\" height=\"{h:.1}\" fill=\"{MISSING}\"/>"
            );
            continue;
        };
        let breaching = d.breaching(policy_days);
        let mut y = TOP + h;
        for (v, colour) in [
            (d.hosts_protected, PROTECTED),
            (d.hosts_exposed - breaching, EXPOSED),
            (breaching, BREACHING),
            (d.hosts_unsupported, UNSUPPORTED),
        ] {
            if v <= 0 {
                continue;
            }
            let bh = scale(v);
            y -= bh;
            let _ = write!(
                out,
                "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar:.2}\" height=\"{bh:.2}\" fill=\"{colour}\"/>"
            );
        }
    }
    y_axis(&mut out, step, top, "hosts");
    // About seven date labels, at whole steps of days.
    let every = ceil_div(n, 7).max(1);
    let mut i = 0;
    while i < n {
        let x = LEFT + slot * (i as f64 + 0.5);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + h,
            TOP + h + 4.0,
            TOP + h + 16.0,
            date(first + i)
        );
        i += every;
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">day (UTC)</text></svg>",
        LEFT + w / 2.0,
        HEIGHT - 8.0
    );
    out
}

/// The exposed hosts of `day` by whole days exposed (to the CVE each has
/// been exposed to longest), in buckets up to twice the policy and one
/// for longer, each bar split into hosts within the policy and past it;
/// a dashed line marks the policy.
pub fn exposure_distribution(day: Option<&Day>, policy_days: i64) -> String {
    let mut out = String::new();
    open(&mut out, "Exposed hosts by days exposed");
    legend(
        &mut out,
        &[(EXPOSED, "within policy"), (BREACHING, "past policy")],
    );
    let limit = (2 * policy_days).max(7);
    let width = ceil_div(limit, 10).max(1);
    let buckets = ceil_div(limit, width) as usize + 1;
    // (within, past) per bucket; the last bucket is everything longer.
    let mut counts = vec![(0i64, 0i64); buckets];
    for (secs, hosts) in day.map_or(&[][..], |d| &d.exposure[..]) {
        let b = ((secs / DAY) / width).min(buckets as i64 - 1) as usize;
        if *secs > policy_days.saturating_mul(DAY) {
            counts[b].1 += hosts;
        } else {
            counts[b].0 += hosts;
        }
    }
    let max = counts.iter().map(|(a, b)| a + b).max().unwrap_or(0);
    let (step, top) = ticks(max);
    let w = WIDTH - LEFT - RIGHT;
    let h = HEIGHT - TOP - BOTTOM;
    let slot = w / buckets as f64;
    let bar = slot * 0.8;
    for (i, (within, past)) in counts.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = TOP + h;
        for (v, colour) in [(*within, EXPOSED), (*past, BREACHING)] {
            if v <= 0 {
                continue;
            }
            let bh = h * v as f64 / top as f64;
            y -= bh;
            let _ = write!(
                out,
                "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar:.2}\" height=\"{bh:.2}\" fill=\"{colour}\"/>"
            );
        }
        if within + past > 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                y - 3.0,
                within + past
            );
        }
        let start = i as i64 * width;
        let label = if i + 1 == buckets {
            format!("≥{start}")
        } else if width == 1 {
            start.to_string()
        } else {
            format!("{start}–{}", start + width - 1)
        };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x + bar / 2.0,
            TOP + h + 16.0
        );
    }
    y_axis(&mut out, step, top, "exposed hosts");
    // The policy falls inside the bucket holding `policy_days` days,
    // before the hosts exposed a few seconds longer than it.
    let px = LEFT + slot * (policy_days as f64 / width as f64 + 1.0 / width as f64);
    let px = px.min(WIDTH - RIGHT);
    let _ = write!(
        out,
        "<line class=\"policy\" x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#000\" \
         stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">policy: {policy_days} days</text>",
        TOP + h,
        px + 4.0,
        TOP + 12.0
    );
    if max == 0 {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"14\">No exposed hosts</text>",
            LEFT + w / 2.0,
            TOP + h / 2.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">days exposed (whole days since the fix was published)</text></svg>",
        LEFT + w / 2.0,
        HEIGHT - 8.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(0), (1, 1));
        assert_eq!(ticks(4), (1, 4));
        assert_eq!(ticks(7), (2, 8));
        assert_eq!(ticks(23), (5, 25));
        assert_eq!(ticks(1_000_000), (200_000, 1_000_000));
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(compact(9_999), "9999");
        assert_eq!(compact(200_000), "200k");
        assert_eq!(compact(12_500), "12.5k");
        assert_eq!(compact(1_000_000), "1M");
        assert_eq!(compact(1_500_000), "1.5M");
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(20_254), "2025-06-15");
    }
}
