//! The bundle manifest (`manifest.json`, format 1): which kernel build the
//! patch is for, its level, the CVEs it fixes, the functions it replaces,
//! and the sha256 of the module, so that signing the manifest signs the
//! whole bundle. Parsing refuses unknown fields and duplicate keys;
//! `validate` bounds every string and list and names the offending field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The manifest format this crate reads and writes.
pub const FORMAT: u32 = 1;
/// A kernel module name is at most MODULE_NAME_LEN - 1 = 55 bytes, and the
/// patch name is the module's name.
pub const MAX_NAME: usize = 55;
/// `struct new_utsname` holds 64 bytes of release.
pub const MAX_RELEASE: usize = 64;
/// Debian versions and the effective version.
pub const MAX_VERSION: usize = 128;
/// GNU build-ids are 20 bytes (SHA-1) in practice; 64 leaves room.
pub const MAX_BUILD_ID: usize = 64;
/// CVEs one bundle may list.
pub const MAX_CVES: usize = 4096;
/// One CVE's description.
pub const MAX_CVE_DESCRIPTION: usize = 4096;
/// The patch description.
pub const MAX_DESCRIPTION: usize = 16 * 1024;
/// Target objects (vmlinux and modules).
pub const MAX_TARGETS: usize = 4096;
/// Functions over all targets.
pub const MAX_FUNCTIONS: usize = 100_000;
/// The kernel's KSYM_NAME_LEN is 512 including the NUL.
pub const MAX_SYMBOL: usize = 511;
/// Toolchain entries.
pub const MAX_TOOLCHAIN: usize = 64;
/// Differences not carried, over all objects.
pub const MAX_NOT_CARRIED: usize = 100_000;
/// A not-carried entry's rule name.
pub const MAX_RULE: usize = 64;
/// A toolchain key.
pub const MAX_TOOLCHAIN_KEY: usize = 64;
/// A toolchain value, and the builder text.
pub const MAX_TOOLCHAIN_VALUE: usize = 1024;

/// What is wrong with a manifest, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The field's path, e.g. `cves[3].id`; empty when the JSON itself is
    /// broken.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "field `{}`: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ManifestError {}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// Patch name: the module's name and `/sys/kernel/livepatch/<name>`.
    pub name: String,
    /// Patch level, from 1. Levels are cumulative: level N carries every
    /// fix of the levels before it.
    pub level: u32,
    /// The one kernel build the module is for.
    pub kernel: Kernel,
    /// The package version the patched kernel is equivalent to, as the
    /// author declares it (what vulnerability scanners should see).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_version: Option<String>,
    /// CVEs fixed.
    pub cves: Vec<Cve>,
    /// What the patch fixes.
    pub description: String,
    /// The functions replaced, per object.
    pub targets: Vec<Target>,
    /// The module (`module.ko`).
    pub module: Module,
    /// Compiler, linker and tool versions that built the module.
    #[serde(deserialize_with = "unique_map")]
    pub toolchain: BTreeMap<String, String>,
    /// When the bundle was made: RFC 3339, UTC (`...Z`).
    pub created: String,
    /// Who or what made the bundle (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Every difference between the kernel's objects and the fixed ones
    /// that the module deliberately does not carry, with the rule that
    /// allowed it: what an operator or auditor needs to know the patch is
    /// not the fixed kernel in every byte, and why that is sound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<NotCarried>,
}

/// One difference the module does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotCarried {
    /// The compiled object it was found in (`kernel/audit.o`).
    pub object: String,
    /// The function, data or export.
    pub subject: String,
    /// The rule that allowed leaving it out (`init-code`, `line-only`, …).
    pub rule: String,
    /// What the running kernel keeps, and why that is sound.
    pub reason: String,
}

/// The kernel build a patch is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// `uname -r`, e.g. `6.1.0-47-cloud-amd64`.
    pub release: String,
    /// GNU build-id of the kernel image, lowercase hex.
    pub build_id: String,
    /// Package version, e.g. `6.1.170-3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A CVE the patch fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cve {
    /// `CVE-YYYY-NNNN`, four or more digits in the last part.
    pub id: String,
    /// What it is.
    pub description: String,
}

/// An object whose functions the patch replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `vmlinux` or a module name.
    pub object: String,
    /// Functions replaced.
    pub functions: Vec<Function>,
}

/// A function the patch replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    /// Symbol name.
    pub name: String,
    /// Position among same-named symbols (livepatch `old_sympos`; 0 when
    /// the name is unique).
    pub sympos: u32,
}

/// The module the manifest pins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    /// Lowercase hex SHA-256 of `module.ko`.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A string map that refuses duplicate keys: serde's default keeps the
/// last, and a signed document must not mean different things to
/// different JSON parsers.
fn unique_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut m = BTreeMap::new();
            while let Some((k, v)) = a.next_entry::<String, String>()? {
                if m.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                }
                m.insert(k, v);
            }
            Ok(m)
        }
    }
    d.deserialize_map(V)
}

impl Manifest {
    /// Parses and validates `manifest.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let m: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            err(field, e.into_inner().to_string())
        })?;
        de.end()
            .map_err(|e| err("", format!("data after the manifest: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// The manifest as written into a bundle: pretty JSON and a newline,
    /// so `tar -xf` gives a file people can read.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, integers and maps cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks every field against the format's rules and limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(err(
                "format",
                format!(
                    "format {} is not supported (this build reads format {FORMAT})",
                    self.format
                ),
            ));
        }
        check_name("name", &self.name)?;
        if self.level < 1 {
            return Err(err("level", "must be ≥ 1"));
        }
        self.kernel.validate()?;
        if let Some(v) = &self.effective_version {
            check_version("effective_version", v)?;
        }
        if self.cves.len() > MAX_CVES {
            return Err(err("cves", too_many(self.cves.len(), MAX_CVES)));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.cves.iter().enumerate() {
            check_cve_id(&format!("cves[{i}].id"), &c.id)?;
            if !seen.insert(&c.id) {
                return Err(err(
                    format!("cves[{i}].id"),
                    format!("{} is listed twice", c.id),
                ));
            }
            check_text(
                &format!("cves[{i}].description"),
                &c.description,
                MAX_CVE_DESCRIPTION,
            )?;
        }
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        self.validate_targets()?;
        if self.module.sha256.len() != 64 || !is_lower_hex(&self.module.sha256) {
            return Err(err("module.sha256", "must be 64 lowercase hex digits"));
        }
        if self.module.size == 0 || self.module.size > crate::MAX_MODULE {
            return Err(err(
                "module.size",
                format!(
                    "must be 1 to {} bytes, not {}",
                    crate::MAX_MODULE,
                    self.module.size
                ),
            ));
        }
        if self.toolchain.len() > MAX_TOOLCHAIN {
            return Err(err(
                "toolchain",
                too_many(self.toolchain.len(), MAX_TOOLCHAIN),
            ));
        }
        for (k, v) in &self.toolchain {
            check_line(&format!("toolchain.{k}"), k, MAX_TOOLCHAIN_KEY)?;
            if k.is_empty() {
                return Err(err("toolchain", "empty key"));
            }
            check_line(&format!("toolchain.{k}"), v, MAX_TOOLCHAIN_VALUE)?;
        }
        check_created(&self.created)?;
        if let Some(b) = &self.builder {
            check_line("builder", b, MAX_TOOLCHAIN_VALUE)?;
        }
        if self.not_carried.len() > MAX_NOT_CARRIED {
            return Err(err(
                "not_carried",
                too_many(self.not_carried.len(), MAX_NOT_CARRIED),
            ));
        }
        for (i, n) in self.not_carried.iter().enumerate() {
            let f = |x: &str| format!("not_carried[{i}].{x}");
            check_line(&f("object"), &n.object, MAX_TOOLCHAIN_VALUE)?;
            check_line(&f("subject"), &n.subject, MAX_TOOLCHAIN_VALUE)?;
            check_line(&f("rule"), &n.rule, MAX_RULE)?;
            check_text(&f("reason"), &n.reason, MAX_CVE_DESCRIPTION)?;
            for (name, v) in [
                ("object", &n.object),
                ("subject", &n.subject),
                ("rule", &n.rule),
            ] {
                if v.is_empty() {
                    return Err(err(f(name), "empty"));
                }
            }
        }
        Ok(())
    }

    fn validate_targets(&self) -> Result<(), ManifestError> {
        if self.targets.is_empty() {
            return Err(err("targets", "no target: the patch replaces nothing"));
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(err("targets", too_many(self.targets.len(), MAX_TARGETS)));
        }
        let total: usize = self.targets.iter().map(|t| t.functions.len()).sum();
        if total > MAX_FUNCTIONS {
            return Err(err(
                "targets",
                format!("{total} functions, more than {MAX_FUNCTIONS}"),
            ));
        }
        let mut objects = BTreeSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let f = format!("targets[{i}].object");
            if t.object != "vmlinux" {
                check_module_name(&f, &t.object)?;
            }
            if !objects.insert(&t.object) {
                return Err(err(f, format!("{} is listed twice", t.object)));
            }
            if t.functions.is_empty() {
                return Err(err(format!("targets[{i}].functions"), "empty"));
            }
            let mut seen = BTreeSet::new();
            for (j, func) in t.functions.iter().enumerate() {
                let f = format!("targets[{i}].functions[{j}].name");
                check_symbol(&f, &func.name)?;
                if !seen.insert((&func.name, func.sympos)) {
                    return Err(err(
                        f,
                        format!("{},{} is listed twice", func.name, func.sympos),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Kernel {
    fn validate(&self) -> Result<(), ManifestError> {
        let r = &self.release;
        if r.is_empty() || r.len() > MAX_RELEASE {
            return Err(err(
                "kernel.release",
                format!("must be 1 to {MAX_RELEASE} bytes"),
            ));
        }
        if let Some(c) = r
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._+~-".contains(*c)))
        {
            return Err(err(
                "kernel.release",
                format!("character {c:?} is not allowed"),
            ));
        }
        let b = &self.build_id;
        if b.is_empty()
            || !b.len().is_multiple_of(2)
            || b.len() > 2 * MAX_BUILD_ID
            || !is_lower_hex(b)
        {
            return Err(err(
                "kernel.build_id",
                format!("must be 1 to {MAX_BUILD_ID} bytes as lowercase hex"),
            ));
        }
        if let Some(v) = &self.version {
            check_version("kernel.version", v)?;
        }
        Ok(())
    }
}

fn too_many(n: usize, max: usize) -> String {
    format!("{n} entries, more than {max}")
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_name(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(err(field, format!("must be 1 to {MAX_NAME} characters")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(err(
            field,
            format!("character {c:?} is not allowed (only a-z, 0-9, _)"),
        ));
    }
    Ok(())
}

/// Module names as targets: the kernel shows them with `_`, but `-` is
/// accepted since modprobe treats the two alike.
fn check_module_name(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(err(
            field,
            format!("must be `vmlinux` or a module name of 1 to {MAX_NAME} characters"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(err(
            field,
            format!("character {c:?} is not allowed in a module name"),
        ));
    }
    Ok(())
}

fn check_symbol(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_SYMBOL {
        return Err(err(field, format!("must be 1 to {MAX_SYMBOL} bytes")));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(err(
            field,
            format!("character {c:?} is not allowed in a symbol"),
        ));
    }
    Ok(())
}

fn check_version(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_VERSION {
        return Err(err(field, format!("must be 1 to {MAX_VERSION} bytes")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".+~:-".contains(*c)))
    {
        return Err(err(
            field,
            format!("character {c:?} is not allowed in a version"),
        ));
    }
    Ok(())
}

/// Whether `s` is a CVE identifier as bundles carry them:
/// `CVE-YYYY-NNNN`, four to nineteen digits in the last part (MITRE's
/// format; the bound keeps ids fixed-size enough for every consumer). The
/// one definition: the factory checks `--cve` with it, so nothing it
/// builds is refused later by the bundler.
pub fn is_cve_id(s: &str) -> bool {
    s.strip_prefix("CVE-")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(year, num)| {
            year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && (4..=19).contains(&num.len())
                && num.bytes().all(|b| b.is_ascii_digit())
        })
}

fn check_cve_id(field: &str, s: &str) -> Result<(), ManifestError> {
    if !is_cve_id(s) {
        let shown: String = s.chars().take(40).collect();
        return Err(err(field, format!("{shown:?} is not CVE-YYYY-NNNN")));
    }
    Ok(())
}

/// A one-line field: at most `max` bytes, no control characters.
fn check_line(field: &str, s: &str, max: usize) -> Result<(), ManifestError> {
    if s.len() > max {
        return Err(err(field, format!("{} bytes, more than {max}", s.len())));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(err(
            field,
            format!("control character {c:?} in a one-line field"),
        ));
    }
    Ok(())
}

/// Free text: at most `max` bytes; newlines and tabs are the only control
/// characters (others could rewrite a terminal that shows it).
fn check_text(field: &str, s: &str, max: usize) -> Result<(), ManifestError> {
    if s.len() > max {
        return Err(err(field, format!("{} bytes, more than {max}", s.len())));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(err(field, format!("control character {c:?}")));
    }
    Ok(())
}

fn check_created(s: &str) -> Result<(), ManifestError> {
    // humantime accepts exactly `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
    if s.len() > 40 || !s.ends_with('Z') || humantime::parse_rfc3339(s).is_err() {
        let shown: String = s.chars().take(40).collect();
        return Err(err(
            "created",
            format!("{shown:?} is not an RFC 3339 UTC time like 2025-01-31T12:00:00Z"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_ids() {
        for ok in ["CVE-2024-1234", "CVE-2021-4154", "CVE-2024-1234567"] {
            check_cve_id("x", ok).unwrap();
        }
        for bad in [
            "CVE-2024-123",
            "cve-2024-1234",
            "CVE-24-1234",
            "CVE-2024-12a4",
            "CVE-2024-1234 ",
            "",
        ] {
            assert!(check_cve_id("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn created_times() {
        check_created("2025-01-31T12:00:00Z").unwrap();
        check_created("2025-01-31T12:00:00.123Z").unwrap();
        for bad in [
            "2025-01-31T12:00:00+01:00",
            "2025-01-31 12:00:00Z",
            "2025-13-01T00:00:00Z",
            "yesterday",
        ] {
            assert!(check_created(bad).is_err(), "{bad}");
        }
    }
}
