//! Compare two x86-64 relocatable objects — the same kernel source file
//! compiled before and after a fix, with `-ffunction-sections
//! -fdata-sections` — function by function, and say exactly what a live
//! patch must carry. Passes run in order, one module each: [`read`] →
//! [`correlate`] → [`compare`] → [`include`]; special sections, symbol
//! resolution and emission follow in later passes. Knows nothing of
//! kernels' packages, networks or modules.
//!
//! ```no_run
//! let orig = elfdiff::read::Object::read("orig/dev.o".as_ref())?;
//! let patched = elfdiff::read::Object::read("patched/dev.o".as_ref())?;
//! let report = elfdiff::diff(&orig, &patched);
//! print!("{report}");
//! # Ok::<(), elfdiff::Error>(())
//! ```

pub mod compare;
pub mod correlate;
pub mod emit;
pub mod error;
pub mod include;
pub mod insn;
pub mod layout;
pub mod lines;
pub mod markers;
pub mod read;
pub mod records;
pub mod report;
pub mod resolve;
pub mod special;
pub mod types;

pub use error::{Error, Result};
pub use report::{Outcome, Report, Status};

/// Runs the comparison passes and returns the report.
pub fn diff(orig: &read::Object, patched: &read::Object) -> Report {
    diff_with(orig, patched, None)
}

/// Like [`diff`], with the line map of the fix to the compiled source file,
/// which tells shifted `__LINE__` numbers from real changes exactly.
pub fn diff_with(
    orig: &read::Object,
    patched: &read::Object,
    lines: Option<&lines::LineMap>,
) -> Report {
    analyse(orig, patched, lines).1
}

/// Like [`diff_with`], also returning the correlation the report rests on,
/// which [`emit::emit`] needs: one correlation serves both.
pub fn analyse(
    orig: &read::Object,
    patched: &read::Object,
    lines: Option<&lines::LineMap>,
) -> (correlate::Correlation, Report) {
    let c = correlate::correlate(orig, patched);
    let report = include::analyse(orig, patched, &c, lines);
    (c, report)
}
