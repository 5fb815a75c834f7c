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
            let report = elfdiff::diff_with(&o, &p, map.as_ref());
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(ExitCode::from(match report.outcome {
                Outcome::Changed => 0,
                Outcome::NoChange => 3,
                Outcome::Refused => 4,
            }))
        }
    }
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
