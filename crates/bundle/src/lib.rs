//! The patch bundle file (`.nrb`): one livepatch module for one exact
//! kernel build at one patch level, with a manifest describing it and a
//! minisign signature of the manifest. The manifest pins the module by
//! sha256, so the one signature covers everything. A bundle is a plain
//! ustar archive that standard tools can check:
//!
//! ```text
//! tar -xf foo.nrb      # manifest.json, manifest.json.minisig, module.ko
//! minisign -Vm manifest.json -p key.pub
//! sha256sum module.ko  # equals the manifest's module.sha256
//! ```
//!
//! Reading is strict and bounded ([`MAX_BUNDLE`] and per-member limits),
//! and [`open`] hands out nothing until the signature, the manifest and the
//! module hash have all been checked:
//!
//! ```
//! use bundle::{keys::{SecretKey, TrustedKeys}, manifest::*};
//! let key = SecretKey::generate()?;
//! let manifest = Manifest {
//!     format: FORMAT,
//!     name: "fix_cve_2024_1086".into(),
//!     level: 1,
//!     kernel: Kernel {
//!         release: "6.1.0-47-cloud-amd64".into(),
//!         build_id: "0123456789abcdef0123456789abcdef01234567".into(),
//!         version: Some("6.1.170-3".into()),
//!     },
//!     effective_version: None,
//!     cves: vec![Cve { id: "CVE-2024-1086".into(), description: "nf_tables use-after-free".into() }],
//!     description: "nf_tables: reject verdicts that drop into a chain".into(),
//!     targets: vec![Target {
//!         object: "nf_tables".into(),
//!         functions: vec![Function { name: "nft_verdict_init".into(), sympos: 0 }],
//!     }],
//!     module: Module::default(), // filled in by `create`
//!     toolchain: Default::default(),
//!     created: "2025-01-31T12:00:00Z".into(),
//!     builder: None,
//!     not_carried: Vec::new(),
//! };
//! let b = bundle::Bundle::create(manifest, b"\x7fELF...", &key, "level 1")?;
//! let trusted = TrustedKeys::from_keys([key.public_key()])?;
//! let opened = bundle::open(b.bytes(), &trusted)?;
//! assert_eq!(opened.module, b"\x7fELF...");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod container;
pub mod keys;
pub mod manifest;
pub mod signature;

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use keys::{KeyError, KeyId, PublicKey, SecretKey, TrustedKeys};
pub use manifest::{Manifest, ManifestError};
use signature::Signature;

/// Largest bundle file accepted.
pub const MAX_BUNDLE: u64 = 64 << 20;
/// Largest `manifest.json`.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// Largest `manifest.json.minisig`.
pub const MAX_SIGNATURE: u64 = 4 << 10;
/// Largest `module.ko`.
pub const MAX_MODULE: u64 = 60 << 20;

/// Why a bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file or one of its members is over its limit.
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// `bundle` or the member's name.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The archive is not a bundle's exact shape.
    #[error("not a valid bundle: at byte {offset}: {reason}")]
    Malformed {
        /// Where the problem is.
        offset: u64,
        /// What it is.
        reason: String,
    },
    /// The file ends early.
    #[error("bundle truncated: the file ends at byte {len}, inside {inside} (which needs {needed} bytes)")]
    Truncated {
        /// The file's length.
        len: u64,
        /// What the end cuts into.
        inside: String,
        /// The length that part needs.
        needed: u64,
    },
    /// There is no signature.
    #[error("bundle is unsigned: {0}")]
    Unsigned(String),
    /// The signature member is not a minisign signature this crate accepts.
    #[error("manifest.json.minisig: {0}")]
    MalformedSignature(String),
    /// The signing key is not among the trusted keys.
    #[error("bundle signed by key {key_id}, which is not trusted")]
    UntrustedKey {
        /// The key that signed.
        key_id: KeyId,
    },
    /// The signature does not verify with the trusted key it names.
    #[error("bad signature by key {key_id}: {reason}")]
    BadSignature {
        /// The key named by the signature.
        key_id: KeyId,
        /// What does not verify.
        reason: String,
    },
    /// A trusted comment that cannot be signed.
    #[error("trusted comment {comment:?}: {reason}")]
    TrustedComment {
        /// The comment.
        comment: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The keys to check the signature against could not be had.
    #[error("signature not checked: {0}")]
    NoTrustedKeys(String),
    /// The manifest is not valid.
    #[error("manifest.json: {0}")]
    ManifestInvalid(#[from] ManifestError),
    /// `module.ko` does not have the manifest's size.
    #[error("module.ko is {actual} bytes, but the manifest says {expected}")]
    ModuleSizeMismatch {
        /// From the manifest.
        expected: u64,
        /// Of the member.
        actual: u64,
    },
    /// `module.ko` does not have the manifest's sha256.
    #[error("module.ko has sha256 {actual}, but the manifest says {expected}")]
    ModuleHashMismatch {
        /// From the manifest.
        expected: String,
        /// Of the member.
        actual: String,
    },
    /// Reading or writing a bundle file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A newly made, signed bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    bytes: Vec<u8>,
    manifest: Manifest,
    key_id: KeyId,
}

impl Bundle {
    /// Makes a bundle: fills in the manifest's `module` (sha256 and size of
    /// `module`), validates the manifest, signs it with `key` and
    /// `trusted_comment` (one line; `minisign -V` shows it), and checks the
    /// result opens with the key's public half.
    pub fn create(
        mut manifest: Manifest,
        module: &[u8],
        key: &SecretKey,
        trusted_comment: &str,
    ) -> Result<Self, BundleError> {
        too_large("module.ko", module.len(), MAX_MODULE)?;
        manifest.module = manifest::Module {
            sha256: hex::encode(Sha256::digest(module)),
            size: module.len() as u64,
        };
        manifest.validate()?;
        let json = manifest.to_json();
        too_large(container::MANIFEST, json.len(), MAX_MANIFEST)?;
        let sig = signature::sign(key, &json, trusted_comment)?.to_minisign_string();
        too_large(container::SIGNATURE, sig.len(), MAX_SIGNATURE)?;
        let bytes = container::write(&json, sig.as_bytes(), module);
        too_large("bundle", bytes.len(), MAX_BUNDLE)?;
        open(&bytes, &TrustedKeys::single(key.public_key()))?;
        Ok(Self {
            bytes,
            manifest,
            key_id: key.key_id(),
        })
    }

    /// The bundle file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bundle file's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The manifest as signed.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signing key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Writes the bundle to `path` (mode 0644) atomically: a temporary file
    /// in the same directory, synced, then renamed over `path`, so readers
    /// never see half a bundle.
    pub fn write_to(&self, path: &Path) -> Result<(), BundleError> {
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".nrb-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(&self.bytes).map_err(io)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

fn too_large(what: &str, size: usize, limit: u64) -> Result<(), BundleError> {
    if size as u64 > limit {
        return Err(BundleError::TooLarge {
            what: what.to_string(),
            size: size as u64,
            limit,
        });
    }
    Ok(())
}

/// A bundle whose signature, manifest and module have all been checked.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The signed, valid manifest.
    pub manifest: Manifest,
    /// The module, matching the manifest's size and sha256.
    pub module: Vec<u8>,
    /// The trusted key that signed it.
    pub signer: KeyId,
    /// The signed trusted comment.
    pub trusted_comment: String,
}

/// Opens a bundle, trusting nothing until it is checked: the archive's
/// exact shape, then the signature with the trusted key it names (before
/// the manifest is even parsed), then the manifest, then the module's size
/// and sha256 against it.
pub fn open(bytes: &[u8], keys: &TrustedKeys) -> Result<VerifiedBundle, BundleError> {
    let m = container::read(bytes)?;
    let sig = Signature::parse(m.signature.ok_or_else(no_signature)?)?;
    sig.verify(m.manifest, keys)?;
    let manifest = Manifest::from_json(m.manifest)?;
    check_module_size(&manifest, m.module)?;
    check_module_hash(&manifest, m.module)?;
    Ok(VerifiedBundle {
        manifest,
        module: m.module.to_vec(),
        signer: sig.key_id(),
        trusted_comment: sig.trusted_comment().to_string(),
    })
}

fn no_signature() -> BundleError {
    BundleError::Unsigned(format!("it has no `{}` member", container::SIGNATURE))
}

fn check_module_size(manifest: &Manifest, module: &[u8]) -> Result<(), BundleError> {
    if module.len() as u64 != manifest.module.size {
        return Err(BundleError::ModuleSizeMismatch {
            expected: manifest.module.size,
            actual: module.len() as u64,
        });
    }
    Ok(())
}

fn check_module_hash(manifest: &Manifest, module: &[u8]) -> Result<(), BundleError> {
    let actual = hex::encode(Sha256::digest(module));
    if actual != manifest.module.sha256 {
        return Err(BundleError::ModuleHashMismatch {
            expected: manifest.module.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Reads a bundle file, refusing one over [`MAX_BUNDLE`] before reading it.
pub fn read_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    too_large("bundle", len.try_into().unwrap_or(usize::MAX), MAX_BUNDLE)?;
    let mut bytes = Vec::with_capacity(len as usize);
    // The file may grow between stat and read.
    file.take(MAX_BUNDLE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    too_large("bundle", bytes.len(), MAX_BUNDLE)?;
    Ok(bytes)
}

/// What `inspect` found: each check's outcome, and what could be read
/// (nothing here is trusted unless the signature check passed).
#[derive(Debug)]
pub struct Inspection {
    /// The file's size.
    pub size: u64,
    /// Members and their sizes, when the archive could be read.
    pub members: Vec<(String, u64)>,
    /// The key the signature names.
    pub signer: Option<KeyId>,
    /// The signature's trusted comment.
    pub trusted_comment: Option<String>,
    /// The manifest as parsed, even if it fails validation.
    pub manifest: Option<Manifest>,
    /// The checks, in the order `open` makes them.
    pub checks: Vec<Check>,
}

/// One check of [`inspect`].
#[derive(Debug)]
pub struct Check {
    /// What was checked: `container`, `signature`, `manifest`,
    /// `module size`, `module sha256`.
    pub what: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

/// How a check went.
#[derive(Debug)]
pub enum Outcome {
    /// Passed, with a detail.
    Pass(String),
    /// Failed.
    Fail(BundleError),
    /// Not made, and why.
    Skipped(String),
}

impl Inspection {
    /// Whether no check failed (a skipped signature check, for lack of
    /// keys, is not a failure).
    pub fn passed(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Fail(_)))
    }

    fn push(&mut self, what: &'static str, outcome: Outcome) {
        self.checks.push(Check { what, outcome });
    }

    /// Marks the signature check failed because the keys it needed could
    /// not be loaded (`why`): for a caller that has a key directory, a
    /// signature it could not check is no pass. A signature that already
    /// failed keeps its own reason.
    pub fn fail_signature(&mut self, why: String) {
        for c in &mut self.checks {
            if c.what == "signature" && !matches!(c.outcome, Outcome::Fail(_)) {
                c.outcome = Outcome::Fail(BundleError::NoTrustedKeys(why.clone()));
            }
        }
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} bytes", self.size)?;
        for (name, size) in &self.members {
            writeln!(f, "  {name}: {size} bytes")?;
        }
        if let Some(m) = &self.manifest {
            writeln!(
                f,
                "patch {} level {} for {} (build-id {})",
                m.name, m.level, m.kernel.release, m.kernel.build_id
            )?;
        }
        if let Some(c) = &self.trusted_comment {
            writeln!(f, "trusted comment: {c}")?;
        }
        for c in &self.checks {
            match &c.outcome {
                Outcome::Pass(d) => writeln!(f, "ok      {}: {d}", c.what)?,
                Outcome::Fail(e) => writeln!(f, "FAILED  {}: {e}", c.what)?,
                Outcome::Skipped(why) => writeln!(f, "skipped {}: {why}", c.what)?,
            }
        }
        Ok(())
    }
}

/// Reports on a bundle without trusting it: every check `open` makes,
/// carrying on past failures where it can. The signature is checked
/// against `keys` when given; otherwise only the signing key's id is
/// reported.
pub fn inspect(bytes: &[u8], keys: Option<&TrustedKeys>) -> Inspection {
    let mut r = Inspection {
        size: bytes.len() as u64,
        members: Vec::new(),
        signer: None,
        trusted_comment: None,
        manifest: None,
        checks: Vec::new(),
    };
    let m = match container::read(bytes) {
        Ok(m) => m,
        Err(e) => {
            r.push("container", Outcome::Fail(e));
            for what in ["signature", "manifest", "module size", "module sha256"] {
                r.push(what, Outcome::Skipped("the archive cannot be read".into()));
            }
            return r;
        }
    };
    r.members
        .push((container::MANIFEST.into(), m.manifest.len() as u64));
    if let Some(s) = m.signature {
        r.members
            .push((container::SIGNATURE.into(), s.len() as u64));
    }
    r.members
        .push((container::MODULE.into(), m.module.len() as u64));
    r.push("container", Outcome::Pass("ustar, members in order".into()));

    let sig = m
        .signature
        .ok_or_else(no_signature)
        .and_then(Signature::parse);
    let outcome = match sig {
        Err(e) => Outcome::Fail(e),
        Ok(sig) => {
            r.signer = Some(sig.key_id());
            r.trusted_comment = Some(sig.trusted_comment().to_string());
            match keys {
                None => Outcome::Skipped(format!(
                    "signed by key {}; no trusted keys given",
                    sig.key_id()
                )),
                Some(keys) => match sig.verify(m.manifest, keys) {
                    Ok(()) => Outcome::Pass(format!("by trusted key {}", sig.key_id())),
                    Err(e) => Outcome::Fail(e),
                },
            }
        }
    };
    r.push("signature", outcome);

    r.manifest = serde_json::from_slice(m.manifest).ok();
    match Manifest::from_json(m.manifest) {
        Ok(_) => r.push("manifest", Outcome::Pass("valid".into())),
        Err(e) => r.push("manifest", Outcome::Fail(e.into())),
    }
    match r.manifest.clone() {
        None => {
            for what in ["module size", "module sha256"] {
                r.push(what, Outcome::Skipped("no manifest to compare with".into()));
            }
        }
        Some(manifest) => {
            r.push(
                "module size",
                match check_module_size(&manifest, m.module) {
                    Ok(()) => Outcome::Pass(format!("{} bytes", m.module.len())),
                    Err(e) => Outcome::Fail(e),
                },
            );
            r.push(
                "module sha256",
                match check_module_hash(&manifest, m.module) {
                    Ok(()) => Outcome::Pass(manifest.module.sha256.clone()),
                    Err(e) => Outcome::Fail(e),
                },
            );
        }
    }
    r
}
