//! The alerting rules shipped in `deploy/prometheus/`: promtool checks them
//! and runs their unit tests; every metric their expressions read is in a
//! real server's scrape; and a real server's scrapes — a healthy fleet,
//! then one with each alert's situation — fed to promtool as series fire
//! every alert once its `for:` has passed, and none before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

const DAY: i64 = 86_400;

/// `deploy/prometheus/`.
fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

/// One alerting rule as the rules file writes it.
#[derive(Debug)]
struct Rule {
    alert: String,
    expr: String,
    /// Its `for:`, in minutes (0 when it has none).
    for_minutes: u64,
}

/// The rules of `noreboot-rules.yml`, read line by line: the file keeps
/// each expression on one line (its header says why), and a block scalar
/// here fails the test rather than being read wrongly.
fn rules() -> Vec<Rule> {
    let path = rules_dir().join("noreboot-rules.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut rules: Vec<Rule> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = || format!("{}:{}", path.display(), n + 1);
        if let Some(name) = line.strip_prefix("- alert:") {
            rules.push(Rule {
                alert: name.trim().to_string(),
                expr: String::new(),
                for_minutes: 0,
            });
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && !expr.starts_with(['|', '>']),
                "{}: keep expressions on one line",
                at()
            );
            let rule = rules.last_mut().unwrap_or_else(|| panic!("{}", at()));
            rule.expr = expr.to_string();
        } else if let Some(d) = line.strip_prefix("for:") {
            let rule = rules.last_mut().unwrap_or_else(|| panic!("{}", at()));
            rule.for_minutes = minutes(d.trim()).unwrap_or_else(|| panic!("{}: {d}", at()));
        }
    }
    assert!(!rules.is_empty(), "no rules in {path:?}");
    for r in &rules {
        assert!(!r.expr.is_empty(), "{} has no expr", r.alert);
    }
    rules
}

/// A Prometheus duration of whole minutes (`90s` is not one): `15m`, `1h`,
/// `6h30m`, `1d`.
fn minutes(d: &str) -> Option<u64> {
    let (mut total, mut num) = (0, String::new());
    for c in d.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'm' => 1,
            'h' => 60,
            'd' => 1440,
            _ => return None,
        };
        total += num.parse::<u64>().ok()? * unit;
        num.clear();
    }
    num.is_empty().then_some(total)
}

/// The metric names a PromQL expression reads: its identifiers, less
/// what sits in strings, label matchers and ranges, the label lists of
/// `by`/`without`/`on`/`ignoring`, function calls and PromQL's keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Blank out strings, `{...}` and `[...]` first.
    let mut plain = String::new();
    let (mut quote, mut escaped, mut depth) = (None, false, 0);
    for c in expr.chars() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            (None, c) if depth == 0 => plain.push(c),
            (None, _) => {}
        }
        if quote.is_some() || depth > 0 {
            plain.push(' ');
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word = c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if !word {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:.".contains(chars[i])) {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        let call = chars.get(next) == Some(&'(');
        if LABEL_LISTS.contains(&token.as_str()) {
            // Skip the list of label names.
            if call {
                i = next + chars[next..].iter().position(|c| *c == ')').unwrap_or(0) + 1;
            }
            continue;
        }
        if c.is_ascii_digit() || call || KEYWORDS.contains(&token.as_str()) {
            continue;
        }
        names.insert(token);
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |e| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"max without (instance) (increase(a_total{result=~"x|y"}[1h])) > 0.5"#),
        ["a_total"]
    );
    assert_eq!(
        names(r#"sum by (job) (rate(b[5m] offset 1h)) / on (job) group_left c{x="}"} or d"#),
        ["b", "c", "d"]
    );
    assert_eq!(names("1 + count(e:rate5m)"), ["e:rate5m"]);
}

/// Runs promtool with `args` in `dir`; its output when it fails.
fn promtool(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run scripts/setup (apt-get install prometheus)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("promtool {}: {text}", args.join(" ")))
    }
}

#[test]
fn shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = rules_dir();
    let out = promtool(&dir, &["check", "rules", "noreboot-rules.yml"]).unwrap();
    let n = rules().len();
    assert!(out.contains(&format!("{n} rules found")), "{out}");
    promtool(&dir, &["test", "rules", "noreboot-rules.test.yml"]).unwrap();
}

/// `/metrics` as written: (series, value) per sample line, and the
/// families declared.
struct Scrape {
    samples: BTreeMap<String, String>,
    families: BTreeSet<String>,
}

impl Scrape {
    fn value(&self, series: &str) -> f64 {
        self.samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in {:#?}", self.samples))
            .parse()
            .unwrap()
    }
}

async fn scrape(s: &TestServer) -> Scrape {
    // A fresh computation of the fleet figures each time.
    s.clock.advance(server::api::metrics::FLEET_MAX_AGE);
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = Scrape {
        samples: BTreeMap::new(),
        families: BTreeSet::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            out.families
                .insert(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            out.samples.insert(series.to_string(), value.to_string());
        }
    }
    out
}

async fn report(s: &TestServer, token: &str, result: &str, level: u32, active: u32) {
    let (st, body) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(token),
            Some(Body::Json(json!({
                "action": "update", "level": level, "result": result, "reason": "test",
                "duration_ms": 5, "active_level": active
            }))),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
}

/// Deletes a published bundle from the store behind the server's back
/// (the file on SQLite, the rows on PostgreSQL): the database still names
/// it, so serving it is the server's own failure.
async fn lose_bundle(s: &TestServer, sha256: &str) {
    if s.storage.db_url.is_none() {
        let file = s
            .ctx
            .bundle_dir()
            .join(&sha256[..2])
            .join(format!("{sha256}.nrb"));
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        return;
    }
    for table in ["bundle_chunks", "bundle_blobs"] {
        let done = sqlx::query(&format!("DELETE FROM {table} WHERE sha256 = $1"))
            .bind(sha256)
            .execute(s.ctx.db.pool())
            .await
            .unwrap();
        assert!(done.rows_affected() > 0, "{table}");
    }
}

#[tokio::test]
async fn alert_rules_read_real_metrics_and_fire_on_a_real_servers_troubles() {
    let rules = rules();
    let s = TestServer::start().await;
    // A healthy fleet: a level, a host that applied it, nothing failing.
    s.clock.set(T0 - 40 * DAY);
    s.publish_fixing(KERNEL_A, 1, &["CVE-2024-0001"], &["stable"])
        .await;
    let key = s.reg_key("stable").await;
    let web = s.register(&key, "web1", KERNEL_A).await;
    s.checkin(&web.token, KERNEL_A, 1).await;
    report(&s, &web.token, "applied", 1, 1).await;
    let healthy = scrape(&s).await;

    // Forty days later web1 has not checked in since (stale); db1 joins
    // on the same kernel and stays at level 0, exposed to a CVE fixed 40
    // days ago (breaching the 30-day policy), its updates failing and
    // rolling back; edge1 runs a kernel with no level; and db1's download
    // of a bundle lost from the store fails with a server error.
    s.clock.set(T0);
    let db = s.register(&key, "db1", KERNEL_A).await;
    let target = s.checkin(&db.token, KERNEL_A, 0).await.target.unwrap();
    report(&s, &db.token, "failed", 1, 0).await;
    report(&s, &db.token, "rolled-back", 1, 0).await;
    let edge = s.register(&key, "edge1", KERNEL_B).await;
    s.checkin(&edge.token, KERNEL_B, 0).await;
    lose_bundle(&s, &target.sha256).await;
    let (st, body) = s
        .call(Method::GET, &target.bundle_url, Some(&db.token), None)
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let troubled = scrape(&s).await;

    for (series, before, after) in [
        ("noreboot_hosts_breaching", 0.0, 1.0),
        ("noreboot_hosts_stale", 0.0, 1.0),
        ("noreboot_uncovered_builds", 0.0, 1.0),
        ("noreboot_host_reports_total{result=\"applied\"}", 1.0, 1.0),
        ("noreboot_host_reports_total{result=\"failed\"}", 0.0, 1.0),
        (
            "noreboot_host_reports_total{result=\"rolled-back\"}",
            0.0,
            1.0,
        ),
        ("noreboot_http_server_errors_total", 0.0, 1.0),
    ] {
        assert_eq!(healthy.value(series), before, "healthy {series}");
        assert_eq!(troubled.value(series), after, "troubled {series}");
    }
    // Every metric the rules read is exported, from the first scrape on.
    for r in &rules {
        let names = metric_names(&r.expr);
        assert!(!names.is_empty(), "{}: no metric in {}", r.alert, r.expr);
        for name in names {
            assert!(
                name.starts_with("noreboot_") && healthy.families.contains(&name),
                "{}: {name} is not in a real scrape of /metrics ({:?})",
                r.alert,
                healthy.families
            );
        }
    }

    // The two scrapes as series: healthy for an hour, then troubled for
    // longer than the longest `for:`.
    let (calm, longest) = (60, rules.iter().map(|r| r.for_minutes).max().unwrap());
    let series: BTreeSet<&String> = healthy
        .samples
        .keys()
        .chain(troubled.samples.keys())
        .collect();
    let mut yaml = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        serde_json::to_string(&rules_dir().join("noreboot-rules.yml")).unwrap()
    );
    for name in series {
        let v = |sc: &Scrape| sc.samples.get(name).cloned().unwrap_or_else(|| "_".into());
        yaml.push_str(&format!(
            "      - series: {}\n        values: '{}x{calm} {}x{}'\n",
            serde_json::to_string(name).unwrap(),
            v(&healthy),
            v(&troubled),
            longest + 30
        ));
    }
    // Nothing pending or firing while healthy; each alert firing once its
    // trouble has lasted its `for:` (plus two evaluations).
    yaml.push_str(&format!(
        "    promql_expr_test:\n      - expr: ALERTS\n        eval_time: {calm}m\n        exp_samples: []\n"
    ));
    for r in &rules {
        yaml.push_str(&format!(
            "      - expr: group by (alertname) (ALERTS{{alertname=\"{0}\",alertstate=\"firing\"}})\n        eval_time: {1}m\n        exp_samples:\n          - labels: '{{alertname=\"{0}\"}}'\n            value: 1\n",
            r.alert,
            calm + 1 + r.for_minutes + 2
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scrapes.test.yml"), &yaml).unwrap();
    if let Err(e) = promtool(dir.path(), &["test", "rules", "scrapes.test.yml"]) {
        panic!("{e}\nthe test file:\n{yaml}");
    }
}
