//! Times build roots for scripts/bench-buildroot: makes (or finds) the root
//! of a suite (`trixie-rust`: the suite's root with Rust) and runs its
//! compiler's `--version` inside, printing seconds
//! for each; with `--object`, also compiles that object of the pinned 6.1
//! kernel's prepared tree with whatever toolchain the environment selects
//! (`NOREBOOT_BUILDROOT=always` for a bookworm root).
//!
//! ```text
//! cargo run --release -p kernel-tree --example buildroot -- trixie
//! cargo run --release -p kernel-tree --example buildroot -- bookworm --object fs/proc/cmdline.o
//! ```

use std::path::Path;
use std::time::Instant;

use kernel_tree::buildroot::{BuildRoot, Rust, SUITES};
use kernel_tree::{AptArchive, Cache, Workspace, DIFF_CFLAGS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args
        .first()
        .ok_or("usage: buildroot <suite> [--object <path.o>]")?;
    let (suite_name, rust) = match name.strip_suffix("-rust") {
        Some(s) => (s, Rust::With),
        None => (name.as_str(), Rust::Without),
    };
    let suite = *SUITES
        .iter()
        .find(|s| s.name == suite_name)
        .ok_or_else(|| format!("unknown suite {name}"))?;
    let cache = Cache::from_env()?;
    let started = Instant::now();
    let root = BuildRoot::ensure(&cache, suite, rust)?;
    println!(
        "ensure {} {:.3}",
        root.name(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let version = root.version(&format!("gcc-{}", suite.gcc))?;
    println!("version {:.3} {version}", started.elapsed().as_secs_f64());
    if let Some(object) = args.iter().skip_while(|a| *a != "--object").nth(1) {
        let ws = Workspace::fetch(&cache, &AptArchive::new(), &"6.1.0-47-cloud-amd64".parse()?)?;
        let tree = ws.source_tree(&cache, &AptArchive::new())?;
        let out = tempfile::tempdir()?;
        let started = Instant::now();
        tree.compile(object, DIFF_CFLAGS, &out.path().join("o.o"))?;
        println!(
            "compile {:.3} {} ({})",
            started.elapsed().as_secs_f64(),
            Path::new(object).display(),
            tree.toolchain()
        );
    }
    Ok(())
}
