//! `noreboot-build`, the live patch factory. For now it exposes the object
//! differ: `noreboot-build diff ORIG.o PATCHED.o` reports which functions a
//! fix changes and whether a live patch can carry the change. Errors become
//! exit codes in `exit_code` only.

use std::path::PathBuf;
use std::process::ExitCode;

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
            json,
        } => {
            let o = Object::read(&orig)?;
            let p = Object::read(&patched)?;
            let report = elfdiff::diff(&o, &p);
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
