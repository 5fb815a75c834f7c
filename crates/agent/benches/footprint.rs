//! Footprint of the agent (BENCHMARKS.md): binary size, peak RSS during
//! `apply`, and the time from `apply` to transition done minus what the
//! kernel spends loading the module and switching tasks. Runs in a lab
//! guest (TCG emulation: every figure there is slower than on hardware).
//! `cargo bench -p agent --bench footprint [-- RUNS]`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{config, fixture, guest_config};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let f = fixture();
    let size = std::fs::metadata(&f.agent).unwrap().len();
    // As packaged: stripped (the release profile keeps line tables).
    let stripped = f.dir.join("noreboot.stripped");
    let st = std::process::Command::new("strip")
        .args(["--strip-unneeded", "-o"])
        .arg(&stripped)
        .arg(&f.agent)
        .status()
        .unwrap();
    assert!(st.success());
    println!(
        "binary: {} ({:.2} MB; stripped as packaged {:.2} MB)",
        f.agent.display(),
        size as f64 / 1e6,
        std::fs::metadata(&stripped).unwrap().len() as f64 / 1e6
    );
    let mut g = lab::Guest::boot(&guest_config(f, &config("15s", "1m", ""))).unwrap();
    // The command channel's own cost, to subtract from wall times (busybox
    // `date` has no sub-second format).
    let base = median(
        (0..7)
            .map(|_| g.exec("true").unwrap().duration.as_secs_f64() * 1000.0)
            .collect(),
    );
    println!("command channel round trip: {base:.1} ms (subtracted from wall)");
    let mut rows: Vec<(String, Vec<f64>)> = [
        "wall",
        "total",
        "load",
        "transition",
        "unload",
        "overhead",
        "rss",
    ]
    .iter()
    .map(|n| (n.to_string(), Vec::new()))
    .collect();
    for case in ["none->1", "1->2"] {
        for r in &mut rows {
            r.1.clear();
        }
        for _ in 0..runs {
            let (setup, file) = match case {
                "none->1" => ("/usr/sbin/noreboot unload >/dev/null", "/root/l1.nrb"),
                _ => (
                    "/usr/sbin/noreboot unload >/dev/null && /usr/sbin/noreboot apply /root/l1.nrb >/dev/null",
                    "/root/l2.nrb",
                ),
            };
            g.exec_ok(setup).unwrap();
            let r = g
                .exec(&format!("/usr/sbin/noreboot apply --json {file}"))
                .unwrap();
            assert_eq!(r.status, 0, "{r:?}");
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            let wall = r.duration.as_secs_f64() * 1000.0 - base;
            let load = v["load_ms"].as_f64().unwrap();
            let transition = v["transition_ms"].as_f64().unwrap();
            let unload = v["unload_ms"].as_f64().unwrap();
            let vals = [
                wall,
                v["total_ms"].as_f64().unwrap(),
                load,
                transition,
                unload,
                v["agent_overhead_ms"].as_f64().unwrap(),
                v["peak_rss_kib"].as_f64().unwrap() / 1024.0,
            ];
            for (r, x) in rows.iter_mut().zip(vals) {
                r.1.push(x);
            }
        }
        println!("apply {case}, median of {runs} (guest under TCG):");
        for (n, v) in &rows {
            let unit = if n == "rss" { "MiB peak RSS" } else { "ms" };
            println!(
                "  {n:<10} {:>8.1} {unit}   (all: {:?})",
                median(v.clone()),
                v.iter()
                    .map(|x| (x * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            );
        }
    }
}
