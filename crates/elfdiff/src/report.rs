//! What a diff found, in a form for people (`Display`) and machines
//! (serde): every function with its status and why, changed data, and the
//! refusals that stop a live patch from being built.

use std::fmt;
use std::path::PathBuf;

/// Status of one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Code or references differ: replaced by the patch.
    Changed,
    /// Only in the patched object: included as new code.
    New,
    /// Identical.
    Unchanged,
    /// Only `__LINE__` numbers differ: left alone.
    LineOnly,
    /// Only in the original object.
    Removed,
    /// Differs, but the patch author marked it intentionally unchanged
    /// (`NOREBOOT_IGNORE_FUNCTION`): left alone, referenced as the
    /// kernel's own.
    Ignored,
}

/// One function of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionReport {
    /// Name in the original (or, for new functions, the patched) object.
    pub name: String,
    /// Name in the patched object when it differs (renumbered clones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patched_name: Option<String>,
    /// Its status.
    pub status: Status,
    /// Why it is changed (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Section it lives in (patched side when present).
    pub section: String,
    /// A compiler-made fragment without an fentry call of its own
    /// (`.cold`, `.part.N`, …): carried, but reached only through the
    /// carried functions that enter it, never redirected by ftrace.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fragment: bool,
    /// Changed or new, but not carried (init or exit code: see the
    /// report's `not_carried`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub left_out: bool,
}

/// A data object that is new or changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DataReport {
    /// Name.
    pub name: String,
    /// `new` or `changed`.
    pub status: Status,
    /// Section it lives in.
    pub section: String,
    /// Details.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A change a live patch cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The function, object or section concerned.
    pub subject: String,
    /// Why it cannot be live-patched.
    pub reason: String,
}

/// A difference between the objects that the patch does not carry, and
/// the rule that allowed leaving it out: what the live kernel will not
/// get, for a reviewer to see at a glance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotCarried {
    /// The function, data or export concerned.
    pub subject: String,
    /// The rule that let it stay out (`line-only`, `init-code`,
    /// `exit-code`, `init-data`, `author-ignored`, `removed`,
    /// `export-dropped`).
    pub rule: &'static str,
    /// Why leaving it out is sound, or what the running kernel keeps.
    pub reason: String,
}

/// The overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Something to patch, nothing refused.
    Changed,
    /// Nothing to patch.
    NoChange,
    /// At least one refusal.
    Refused,
}

impl Outcome {
    /// The outcome as the JSON report spells it (`changed`, `no-change`,
    /// `refused`).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Changed => "changed",
            Outcome::NoChange => "no-change",
            Outcome::Refused => "refused",
        }
    }
}

/// Everything a diff found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The original object.
    pub orig: PathBuf,
    /// The patched object.
    pub patched: PathBuf,
    /// Overall outcome.
    pub outcome: Outcome,
    /// Every function of either object.
    pub functions: Vec<FunctionReport>,
    /// New and changed data.
    pub data: Vec<DataReport>,
    /// Refusals.
    pub refusals: Vec<Refusal>,
    /// What the patch deliberately leaves out, and why (e.g. new exports).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Every difference the patch does not carry, with the rule that
    /// allowed it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<NotCarried>,
    /// Patched-object symbols (ELF indices) the patch carries: changed and
    /// new functions, new data, new copies of changed read-only data.
    #[serde(skip)]
    pub included: Vec<u32>,
}

impl Report {
    /// `--strict`: every difference the patch would not carry becomes a
    /// refusal, so a patch is built only when it carries all of them.
    pub fn make_strict(&mut self) {
        for n in self.not_carried.drain(..) {
            self.refusals.push(Refusal {
                subject: n.subject,
                reason: format!("not carried ({}): {} (--strict)", n.rule, n.reason),
            });
        }
        if !self.refusals.is_empty() {
            self.outcome = Outcome::Refused;
        }
    }

    /// Names of functions with `status`.
    pub fn names(&self, status: Status) -> Vec<&str> {
        self.functions
            .iter()
            .filter(|f| f.status == status)
            .map(|f| f.name.as_str())
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.outcome {
            Outcome::Changed => "changed",
            Outcome::NoChange => "no change",
            Outcome::Refused => "refused",
        };
        writeln!(
            f,
            "{} -> {}: {label}",
            self.orig.display(),
            self.patched.display()
        )?;
        for func in &self.functions {
            let tag = match func.status {
                Status::Changed => "changed  ",
                Status::New => "new      ",
                Status::LineOnly => "line-only",
                Status::Removed => "removed  ",
                Status::Ignored => "ignored  ",
                Status::Unchanged => continue,
            };
            write!(f, "  {tag} {}", func.name)?;
            if let Some(p) = &func.patched_name {
                write!(f, " (now {p})")?;
            }
            if !func.reasons.is_empty() {
                write!(f, ": {}", func.reasons.join("; "))?;
            }
            if func.status == Status::LineOnly {
                write!(f, ": only __LINE__ numbers differ, not patched")?;
            }
            if func.status == Status::Ignored {
                write!(f, " (marked unchanged by the patch author, not patched)")?;
            }
            writeln!(f)?;
        }
        for d in &self.data {
            let tag = if d.status == Status::New {
                "new data "
            } else {
                "data     "
            };
            write!(f, "  {tag} {}", d.name)?;
            if !d.reasons.is_empty() {
                write!(f, ": {}", d.reasons.join("; "))?;
            }
            writeln!(f)?;
        }
        let unchanged = self
            .functions
            .iter()
            .filter(|x| x.status == Status::Unchanged)
            .count();
        writeln!(f, "  {unchanged} functions unchanged")?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        for n in &self.not_carried {
            writeln!(f, "  not carried ({}) {}: {}", n.rule, n.subject, n.reason)?;
        }
        for r in &self.refusals {
            writeln!(f, "  REFUSED {}: {}", r.subject, r.reason)?;
        }
        Ok(())
    }
}
