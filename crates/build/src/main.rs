//! `noreboot-build`, the live patch factory. For now it exposes the object
//! differ: `noreboot-build diff ORIG.o PATCHED.o` reports which functions a
//! fix changes and whether a live patch can carry the change. Errors become
//! exit codes in `exit_code` only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use elfdiff::{read::Object, Outcome};

#[derive(Parser)]
#[command(
    name = "noreboot-build",
    version,
    about = "Build live patches for running Linux kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare an object before and after a fix, function by function.
    ///
    /// Exit status: 0 changed (a patch can carry it), 3 no change,
    /// 4 refused (the report says why), 1 error, 2 usage.
    Diff {
        /// The object compiled from the original source.
        orig: PathBuf,
        /// The object compiled from the patched source.
        patched: PathBuf,
        /// The fix as a unified diff of the compiled source file: shifted
        /// `__LINE__` numbers are then recognised exactly.
        #[arg(long, value_name = "DIFF")]
        lines_from: Option<PathBuf>,
        /// Write the patch object (changed and new functions, their data and
        /// special-section entries, livepatch relocation records) here.
        #[arg(short = 'o', long, value_name = "OUT.o", requires = "kernel_symbols")]
        output: Option<PathBuf>,
        /// The kernel's symbols: a System.map, or an unstripped vmlinux
        /// (whose object-file grouping resolves duplicate statics).
        #[arg(
            long,
            value_name = "FILE",
            group = "kernel_symbols",
            requires = "symvers"
        )]
        symbols: Option<PathBuf>,
        /// The kernel's Module.symvers (exports; may be empty).
        #[arg(long, value_name = "FILE")]
        symvers: Option<PathBuf>,
        /// A cached kernel workspace release: its -dbg vmlinux and
        /// Module.symvers are used.
        #[arg(long, value_name = "RELEASE", group = "kernel_symbols")]
        kernel: Option<String>,
        /// The patched object is part of this target: vmlinux or a module.
        #[arg(long, default_value = "vmlinux")]
        object_of: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Diff {
            orig,
            patched,
            lines_from,
            output,
            symbols,
            symvers,
            kernel,
            object_of,
            json,
        } => {
            let o = Object::read(&orig)?;
            let p = Object::read(&patched)?;
            let map = match &lines_from {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Some(
                        elfdiff::lines::LineMap::from_unified_diff(&text)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                    )
                }
                None => None,
            };
            let (c, report) = elfdiff::analyse(&o, &p, map.as_ref());
            let mut emitted = None;
            if let (Some(out), Outcome::Changed) = (&output, report.outcome) {
                let (ksyms, exports) =
                    kernel_symbols(symbols.as_deref(), symvers.as_deref(), kernel.as_deref())?;
                let resolver = klp::KernelResolver::new(ksyms, exports, &object_of, &o)?;
                let e = elfdiff::emit::emit(&o, &p, &c, &report, &resolver)?;
                std::fs::write(out, &e.bytes)
                    .with_context(|| format!("writing {}", out.display()))?;
                emitted = Some(e);
            }
            if json {
                let mut v = serde_json::to_value(&report)?;
                if let Some(e) = &emitted {
                    v["emitted"] = serde_json::json!({
                        "functions": e.functions,
                        "exports": e.exports,
                        "livepatch": e.livepatch.iter().map(|(o, n, p)| serde_json::json!({"object": o, "name": n, "sympos": p})).collect::<Vec<_>>(),
                        "special": e.special.iter().map(|(n, k, t)| serde_json::json!({"section": n, "kept": k, "of": t})).collect::<Vec<_>>(),
                    });
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{report}");
                if let (Some(e), Some(out)) = (&emitted, &output) {
                    println!(
                        "wrote {}: {} functions, {} exported and {} livepatch references; {}",
                        out.display(),
                        e.functions.len(),
                        e.exports.len(),
                        e.livepatch.len(),
                        e.special
                            .iter()
                            .map(|(n, k, t)| format!("{n} {k}/{t}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(ExitCode::from(match report.outcome {
                Outcome::Changed => 0,
                Outcome::NoChange => 3,
                Outcome::Refused => 4,
            }))
        }
    }
}

/// The kernel's symbols and exports from explicit files or a workspace.
fn kernel_symbols(
    symbols: Option<&std::path::Path>,
    symvers: Option<&std::path::Path>,
    kernel: Option<&str>,
) -> anyhow::Result<(klp::KernelSymbols, klp::Symvers)> {
    if let Some(release) = kernel {
        let cache = kernel_tree::Cache::from_env()?;
        let archive = kernel_tree::AptArchive::new();
        let ws = kernel_tree::Workspace::fetch(&cache, &archive, &release.parse()?)?;
        let table = ws.symbols(&cache, &archive)?;
        return Ok((
            klp::KernelSymbols::from_vmlinux(&table.vmlinux)?,
            klp::Symvers::read(&ws.module_symvers())?,
        ));
    }
    let (Some(sym), Some(sv)) = (symbols, symvers) else {
        anyhow::bail!("--output needs --kernel, or --symbols with --symvers");
    };
    let head = std::fs::read(sym).with_context(|| format!("reading {}", sym.display()))?;
    let ksyms = if head.starts_with(b"\x7fELF") {
        klp::KernelSymbols::from_vmlinux(sym)?
    } else {
        klp::KernelSymbols::from_system_map(sym, &String::from_utf8_lossy(&head))?
    };
    Ok((ksyms, klp::Symvers::read(sv)?))
}

/// The one place errors become exit codes.
fn exit_code(_err: &anyhow::Error) -> u8 {
    1
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("noreboot-build: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
