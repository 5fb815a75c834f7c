//! The report as one HTML document to print: A4 pages from the print
//! stylesheet, no navigation, the charts inline as SVG and no script (the
//! dashboard's Content-Security-Policy applies to it unchanged). Audit
//! details and CVE descriptions come from admins and bundles: escaped.

use std::fmt::Write as _;

use super::{Printable, TextTable};
use crate::api::dashboard::esc;

const CSS: &str = "body{font:13px/1.45 'DejaVu Sans',sans-serif;color:#111;margin:24px auto;max-width:190mm}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #999}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}dl.meta dt{font-weight:bold}dl.meta dd{margin:0}\
.figures{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}.figure{border:1px solid #999;padding:6px 10px;min-width:80px}\
.figure b{display:block;font-size:20px}.protected b{color:#2e7d32}.exposed b{color:#b07800}.breach b{color:#c62828}.stale b{color:#a60}\
figure{margin:10px 0}figure svg{width:100%;height:auto;border:1px solid #ccc}figcaption{font-size:11px;color:#444}\
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:11px;table-layout:fixed}th,td{border:1px solid #bbb;padding:2px 5px;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#eee}thead{display:table-header-group}tr{break-inside:avoid}td.missing{color:#777;font-style:italic}\
td code,td.detail{font-family:'DejaVu Sans Mono',monospace;font-size:10px;word-break:break-all}\
.signoff{margin-top:28px;display:grid;grid-template-columns:1fr 1fr 1fr;gap:24px}.signoff div{border-top:1px solid #000;padding-top:4px;font-size:11px}\
@page{size:A4;margin:14mm 12mm}\
@media print{body{margin:0;max-width:none}.pagebreak{break-before:page}figure,.figures,.signoff{break-inside:avoid}}";

fn table(out: &mut String, t: &TextTable, detail_column: Option<usize>) {
    // Fixed layout in the PDF's proportions: long ids wrap inside their
    // column instead of pushing the table off the page.
    let total: f64 = t.widths.iter().sum();
    out.push_str("<table><colgroup>");
    for w in &t.widths {
        let _ = write!(out, "<col style=\"width:{:.1}%\">", 100.0 * w / total);
    }
    out.push_str("</colgroup><thead><tr>");
    for h in &t.header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        out.push_str("<tr>");
        if row.len() < t.header.len() {
            // A day without a record: its date, then one cell saying so.
            let _ = write!(
                out,
                "<td>{}</td><td class=\"missing\" colspan=\"{}\">{}</td>",
                esc(&row[0]),
                t.header.len() - 1,
                esc(row.get(1).map_or("", String::as_str))
            );
        } else {
            for (i, c) in row.iter().enumerate() {
                let class = if Some(i) == detail_column {
                    " class=\"detail\""
                } else {
                    ""
                };
                // Lists in a cell are one item a line.
                let _ = write!(out, "<td{class}>{}</td>", esc(c).replace('\n', "<br>"));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// The figures as boxes.
pub fn figures(p: &Printable) -> String {
    let mut out = format!(
        "<p>{}</p><div class=\"figures\">",
        esc(&p.figures_caption())
    );
    for (label, n, class) in p.figures() {
        let _ = write!(
            out,
            "<div class=\"figure {class}\"><b>{n}</b>{}</div>",
            esc(label)
        );
    }
    out.push_str("</div>");
    out
}

/// The two charts with their captions (the dashboard shows these too).
pub fn charts(p: &Printable) -> String {
    format!(
        "<figure>{}<figcaption>Active hosts by standing on each day of the period, as the server \
         counted them that day; days without a record are pale columns.</figcaption></figure>\
         <figure>{}<figcaption>Exposed hosts at the end of the period by how long they have been \
         exposed to the CVE each has been exposed to longest; the dashed line is the policy.\
         </figcaption></figure>",
        p.standing_chart(),
        p.distribution_chart()
    )
}

/// The whole document.
pub fn document(p: &Printable) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Compliance report {} to {} · noreboot</title><style>{CSS}</style></head><body>\
         <h1>Live-patch compliance report</h1><dl class=\"meta\">",
        super::charts::date(p.period.first),
        super::charts::date(p.period.last)
    );
    for (label, value) in p.heading() {
        let _ = write!(out, "<dt>{label}</dt><dd>{}</dd>", esc(&value));
    }
    out.push_str("</dl><h2>Summary</h2>");
    out.push_str(&figures(p));
    out.push_str(&charts(p));
    out.push_str("<h2 class=\"pagebreak\">CVE timelines</h2>");
    if p.cves.is_empty() {
        out.push_str("<p>No level published by the end of the period fixes a CVE.</p>");
    } else {
        table(&mut out, &p.cve_table(), None);
    }
    out.push_str("<h2>Releases, holds and rollbacks</h2>");
    let audit = p.audit_table();
    if audit.rows.is_empty() {
        out.push_str(
            "<p>No level was published, released, pinned, held or rolled back in the period.</p>",
        );
    } else {
        table(&mut out, &audit, Some(4));
    }
    if let Some(note) = p.audit_note() {
        let _ = write!(out, "<p>{}</p>", esc(&note));
    }
    out.push_str("<h2 class=\"pagebreak\">Figures per day</h2>");
    table(&mut out, &p.daily_table(), None);
    out.push_str(
        "<div class=\"signoff\"><div>Reviewed by (name)</div><div>Date</div><div>Signature</div></div>\
         </body></html>",
    );
    out
}
