//! The report as a PDF, made in the server: each A4 page is laid out as
//! one SVG (text, tables and the very charts the HTML shows), which usvg
//! parses and krilla writes as PDF with the text kept as text (subset
//! fonts with Unicode maps: it can be searched, copied and extracted).
//!
//! Fonts: DejaVu Sans from Debian's `fonts-dejavu-core`, read at the
//! first report rather than built into the binary — the server stays
//! 1.4 MB smaller and the fonts get Debian's updates; a server without
//! them answers the PDF with a 500 whose log line names the package, and
//! everything else works. Text is measured with a width per character
//! (DejaVu Sans is wide: 0.64 em is the advance of its digits),
//! which wraps early rather than late.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use krilla::geom::Size;
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::Document;
use krilla_svg::{SurfaceExt, SvgSettings};

use super::{charts, Printable, TextTable};
use crate::api::dashboard::esc;
use crate::error::Error;

/// Where Debian's `fonts-dejavu-core` puts the fonts the PDF uses.
pub const FONT_FILES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
];

/// A4 in points.
const PAGE_W: f64 = 595.28;
const PAGE_H: f64 = 841.89;
const MARGIN: f64 = 40.0;
/// Where the body ends: the footer is below.
const BODY_END: f64 = PAGE_H - 52.0;
/// An average advance per character, in em (see the module doc).
const EM_PER_CHAR: f64 = 0.64;

fn fonts() -> Result<Arc<usvg::fontdb::Database>, Error> {
    static FONTS: OnceLock<Result<Arc<usvg::fontdb::Database>, String>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            for f in FONT_FILES {
                // In memory: a database of file paths would read the file
                // again for every run of text.
                let data = std::fs::read(f)
                    .map_err(|e| format!("font {f}: {e} (install Debian's fonts-dejavu-core)"))?;
                db.load_font_data(data);
            }
            Ok(Arc::new(db))
        })
        .clone()
        .map_err(Error::Render)
}

/// Text for SVG: escaped, without the control characters XML forbids.
fn text(s: &str) -> String {
    esc(&s.replace(|c: char| c.is_control(), "?"))
}

/// `s` in lines of at most `width` points at `size`: at spaces where it
/// can, anywhere in a word longer than a line.
fn wrap(s: &str, width: f64, size: f64) -> Vec<String> {
    s.split('\n')
        .flat_map(|para| wrap_line(para, width, size))
        .collect()
}

/// One paragraph of [`wrap`].
fn wrap_line(s: &str, width: f64, size: f64) -> Vec<String> {
    let max = ((width / (size * EM_PER_CHAR)).floor() as usize).max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let len = line.chars().count();
            let room = if len == 0 {
                max
            } else {
                max.saturating_sub(len + 1)
            };
            if word.len() <= room {
                if len > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            line.extend(word.drain(..max));
            lines.push(std::mem::take(&mut line));
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Pages being filled, top to bottom.
struct Pages {
    done: Vec<String>,
    page: String,
    y: f64,
}

impl Pages {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            page: String::new(),
            y: MARGIN,
        }
    }

    fn break_page(&mut self) {
        self.done.push(std::mem::take(&mut self.page));
        self.y = MARGIN;
    }

    /// Starts a new page unless `height` more points fit on this one.
    fn need(&mut self, height: f64) {
        if self.y + height > BODY_END && self.y > MARGIN {
            self.break_page();
        }
    }

    fn line(&mut self, x: f64, size: f64, bold: bool, s: &str) {
        let _ = write!(
            self.page,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"{size}\"{}>{}</text>",
            self.y + size,
            if bold { " font-weight=\"bold\"" } else { "" },
            text(s)
        );
        self.y += size * 1.35;
    }

    fn heading(&mut self, s: &str) {
        self.need(60.0);
        self.y += 10.0;
        self.line(MARGIN, 14.0, true, s);
        let _ = write!(
            self.page,
            "<line x1=\"{MARGIN}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-width=\"0.7\"/>",
            self.y,
            PAGE_W - MARGIN,
            self.y
        );
        self.y += 6.0;
    }

    fn paragraph(&mut self, s: &str, size: f64) {
        for l in wrap(s, PAGE_W - 2.0 * MARGIN, size) {
            self.need(size * 1.4);
            self.line(MARGIN, size, false, &l);
        }
        self.y += 3.0;
    }

    /// A chart from `charts`, scaled to the text width.
    fn chart(&mut self, svg: &str) {
        let scale = (PAGE_W - 2.0 * MARGIN) / charts::WIDTH;
        let height = charts::HEIGHT * scale;
        self.need(height + 8.0);
        // The chart's own root element becomes a group: same drawing.
        let inner = svg
            .find('>')
            .and_then(|start| Some(&svg[start + 1..svg.rfind("</svg>")?]))
            .unwrap_or("");
        let _ = write!(
            self.page,
            "<g transform=\"translate({MARGIN} {:.1}) scale({scale:.4})\" font-size=\"11\">{inner}\
             <rect width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#cccccc\"/></g>",
            self.y,
            charts::WIDTH,
            charts::HEIGHT
        );
        self.y += height + 4.0;
    }

    /// A caption under a chart.
    fn caption(&mut self, s: &str) {
        for l in wrap(s, PAGE_W - 2.0 * MARGIN, 8.0) {
            self.need(11.0);
            self.line(MARGIN, 8.0, false, &l);
        }
        self.y += 6.0;
    }

    fn row(&mut self, cells: &[Vec<String>], xs: &[f64], widths: &[f64], size: f64, head: bool) {
        let lines = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let height = lines as f64 * size * 1.3 + 4.0;
        let top = self.y;
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(
                self.page,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\" \
                 stroke=\"#bbbbbb\" stroke-width=\"0.5\"/>",
                xs[i],
                widths[i],
                if head { "#eeeeee" } else { "#ffffff" }
            );
            for (j, l) in c.iter().enumerate() {
                let _ = write!(
                    self.page,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{size}\"{}>{}</text>",
                    xs[i] + 3.0,
                    top + 2.0 + size * (1.0 + 1.3 * j as f64),
                    if head { " font-weight=\"bold\"" } else { "" },
                    text(l)
                );
            }
        }
        self.y += height;
    }

    /// A table; its header is repeated on each page it runs onto.
    fn table(&mut self, t: &TextTable, size: f64) {
        let total: f64 = t.widths.iter().sum();
        let avail = PAGE_W - 2.0 * MARGIN;
        let widths: Vec<f64> = t.widths.iter().map(|w| avail * w / total).collect();
        let mut xs = Vec::with_capacity(widths.len());
        let mut x = MARGIN;
        for w in &widths {
            xs.push(x);
            x += w;
        }
        let cells = |row: &[String]| -> Vec<Vec<String>> {
            row.iter()
                .zip(&widths)
                .map(|(c, w)| wrap(c, w - 6.0, size))
                .collect()
        };
        let header: Vec<String> = t.header.iter().map(|h| h.to_string()).collect();
        let head = cells(&header);
        let line = size * 1.3;
        self.need(2.0 * line + 12.0);
        self.row(&head, &xs, &widths, size, true);
        for r in &t.rows {
            let (row, xs_r, w_r): (Vec<Vec<String>>, Vec<f64>, Vec<f64>) = if r.len() < widths.len()
            {
                // A row that spans: its first cell, then the rest as one.
                let rest: f64 = widths[1..].iter().sum();
                (
                    vec![
                        wrap(&r[0], widths[0] - 6.0, size),
                        wrap(r.get(1).map_or("", String::as_str), rest - 6.0, size),
                    ],
                    vec![xs[0], xs[1]],
                    vec![widths[0], rest],
                )
            } else {
                (cells(r), xs.clone(), widths.clone())
            };
            let lines = row.iter().map(Vec::len).max().unwrap_or(1);
            let height = lines as f64 * line + 4.0;
            if self.y + height > BODY_END {
                self.break_page();
                self.row(&head, &xs, &widths, size, true);
            }
            self.row(&row, &xs_r, &w_r, size, false);
        }
        self.y += 8.0;
    }

    /// The pages, each a whole SVG with its footer.
    fn finish(mut self, footer: &str) -> Vec<String> {
        if !self.page.is_empty() {
            self.done.push(std::mem::take(&mut self.page));
        }
        let n = self.done.len();
        self.done
            .iter()
            .enumerate()
            .map(|(i, body)| {
                format!(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{PAGE_W}\" height=\"{PAGE_H}\" \
                     viewBox=\"0 0 {PAGE_W} {PAGE_H}\" font-family=\"DejaVu Sans\" fill=\"#111111\">{body}\
                     <line x1=\"{MARGIN}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-width=\"0.5\"/>\
                     <text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"8\">{}</text>\
                     <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"8\" text-anchor=\"end\">page {} of {n}</text></svg>",
                    PAGE_H - 40.0,
                    PAGE_W - MARGIN,
                    PAGE_H - 40.0,
                    PAGE_H - 28.0,
                    text(footer),
                    PAGE_W - MARGIN,
                    PAGE_H - 28.0,
                    i + 1
                )
            })
            .collect()
    }
}

/// The pages of the report, each an SVG document (A4, in points).
pub fn pages(p: &Printable) -> Vec<String> {
    let mut pages = Pages::new();
    pages.line(MARGIN, 20.0, true, "Live-patch compliance report");
    pages.y += 4.0;
    for (label, value) in p.heading() {
        let lines = wrap(&value, PAGE_W - 2.0 * MARGIN - 70.0, 9.5);
        for (i, l) in lines.iter().enumerate() {
            if i == 0 {
                let _ = write!(
                    pages.page,
                    "<text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"9.5\" font-weight=\"bold\">{label}</text>",
                    pages.y + 9.5
                );
            }
            pages.line(MARGIN + 70.0, 9.5, false, l);
        }
    }
    pages.heading("Summary");
    pages.paragraph(&p.figures_caption(), 9.5);
    let figures = p.figures();
    if !figures.is_empty() {
        let w = (PAGE_W - 2.0 * MARGIN) / figures.len() as f64;
        for (i, (label, n, class)) in figures.iter().enumerate() {
            let colour = match *class {
                "protected" => charts::PROTECTED,
                "exposed" => "#b07800",
                "breach" => charts::BREACHING,
                "stale" => "#aa6600",
                _ => "#111111",
            };
            let x = MARGIN + w * i as f64;
            let _ = write!(
                pages.page,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"40\" fill=\"none\" stroke=\"#999\" stroke-width=\"0.6\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{}\" font-weight=\"bold\" fill=\"{colour}\">{n}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"7.5\">{}</text>",
                x + 1.0,
                pages.y,
                w - 4.0,
                x + 6.0,
                pages.y + 19.0,
                // Seven digits and more would overrun the box at 16 pt.
                if n.to_string().len() > 6 { 12 } else { 16 },
                x + 6.0,
                pages.y + 33.0,
                text(label)
            );
        }
        pages.y += 48.0;
    }
    pages.chart(&p.standing_chart());
    pages.caption(
        "Active hosts by standing on each day of the period, as the server counted them that day; \
         days without a record are pale columns.",
    );
    pages.chart(&p.distribution_chart());
    pages.caption(
        "Exposed hosts at the end of the period by how long they have been exposed to the CVE each \
         has been exposed to longest; the dashed line is the policy.",
    );
    pages.break_page();
    pages.heading("CVE timelines");
    if p.cves.is_empty() {
        pages.paragraph(
            "No level published by the end of the period fixes a CVE.",
            9.5,
        );
    } else {
        pages.table(&p.cve_table(), 8.0);
    }
    pages.heading("Releases, holds and rollbacks");
    let audit = p.audit_table();
    if audit.rows.is_empty() {
        pages.paragraph(
            "No level was published, released, pinned, held or rolled back in the period.",
            9.5,
        );
    } else {
        pages.table(&audit, 7.5);
    }
    if let Some(note) = p.audit_note() {
        pages.paragraph(&note, 8.5);
    }
    pages.heading("Figures per day");
    pages.table(&p.daily_table(), 8.0);
    pages.need(60.0);
    pages.y += 36.0;
    let third = (PAGE_W - 2.0 * MARGIN) / 3.0;
    for (i, label) in ["Reviewed by (name)", "Date", "Signature"]
        .iter()
        .enumerate()
    {
        let x = MARGIN + third * i as f64;
        let _ = write!(
            pages.page,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"0.7\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"8\">{label}</text>",
            pages.y,
            x + third - 16.0,
            pages.y,
            pages.y + 11.0
        );
    }
    let footer = format!(
        "noreboot live-patch compliance report, {} to {}, generated {}",
        charts::date(p.period.first),
        charts::date(p.period.last),
        crate::clock::rfc3339(p.generated_at)
    );
    pages.finish(&footer)
}

/// The report as a PDF document.
pub fn render(p: &Printable) -> Result<Vec<u8>, Error> {
    let fontdb = fonts()?;
    let opts = usvg::Options {
        fontdb,
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    };
    let size = Size::from_wh(PAGE_W as f32, PAGE_H as f32)
        .ok_or_else(|| Error::Render("the page size".into()))?;
    let mut doc = Document::new();
    doc.set_metadata(
        Metadata::new()
            .title(format!(
                "Live-patch compliance report {} to {}",
                charts::date(p.period.first),
                charts::date(p.period.last)
            ))
            .creator("noreboot-server".into()),
    );
    for (i, svg) in pages(p).iter().enumerate() {
        let tree = usvg::Tree::from_str(svg, &opts)
            .map_err(|e| Error::Render(format!("page {}: {e}", i + 1)))?;
        let mut page = doc.start_page_with(PageSettings::new(size));
        let mut surface = page.surface();
        surface
            .draw_svg(&tree, size, SvgSettings::default())
            .ok_or_else(|| Error::Render(format!("page {}: drawing it", i + 1)))?;
        surface.finish();
        page.finish();
    }
    doc.finish()
        .map_err(|e| Error::Render(format!("writing the PDF: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_inside_long_words() {
        // 10 pt at 0.64 em: 10 characters in 64 points.
        assert_eq!(wrap("aaa bbb ccc dd", 64.0, 10.0), ["aaa bbb", "ccc dd"]);
        assert_eq!(
            wrap("abcdefghijklmnopqrstuvwxy", 64.0, 10.0),
            ["abcdefghij", "klmnopqrst", "uvwxy"]
        );
        assert_eq!(wrap("", 64.0, 10.0), [""]);
        assert_eq!(wrap("ab {\"x\":1}", 64.0, 10.0), ["ab {\"x\":1}"]);
    }
}
