//! The printable compliance report (`printable`): a daily history built
//! over a week with the test clock (hosts registering, levels published,
//! released, held and rolled back, hosts applying them), rendered by the
//! server as PDF and read back with poppler's `pdftotext` and `pdftoppm`,
//! and as HTML in headless Chromium (the dashboard's compliance page as a
//! screenshot, the report printed to PDF); and by the admin CLI
//! (`admin printable --pdf`). The images are kept as test
//! artifacts in the target directory's `tmp/compliance-report/`
//! (`CARGO_TARGET_TMPDIR`): `report-N.png` (the server's PDF, a page
//! each), `chromium-report-N.png` (Chromium's print of the HTML) and
//! `dashboard-compliance.png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use server::model::Role;

use crate::common::*;
use crate::dashboard::{chromium, cookie_proxy, run_chromium, sign_in};

const DAY: i64 = 86_400;
/// The report's policy: exposures longer than this many days breach it.
const POLICY: i64 = 3;

/// A week of history ending today (T0's day, 2025-06-15). KERNEL_A gets
/// level 1 (CVE-2025-1001) on 06-09 and level 2 (CVE-2025-1002) on 06-12;
/// KERNEL_B never gets a level. Hosts h1..h4 run KERNEL_A and check in
/// every recorded day at the levels they have reached; h5 runs KERNEL_B
/// and never checks in (stale). The server records the days on which the
/// summary is asked for: 06-11 and 06-14 have no record.
async fn week() -> (TestServer, String, Vec<String>) {
    let s = TestServer::start().await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let key = s.reg_key("stable").await;
    let day = |d: i64| T0 - d * DAY;
    s.clock.set(day(6));
    s.publish_fixing(KERNEL_A, 1, &["CVE-2025-1001"], &["stable"])
        .await;
    let mut hosts = Vec::new();
    for name in ["h1", "h2", "h3", "h4"] {
        hosts.push(s.register(&key, name, KERNEL_A).await.token);
    }
    s.register(&key, "h5", KERNEL_B).await;
    // Levels of h1..h4 on each recorded day, 6 days ago to today.
    let levels: [(i64, [u32; 4]); 5] = [
        (6, [0, 0, 0, 0]),
        (5, [1, 1, 0, 0]),
        (3, [2, 1, 1, 0]),
        (2, [2, 2, 1, 0]),
        (0, [2, 2, 2, 0]),
    ];
    for (ago, lv) in levels {
        s.clock.set(day(ago));
        if ago == 3 {
            s.publish_fixing(KERNEL_A, 2, &["CVE-2025-1002"], &[]).await;
            s.ctx.promote("alice", KERNEL_A, 2, "stable").await.unwrap();
            s.ctx.rollback("bob", "stable", KERNEL_A).await.unwrap();
            s.ctx.promote("alice", KERNEL_A, 2, "stable").await.unwrap();
        }
        if ago == 2 {
            s.ctx.hold("carol", "stable", KERNEL_A).await.unwrap();
            s.ctx.unpin("carol", "stable", KERNEL_A).await.unwrap();
        }
        for (token, level) in hosts.iter().zip(lv) {
            s.checkin(token, KERNEL_A, level).await;
        }
        // What the dashboard, /metrics or an API client would ask for:
        // the day's first count is its record.
        let (st, body) = s
            .call(
                reqwest::Method::GET,
                "/api/v1/admin/reports/summary",
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    (s, viewer, hosts)
}

fn artifacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compliance-report");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup installs poppler-utils)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The lines of `pdftotext -layout`, each with its runs of spaces as one.
fn text_lines(pdf: &Path) -> Vec<String> {
    run("pdftotext", &["-layout", pdf.to_str().unwrap(), "-"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The RGB pixels of a PNG.
fn pixels(png: &Path) -> (Vec<[u8; 3]>, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (px, info.width, info.height)
}

fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// How many pixels are within a little of `colour` (anti-aliasing and
/// colour management move edges and flat areas by a few steps).
fn count_colour(px: &[[u8; 3]], colour: &str) -> usize {
    let c = rgb(colour);
    px.iter()
        .filter(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 6))
        .count()
}

/// Renders `pdf`'s pages to PNGs named `prefix-N.png` in `dir`.
fn to_pngs(pdf: &Path, dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let out = dir.join(prefix);
    run(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "60",
            pdf.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{prefix}-"))
        })
        .collect();
    pngs.sort();
    pngs
}

/// Lines of the figures per day and the CVE timeline, as the scenario of
/// [`week`] makes them, policy 3 days. Day columns: hosts, protected,
/// exposed, past policy, no level, stale.
fn expected_days() -> Vec<String> {
    [
        "2025-06-09 5 0 4 0 1 1",
        "2025-06-10 5 2 2 0 1 1",
        "2025-06-11 no record",
        // h4 has been exposed to CVE-2025-1001 for exactly 3 days: not
        // longer than the policy yet.
        "2025-06-12 5 1 3 0 1 1",
        "2025-06-13 5 2 2 1 1 1",
        "2025-06-14 no record",
        "2025-06-15 5 3 1 1 1 1",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printable_report_over_a_week_as_pdf_and_in_chromium() {
    let (s, viewer, hosts) = week().await;
    let dir = artifacts();
    let api = |q: &str| format!("{}/api/v1/admin/reports/printable?{q}", s.url);
    let period = format!("from=2025-06-09&to=2025-06-15&policy_days={POLICY}");

    // Bad periods and formats: 400 saying what is wrong.
    for (q, says) in [
        ("from=2025-13-01", "is not a date (YYYY-MM-DD)"),
        ("to=2025-06-16", "after today"),
        ("from=2025-06-15&to=2025-06-09", "is after to"),
        ("from=2024-01-01", "at most 366"),
        ("format=doc", "expected `html` or `pdf`"),
        ("policy_days=x", "policy_days"),
        ("policy_days=-1", "out of range"),
    ] {
        let r = s
            .http
            .get(api(q))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{q}: {body}");
    }
    let r = s.http.get(api(&period)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The server's PDF, read back by poppler.
    let r = s
        .http
        .get(api(&format!("{period}&format=pdf")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let pdf = dir.join("report.pdf");
    std::fs::write(&pdf, r.bytes().await.unwrap()).unwrap();
    let info = run("pdfinfo", &[pdf.to_str().unwrap()]);
    assert!(info.contains("(A4)"), "{info}");
    let lines = text_lines(&pdf);
    let text = lines.join("\n");
    for want in [
        "Live-patch compliance report",
        "Period 2025-06-09 to 2025-06-15 (UTC, 7 days)",
        "applied within 3 days",
        "5 days of 7 recorded; 2 days without a record, shown as missing",
        "policy: 3 days",
        "CVE-2025-1001",
        "CVE-2025-1002 test fix",
        "Reviewed by (name)",
    ] {
        assert!(
            text.contains(want),
            "{want:?} not in the PDF's text:\n{text}"
        );
    }
    for day in expected_days() {
        assert!(lines.contains(&day), "{day:?} not a line of:\n{text}");
    }
    // The audit trail: who released, held and rolled back what; not the
    // token and key creations, which change no level.
    for (who, action) in [
        ("alice", "promote"),
        ("bob", "rollback"),
        ("carol", "hold"),
        ("carol", "unpin"),
        ("test", "publish"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!(" {who} {action} "))),
            "{who} {action} not in:\n{text}"
        );
    }
    assert!(!text.contains("token-create"), "{text}");
    // CVE-2025-1001's hosts protected by date: the days it changed and
    // the last.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "2025-06-09: 0 of 4",
        "2025-06-10: 2 of 4",
        "2025-06-12: 3 of 4",
        "2025-06-15: 3 of 4",
        "level 1, published 2025-06-09",
        "kernel 0123456789ab",
    ] {
        assert!(flat.contains(want), "{want:?} not in:\n{text}");
    }

    let pngs = to_pngs(&pdf, &dir, "report");
    assert!(pngs.len() >= 2, "{pngs:?}");
    let (px, w, h) = pixels(&pngs[0]);
    assert!(w > 400 && h > 600, "{w}x{h}");
    // The charts' colours: protected and exposed bars, breaching hosts,
    // the pale columns of the days without a record.
    for (name, colour) in [
        ("protected", "#2e7d32"),
        ("exposed", "#f9a825"),
        ("past policy", "#c62828"),
        ("no record", "#e8e8e8"),
    ] {
        let n = count_colour(&px, colour);
        assert!(n > 50, "page 1 has {n} pixels of {name} ({colour})");
    }

    // The admin CLI writes the same report from the same database.
    let cli_pdf = dir.join("cli-report.pdf");
    let out = crate::cli::admin(
        &s.storage,
        &[
            "printable",
            "--from",
            "2025-06-09",
            "--to",
            "2025-06-15",
            "--policy-days",
            "3",
            "--pdf",
            "-o",
            cli_pdf.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_lines = text_lines(&cli_pdf);
    for day in expected_days() {
        assert!(cli_lines.contains(&day), "{day:?} not in the CLI's PDF");
    }

    // The HTML: served with the dashboard's CSP, charts inline, no script.
    let r = s
        .http
        .get(api(&period))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<svg") && html.contains("@page{size:A4"),
        "{html:.300}"
    );
    assert!(!html.contains("<script"));

    let Some(bin) = chromium() else {
        panic!("chromium not found: run scripts/setup (apt-get install chromium)");
    };
    let cookie = sign_in(&s.url, &viewer).await;
    let proxy = cookie_proxy(s.url.trim_start_matches("http://").to_string(), cookie).await;
    let profile = tempfile::tempdir().unwrap();

    // Chromium prints the HTML report as the print stylesheet lays it out.
    let printed = dir.join("chromium-report.pdf");
    let (b, p) = (bin.clone(), profile.path().to_path_buf());
    let arg = format!("--print-to-pdf={}", printed.display());
    let url = format!("{proxy}/ui/compliance/report?{period}");
    tokio::task::spawn_blocking(move || {
        run_chromium(&b, &p, &[&arg, "--no-pdf-header-footer", &url])
    })
    .await
    .unwrap();
    let info = run("pdfinfo", &[printed.to_str().unwrap()]);
    assert!(info.contains("(A4)"), "{info}");
    let lines = text_lines(&printed);
    let text = lines.join("\n");
    for want in [
        "Live-patch compliance report",
        "CVE-2025-1002",
        "alice",
        "bob",
        "carol",
    ] {
        assert!(
            text.contains(want),
            "{want:?} not in Chromium's print:\n{text}"
        );
    }
    for day in expected_days() {
        assert!(
            lines.contains(&day),
            "{day:?} not a line of Chromium's print:\n{text}"
        );
    }
    let pngs = to_pngs(&printed, &dir, "chromium-report");
    let (px, _, _) = pixels(&pngs[0]);
    assert!(count_colour(&px, "#2e7d32") > 50 && count_colour(&px, "#c62828") > 20);

    // Later counts of the day rewrite its record, at most once an hour:
    // h4 catches up 10 minutes after today's record, and an hour after.
    let html_report = || async {
        s.http
            .get(api(&period))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let today = |figures: [i64; 6]| {
        let cells: String = figures.iter().map(|n| format!("<td>{n}</td>")).collect();
        format!("<tr><td>2025-06-15</td>{cells}</tr>")
    };
    s.clock.advance(600);
    s.checkin(&hosts[3], KERNEL_A, 2).await;
    let html = html_report().await;
    assert!(html.contains(&today([5, 3, 1, 1, 1, 1])), "{html}");
    s.clock.advance(3600);
    let html = html_report().await;
    assert!(html.contains(&today([5, 4, 0, 0, 1, 1])), "{html}");
    s.clock.advance(-3600 - 600);

    // The dashboard's compliance page shows the same charts.
    let shot = dir.join("dashboard-compliance.png");
    let (b, p) = (bin.clone(), profile.path().to_path_buf());
    let arg = format!("--screenshot={}", shot.display());
    let url = format!("{proxy}/ui/compliance?policy_days={POLICY}");
    tokio::task::spawn_blocking(move || {
        run_chromium(&b, &p, &[&arg, "--window-size=1280,1400", &url])
    })
    .await
    .unwrap();
    let (px, _, _) = pixels(&shot);
    for colour in ["#2e7d32", "#f9a825", "#c62828", "#e8e8e8"] {
        let n = count_colour(&px, colour);
        assert!(
            n > 100,
            "the dashboard's screenshot has {n} pixels of {colour}"
        );
    }
}
