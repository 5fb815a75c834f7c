//! Rendering the printable compliance report at a realistic size
//! (BENCHMARKS.md): a year of daily history (366 days, a tenth of them
//! without a record) of a fleet of a million hosts, 200 CVEs each fixed
//! for 3 kernel builds with a dozen changes in hosts protected, and the
//! 500 audit entries a report lists at most. Times the HTML and the PDF
//! (layout, usvg, krilla with font subsetting) from a report already in
//! memory: what a request spends beyond reading the history.
//!
//! `cargo bench -p server --bench printable [-- RUNS]` (default 5; prints
//! each run and the median). Writes the PDF to the target directory's
//! `tmp/printable-bench.pdf` to look at.

use std::collections::BTreeMap;
use std::time::Instant;

use server::history::{Day, DAY};
use server::model::AuditEntry;
use server::printable::{html, pdf, CveTimeline, Period, Printable};
use server::report::Policy;

const FIRST: i64 = 20_000;
const DAYS: i64 = 366;
const HOSTS: i64 = 1_000_000;

fn report() -> Printable {
    let mut days = Vec::new();
    for d in 0..DAYS {
        if d % 10 == 7 {
            continue;
        }
        let exposed = 50_000 + (d * 7919) % 40_000;
        let exposure: Vec<(i64, i64)> = (0..12)
            .map(|i| ((i * 5 + d % 5) * DAY + 17, exposed / 12))
            .collect();
        days.push(Day {
            day: FIRST + d,
            recorded_at: (FIRST + d) * DAY + 3600,
            stale_hours: 24,
            hosts_total: HOSTS,
            hosts_protected: HOSTS - exposed - 2_000,
            hosts_exposed: exposed,
            hosts_unsupported: 2_000,
            hosts_stale: 1_500 + d % 300,
            exposure,
            cves: BTreeMap::new(),
        });
    }
    let cves = (0..200)
        .map(|i| CveTimeline {
            cve: format!("CVE-2025-{:05}", 10_000 + i * 37),
            description: format!(
                "use-after-free in subsystem {i} reachable by an unprivileged local user"
            ),
            fixes: (0..3)
                .map(|k| {
                    (
                        format!("{k:02x}{i:038x}"),
                        1 + i / 10,
                        (FIRST + i) * DAY + k * 3600,
                    )
                })
                .collect(),
            protected: (0..12)
                .map(|j| (FIRST + i + j * 3, HOSTS / 12 * j, HOSTS - HOSTS / 12 * j))
                .collect(),
        })
        .collect();
    let audit = (0..500)
        .map(|i| AuditEntry {
            id: i,
            at: (FIRST + i / 2) * DAY + i * 60,
            actor: ["alice", "bob", "release-bot", "cli:root"][i as usize % 4].into(),
            action: ["publish", "promote", "hold", "rollback", "unpin"][i as usize % 5].into(),
            target: format!("{:040x} level {}", i * 7_777_777, 1 + i / 20),
            detail: format!(
                "{{\"feed\":\"stable\",\"level\":{},\"already\":false,\"note\":\"batch {i}\"}}",
                1 + i / 20
            ),
        })
        .collect();
    Printable {
        generated_at: (FIRST + DAYS) * DAY,
        period: Period {
            first: FIRST,
            last: FIRST + DAYS - 1,
        },
        policy: Policy {
            policy_days: 30,
            stale_hours: 24,
        },
        days,
        cves,
        audit,
        audit_total: 2_400,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let r = report();
    let (mut h, mut p) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for run in 1..=runs {
        let t = Instant::now();
        let doc = html::document(&r);
        let th = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        out = pdf::render(&r).expect("render the PDF");
        let tp = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "run {run}: HTML {th:.1} ms ({} KiB), PDF {tp:.1} ms ({} KiB, {} pages)",
            doc.len() / 1024,
            out.len() / 1024,
            pdf::pages(&r).len()
        );
        h.push(th);
        p.push(tp);
    }
    println!(
        "median of {runs}: HTML {:.1} ms, PDF {:.1} ms",
        median(h),
        median(p)
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("printable-bench.pdf");
    if std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).is_ok() {
        let _ = std::fs::write(&path, out);
    }
}
