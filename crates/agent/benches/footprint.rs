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
    println!(
        "binary: {} ({:.2} MB)",
        f.agent.display(),
        size as f64 / 1e6
    );
    let mut g = lab::Guest::boot(&guest_config(f, &config("15s", "1m", ""))).unwrap();
    let mut rows: Vec<(String, Vec<f64>)> =
        ["wall", "total", "load", "transition", "overhead", "rss"]
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
            let out = g
                .exec_ok(&format!(
                    "a=$(date +%s%N); /usr/sbin/noreboot apply --json {file} > /tmp/r.json; b=$(date +%s%N); echo $(( (b - a) / 1000 )); cat /tmp/r.json"
                ))
                .unwrap();
            let (wall_us, json) = out.split_once('\n').unwrap();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let wall = wall_us.trim().parse::<f64>().unwrap() / 1000.0;
            let load = v["load_ms"].as_f64().unwrap();
            let transition = v["transition_ms"].as_f64().unwrap();
            let vals = [
                wall,
                v["total_ms"].as_f64().unwrap(),
                load,
                transition,
                wall - load - transition,
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
