//! `noreboot-build keygen` and `noreboot-build bundle`: making a signing
//! key pair, and turning the factory's output directory (its
//! `manifest.json` and the module that names) into one signed bundle file
//! for one patch level. The factory's manifest is read as data here, not
//! shared as a type, so the bundle format does not move when the factory's
//! report does.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use bundle::manifest::{self, Cve, Function, Kernel, Manifest, Target};
use bundle::{Bundle, SecretKey};
use kernel::module_id::ModuleNotes;

/// A problem with the arguments rather than the inputs (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The secret key's file name in `keygen`'s directory.
pub const SECRET_KEY_FILE: &str = "noreboot.key";
/// The public key's file name in `keygen`'s directory.
pub const PUBLIC_KEY_FILE: &str = "noreboot.pub";

/// Makes a key pair in `dir` (created if missing): `noreboot.key` (mode
/// 0600) and `noreboot.pub`. Existing files are replaced only with `force`,
/// since losing a signing key strands every host that trusts it.
pub fn keygen(dir: &Path, force: bool) -> anyhow::Result<SecretKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = dir.join(SECRET_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    for path in [&secret, &public] {
        if path.symlink_metadata().is_ok() {
            if !force {
                bail!(
                    "{} already exists (--force replaces the key pair)",
                    path.display()
                );
            }
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let key = SecretKey::generate()?;
    key.write(&secret)?;
    key.public_key().write(&public)?;
    Ok(key)
}

/// What `bundle` needs.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// The factory's output directory.
    pub from: PathBuf,
    /// Patch level (≥ 1).
    pub level: u32,
    /// Secret key file.
    pub key: PathBuf,
    /// The version scanners should see.
    pub effective_version: Option<String>,
    /// Per-CVE descriptions, replacing the patch description for that CVE.
    pub cve_descriptions: Vec<(String, String)>,
    /// The bundle file; default `<from>/<name>-<level>.nrb`.
    pub out: Option<PathBuf>,
}

/// The parts of the factory's `manifest.json` a bundle uses (see
/// `factory::Manifest`; other fields are ignored).
#[derive(Debug, serde::Deserialize)]
struct FactoryManifest {
    name: String,
    kernel_release: String,
    kernel_build_id: String,
    kernel_version: String,
    targets: Vec<FactoryTarget>,
    cves: Vec<String>,
    description: String,
    /// (file name, sha256)
    module: (String, String),
    toolchain: BTreeMap<String, String>,
    #[serde(default)]
    verify: Option<FactoryVerify>,
}

#[derive(Debug, serde::Deserialize)]
struct FactoryTarget {
    object: String,
    /// (name, sympos)
    functions: Vec<(String, u32)>,
    /// What the module leaves out, and why.
    #[serde(default)]
    not_carried: Vec<FactoryNotCarried>,
}

#[derive(Debug, serde::Deserialize)]
struct FactoryNotCarried {
    object: String,
    subject: String,
    rule: String,
    reason: String,
}

#[derive(Debug, serde::Deserialize)]
struct FactoryVerify {
    problems: Vec<String>,
}

/// The factory's manifest is a report with timings and match lists; it is
/// bounded anyway because it is read whole.
const MAX_FACTORY_MANIFEST: u64 = 64 << 20;

/// Builds, signs and writes the bundle; returns where it went.
pub fn bundle(o: &BundleOptions) -> anyhow::Result<(PathBuf, Bundle)> {
    let manifest_path = o.from.join("manifest.json");
    let raw = read_limited(&manifest_path, MAX_FACTORY_MANIFEST)?;
    let f: FactoryManifest = serde_json::from_slice(&raw).with_context(|| {
        format!(
            "{}: not a manifest written by the factory",
            manifest_path.display()
        )
    })?;
    if let Some(v) = &f.verify {
        if !v.problems.is_empty() {
            bail!(
                "{}: the factory's verification failed, so the module is not bundled:\n  {}",
                manifest_path.display(),
                v.problems.join("\n  ")
            );
        }
    }

    // The module: a plain file name in the output directory, unchanged
    // since the factory hashed it.
    let (ko_name, ko_sha) = &f.module;
    let stem = ko_name
        .strip_suffix(".ko")
        .filter(|s| !s.is_empty() && !s.contains('/') && *s != "." && *s != "..")
        .with_context(|| {
            format!(
                "{}: module {ko_name:?} is not a .ko file name",
                manifest_path.display()
            )
        })?;
    let ko_path = o.from.join(ko_name);
    let module = read_limited(&ko_path, bundle::MAX_MODULE)?;
    let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&module));
    if &actual != ko_sha {
        bail!(
            "{} has sha256 {actual}, but {} says {ko_sha}: was it rebuilt or changed since?",
            ko_path.display(),
            manifest_path.display()
        );
    }
    // The kernel names the patch after the module, where kbuild has
    // turned dashes into underscores.
    if stem != f.name.replace('-', "_") {
        bail!(
            "{}: module {ko_name} does not belong to patch {:?}",
            manifest_path.display(),
            f.name
        );
    }

    check_identity(&ko_path, &module, stem, &f.kernel_build_id)?;

    let cves = cves(&f, &o.cve_descriptions)?;
    let m = Manifest {
        format: manifest::FORMAT,
        name: stem.to_string(),
        level: o.level,
        kernel: Kernel {
            release: f.kernel_release.clone(),
            build_id: f.kernel_build_id.clone(),
            version: Some(f.kernel_version.clone()).filter(|v| !v.is_empty()),
        },
        effective_version: o.effective_version.clone(),
        cves,
        description: f.description.clone(),
        targets: f
            .targets
            .iter()
            .map(|t| Target {
                object: t.object.clone(),
                functions: t
                    .functions
                    .iter()
                    .map(|(name, sympos)| Function {
                        name: name.clone(),
                        sympos: *sympos,
                    })
                    .collect(),
            })
            .collect(),
        module: manifest::Module::default(),
        toolchain: f.toolchain.clone(),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        builder: Some(format!("noreboot-build {}", env!("CARGO_PKG_VERSION"))),
        not_carried: f
            .targets
            .iter()
            .flat_map(|t| &t.not_carried)
            .map(|n| manifest::NotCarried {
                object: n.object.clone(),
                subject: n.subject.clone(),
                rule: n.rule.clone(),
                reason: n.reason.clone(),
            })
            .collect(),
    };
    let key = SecretKey::read(&o.key)?;
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let comment = format!(
        "timestamp:{timestamp}\tfile:manifest.json\tnoreboot:{} level {} for {}",
        m.name, o.level, m.kernel.release
    );
    let b = Bundle::create(m, &module, &key, &comment)
        .with_context(|| format!("bundling {}", o.from.display()))?;
    let out = o.out.clone().unwrap_or_else(|| {
        o.from
            .join(format!("{}-{}.nrb", b.manifest().name, o.level))
    });
    b.write_to(&out)?;
    Ok((out, b))
}

/// Hosts take a loaded live patch for this level only when its identity
/// notes are this module's (`kernel::module_id`), so a module must carry
/// one, and a marker must name this patch and kernel. A module from a
/// factory that wrote no marker yet is still identified by its GNU build-id.
fn check_identity(
    ko_path: &Path,
    module: &[u8],
    name: &str,
    kernel_build_id: &str,
) -> anyhow::Result<()> {
    let notes = ModuleNotes::from_module(module).with_context(|| ko_path.display().to_string())?;
    match notes.marker() {
        Some(Ok(m)) if m.patch == name && m.kernel == kernel_build_id => Ok(()),
        Some(Ok(m)) => bail!(
            "{}: the module's marker ({m}) is not patch {name} for kernel build-id {kernel_build_id}",
            ko_path.display()
        ),
        Some(Err(e)) => bail!("{}: {e}", ko_path.display()),
        None if notes.build_id().is_some() => {
            eprintln!(
                "noreboot-build: warning: {} carries no noreboot marker (an older factory built it); hosts identify it by its GNU build-id alone",
                ko_path.display()
            );
            Ok(())
        }
        None => bail!(
            "{}: the module carries neither a noreboot marker nor a GNU build-id, so hosts could not tell it from another module named {name}",
            ko_path.display()
        ),
    }
}

/// The factory's CVE ids, each described by its `--cve-description` or
/// else by the patch description.
fn cves(f: &FactoryManifest, given: &[(String, String)]) -> anyhow::Result<Vec<Cve>> {
    let mut by_id: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, text) in given {
        if !f.cves.contains(id) {
            return Err(Usage(format!(
                "--cve-description {id}: the patch fixes {}",
                if f.cves.is_empty() {
                    "no CVE".to_string()
                } else {
                    f.cves.join(", ")
                }
            ))
            .into());
        }
        if by_id.insert(id, text).is_some() {
            return Err(Usage(format!("--cve-description {id} given twice")).into());
        }
    }
    f.cves
        .iter()
        .map(|id| {
            let description = by_id.get(id.as_str()).copied().unwrap_or(&f.description);
            if description.len() > manifest::MAX_CVE_DESCRIPTION {
                return Err(Usage(format!(
                    "{id}: the patch description is {} bytes, more than a CVE description may hold ({}): give --cve-description {id}=TEXT",
                    description.len(),
                    manifest::MAX_CVE_DESCRIPTION
                ))
                .into());
            }
            Ok(Cve {
                id: id.clone(),
                description: description.to_string(),
            })
        })
        .collect()
}

/// Parses `CVE=TEXT`.
pub fn parse_cve_description(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, text)) if bundle::manifest::is_cve_id(id) => {
            Ok((id.to_string(), text.to_string()))
        }
        _ => Err(format!("{s:?} is not CVE-YYYY-NNNN=TEXT")),
    }
}

/// A file's bytes, refused before reading when over `limit`.
fn read_limited(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > limit {
        bail!("{} is {len} bytes, more than {limit}", path.display());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{} grew past {limit} bytes while read", path.display());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory;

    /// The factory's own serialised manifest reads as `FactoryManifest`:
    /// catches the two drifting apart.
    #[test]
    fn bundling_reads_the_factory_manifest() {
        let m = factory::Manifest {
            name: "fix-1".into(),
            kernel_release: "6.1.0-47-cloud-amd64".into(),
            kernel_build_id: "ab".repeat(20),
            kernel_version: "6.1.170-3".into(),
            targets: vec![factory::TargetReport {
                object: "vmlinux".into(),
                functions: vec![("s_start".into(), 2)],
                new_functions: vec!["helper".into()],
                objects: vec!["kernel/kallsyms.o".into()],
                matched: Vec::new(),
                notes: vec!["note".into()],
                warnings: Vec::new(),
                not_carried: vec![factory::NotCarried {
                    object: "kernel/kallsyms.o".into(),
                    subject: "kallsyms_init".into(),
                    rule: "init-code".into(),
                    reason: "ran at boot".into(),
                }],
            }],
            cves: vec!["CVE-2024-1086".into()],
            description: "d".into(),
            patches: vec![("fix.patch".into(), "00".repeat(32))],
            module: ("fix_1.ko".into(), "11".repeat(32)),
            signed: false,
            toolchain: [("compiler".to_string(), "gcc".to_string())].into(),
            built_at: "2025-01-01T00:00:00Z".into(),
            phases: vec![("diff".into(), 1.5)],
            verify: Some(crate::verify::VerifyReport::default()),
        };
        let json = serde_json::to_vec_pretty(&m).unwrap();
        let f: FactoryManifest = serde_json::from_slice(&json).unwrap();
        assert_eq!(f.targets[0].functions, [("s_start".to_string(), 2)]);
        assert_eq!(f.module.0, "fix_1.ko");
        assert!(f.verify.unwrap().problems.is_empty());
    }

    #[test]
    fn bundling_cve_description_argument() {
        assert_eq!(
            parse_cve_description("CVE-2024-1234=a=b").unwrap(),
            ("CVE-2024-1234".to_string(), "a=b".to_string())
        );
        assert!(parse_cve_description("=x").is_err());
        assert!(parse_cve_description("CVE-2024-1234").is_err());
        // The bundle's own rule, not a looser one of the command line's.
        assert!(parse_cve_description("CVE-2024-1=x").is_err());
        assert!(parse_cve_description("CVE-2024-12345678901234567890=x").is_err());
    }
}
