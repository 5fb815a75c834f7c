//! A kernel workspace: one release's packages downloaded, checked and
//! unpacked under the cache, with typed paths to what later stages need.
//! Fetching is idempotent, serialized by a lock and atomic (a partial
//! directory is renamed into place only when complete), so an interrupted
//! or concurrent fetch never leaves a workspace that looks usable but isn't.
//! A workspace value holds the workspace in use (a shared lock) and opening
//! one records the use, so the cache's eviction ([`crate::evict`]) takes
//! least recently used ones and never one a process holds; a fetch first
//! makes room under the cache's cap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::cache::{ensure_space, Cache};
use crate::evict::{self, Eviction, InUse};
use crate::image::{self, ImageIdentity};
use crate::plan::{plan, Role};
use crate::release::Release;
use crate::{Error, Result};

const MANIFEST: &str = "workspace.toml";
const FORMAT: u32 = 1;

/// One package recorded in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestPackage {
    /// Role in the workspace.
    pub role: Role,
    /// Package name.
    pub package: String,
    /// Exact version downloaded.
    pub version: String,
    /// Size of the .deb.
    pub size: u64,
}

/// `workspace.toml`: what was fetched and what the image says it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of the workspace directory.
    pub format: u32,
    /// The release.
    pub release: String,
    /// Debian version of image, headers and source.
    pub version: String,
    /// The packages unpacked.
    pub packages: Vec<ManifestPackage>,
    /// Identity read from the image.
    pub identity: ImageIdentity,
}

/// A fetched kernel workspace, in use (safe from eviction) while this
/// value or a clone of it lives.
#[derive(Debug, Clone)]
pub struct Workspace {
    release: Release,
    dir: PathBuf,
    manifest: Manifest,
    /// The cache it lives in (build roots are there too).
    cache: Cache,
    in_use: InUse,
}

/// A workspace from [`Workspace::fetch_reporting`], with what was evicted
/// to make room for it.
#[derive(Debug)]
pub struct Fetched {
    /// The workspace.
    pub workspace: Workspace,
    /// The eviction before the download: `None` when the workspace was
    /// already cached or the cache has no cap.
    pub eviction: Option<Eviction>,
}

impl Workspace {
    /// Opens the workspace of `release` if the cache holds a complete one,
    /// and records the use.
    pub fn open(cache: &Cache, release: &Release) -> Result<Option<Workspace>> {
        let dir = cache.kernels_dir().join(release.as_str());
        let path = dir.join(MANIFEST);
        // Looked at before locking, so that asking after releases never
        // fetched leaves no lock files behind.
        if !path.exists() {
            return Ok(None);
        }
        let in_use = InUse::acquire(cache, release.as_str())?;
        // Read under the lock: an eviction that came first has moved the
        // directory away by now.
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let manifest: Manifest = toml::from_str(&text).map_err(|e| Error::CorruptWorkspace {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if manifest.format != FORMAT || manifest.release != release.as_str() {
            return Err(Error::CorruptWorkspace {
                path,
                reason: format!(
                    "manifest is format {} for {}, expected format {FORMAT} for {release}",
                    manifest.format, manifest.release
                ),
            });
        }
        evict::touch(&dir)?;
        Ok(Some(Workspace {
            release: release.clone(),
            dir,
            manifest,
            cache: cache.clone(),
            in_use,
        }))
    }

    /// Returns the cached workspace of `release`, fetching it first if
    /// needed (after evicting least recently used workspaces when the
    /// cache's cap requires it).
    pub fn fetch(cache: &Cache, archive: &dyn Archive, release: &Release) -> Result<Workspace> {
        Self::fetch_reporting(cache, archive, release).map(|f| f.workspace)
    }

    /// [`Workspace::fetch`], also telling what was evicted to make room,
    /// for a caller to print.
    pub fn fetch_reporting(
        cache: &Cache,
        archive: &dyn Archive,
        release: &Release,
    ) -> Result<Fetched> {
        let cached = |workspace| Fetched {
            workspace,
            eviction: None,
        };
        if let Some(ws) = Self::open(cache, release)? {
            return Ok(cached(ws));
        }
        let _lock = cache.lock(release.as_str())?;
        // Another process may have finished while we waited for the lock.
        if let Some(ws) = Self::open(cache, release)? {
            return Ok(cached(ws));
        }
        let started = Instant::now();
        let plan = plan(archive, release)?;
        let kernels = cache.kernels_dir();
        std::fs::create_dir_all(&kernels).map_err(|e| Error::io("create", &kernels, e))?;
        // An interrupted fetch's leftover goes before its space is counted.
        let partial = kernels.join(format!(".{release}.partial"));
        remove_dir_if_exists(&partial)?;
        // Held from before the rename into place: an eviction running in
        // another process cannot take the new workspace before it is
        // opened below.
        let _in_use = InUse::acquire(cache, release.as_str())?;
        // Room for the .debs and their unpacked contents, plus slack for
        // the filesystem's own overhead.
        let needed = plan.space_needed() + plan.space_needed() / 10;
        let eviction = evict::make_room(cache, release, needed)?;
        ensure_space(&kernels, needed)?;

        let debs = partial.join("debs");
        let root = partial.join("root");
        for d in [&debs, &root] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let mut packages = Vec::new();
        for p in &plan.packages {
            tracing::info!(package = %p.info.package, version = %p.info.version, size = p.info.size, "downloading");
            let deb = archive.download(&p.info.package, &p.info.version, &debs)?;
            unpack_deb(&deb, &root)?;
            std::fs::remove_file(&deb).map_err(|e| Error::io("remove", &deb, e))?;
            packages.push(ManifestPackage {
                role: p.role,
                package: p.info.package.clone(),
                version: p.info.version.to_string(),
                size: p.info.size,
            });
        }
        let _ = std::fs::remove_dir(&debs);
        normalize_layout(&root, release)?;
        relocate_headers(&root, release)?;

        let layout = Layout {
            root: root.clone(),
            release: release.clone(),
        };
        for (what, path) in [
            ("kernel image", layout.vmlinuz()),
            ("kernel config", layout.config()),
            ("headers build directory", layout.headers_dir()),
            ("Module.symvers", layout.module_symvers()),
            ("source tarball", layout.source_tarball()),
            ("modules directory", layout.modules_dir()),
        ] {
            if !path.exists() {
                return Err(Error::CorruptWorkspace {
                    path: path.clone(),
                    reason: format!("the packages do not contain the {what}"),
                });
            }
        }
        let identity = image::read_identity(&layout.vmlinuz())?;
        check_identity(
            release,
            &plan.version.to_string(),
            &identity,
            &layout.config(),
        )?;

        let manifest = Manifest {
            format: FORMAT,
            release: release.to_string(),
            version: plan.version.to_string(),
            packages,
            identity,
        };
        let text = toml::to_string_pretty(&manifest).map_err(|e| Error::CorruptWorkspace {
            path: partial.join(MANIFEST),
            reason: e.to_string(),
        })?;
        let mpath = partial.join(MANIFEST);
        std::fs::write(&mpath, text).map_err(|e| Error::io("write", &mpath, e))?;
        evict::touch(&partial)?;
        evict::record_size(&partial, crate::size::disk_usage(&partial)?)?;
        let dir = kernels.join(release.as_str());
        remove_dir_if_exists(&dir)?;
        std::fs::rename(&partial, &dir).map_err(|e| Error::io("rename into place", &partial, e))?;
        tracing::info!(%release, seconds = started.elapsed().as_secs_f64(), "kernel workspace ready");
        let workspace = Self::open(cache, release)?.ok_or_else(|| Error::CorruptWorkspace {
            path: dir,
            reason: "manifest vanished right after it was written".into(),
        })?;
        Ok(Fetched {
            workspace,
            eviction,
        })
    }

    /// The hold that keeps this workspace from eviction, for values that
    /// outlive it (its source trees).
    pub fn in_use(&self) -> &InUse {
        &self.in_use
    }

    /// Notes that the workspace grew: its recorded size is measured anew
    /// by the next status or eviction.
    pub(crate) fn grew(&self) -> Result<()> {
        evict::forget_size(&self.dir)
    }

    fn layout(&self) -> Layout {
        Layout {
            root: self.dir.join("root"),
            release: self.release.clone(),
        }
    }

    /// The release.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// Debian version of the packages.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// Identity read from the image at fetch time.
    pub fn identity(&self) -> &ImageIdentity {
        &self.manifest.identity
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The cache the workspace is in.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The workspace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unpacked package contents (`boot/`, `lib/modules/`, `usr/src/`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The bootable image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.layout().vmlinuz()
    }

    /// The kernel's `.config`.
    pub fn config(&self) -> PathBuf {
        self.layout().config()
    }

    /// kbuild's build directory for external modules (`make -C`).
    pub fn headers_dir(&self) -> PathBuf {
        self.layout().headers_dir()
    }

    /// Module.symvers: the symbols the kernel exports to modules.
    pub fn module_symvers(&self) -> PathBuf {
        self.layout().module_symvers()
    }

    /// The source tarball (`linux-source-<series>.tar.xz`).
    pub fn source_tarball(&self) -> PathBuf {
        self.layout().source_tarball()
    }

    /// `lib/modules/<release>` of the image package.
    pub fn modules_dir(&self) -> PathBuf {
        self.layout().modules_dir()
    }

    /// Directory for the debug symbols (see [`crate::symbols`]).
    pub fn symbols_dir(&self) -> PathBuf {
        self.dir.join("symbols")
    }

    /// A value of the kernel config, without quotes (`None` if unset).
    pub fn config_value(&self, key: &str) -> Result<Option<String>> {
        config_value(&self.config(), key)
    }
}

/// Paths inside an unpacked root.
struct Layout {
    root: PathBuf,
    release: Release,
}

impl Layout {
    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    fn config(&self) -> PathBuf {
        self.root.join(format!("boot/config-{}", self.release))
    }
    fn headers_dir(&self) -> PathBuf {
        self.root
            .join(format!("usr/src/linux-headers-{}", self.release))
    }
    fn module_symvers(&self) -> PathBuf {
        self.headers_dir().join("Module.symvers")
    }
    fn source_tarball(&self) -> PathBuf {
        self.root.join(format!(
            "usr/src/linux-source-{}.tar.xz",
            self.release.series()
        ))
    }
    fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", dir, e)),
    }
}

/// Unpacks a .deb with the distribution's `dpkg-deb`, without running any
/// maintainer script and without touching the host's package database.
pub fn unpack_deb(deb: &Path, root: &Path) -> Result<()> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(deb).arg(root);
    let out = cmd.output().map_err(|e| Error::spawn(&cmd, "dpkg", e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("No space left on device") {
            return Err(Error::DiskFull {
                path: root.to_path_buf(),
                needed: 0,
                available: crate::cache::free_space(root).unwrap_or(0),
            });
        }
        return Err(Error::Command {
            command: format!("dpkg-deb -x {} {}", deb.display(), root.display()),
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(())
}

/// Gives every workspace Debian 12's layout: Debian 13 ships modules under
/// `usr/lib/modules/<release>/` (merged /usr), and the split images of
/// trixie-backports also keep `vmlinuz`, `config` and `System.map` there
/// instead of in `boot/`. The modules directory is moved to
/// `lib/modules/<release>/` (merging with what is already there) and the
/// boot files are hard-linked into `boot/` under their usual names.
fn normalize_layout(root: &Path, release: &Release) -> Result<()> {
    let usr = root.join(format!("usr/lib/modules/{release}"));
    let lib = root.join(format!("lib/modules/{release}"));
    if usr.is_dir() {
        if !lib.exists() {
            let parent = root.join("lib/modules");
            std::fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
            std::fs::rename(&usr, &lib).map_err(|e| Error::io("move", &usr, e))?;
        } else {
            let entries = std::fs::read_dir(&usr).map_err(|e| Error::io("list", &usr, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list", &usr, e))?;
                let to = lib.join(entry.file_name());
                if to.symlink_metadata().is_err() {
                    std::fs::rename(entry.path(), &to)
                        .map_err(|e| Error::io("move", entry.path(), e))?;
                }
            }
        }
    }
    let boot = root.join("boot");
    for name in ["vmlinuz", "config", "System.map"] {
        let from = lib.join(name);
        let to = boot.join(format!("{name}-{release}"));
        if from.is_file() && to.symlink_metadata().is_err() {
            std::fs::create_dir_all(&boot).map_err(|e| Error::io("create", &boot, e))?;
            std::fs::hard_link(&from, &to).map_err(|e| Error::io("link", &to, e))?;
        }
    }
    Ok(())
}

/// Debian's flavour headers include the common headers by absolute path
/// (`include /usr/src/linux-headers-<abi>-common/Makefile`); point it at
/// the unpacked copy instead, relative so the workspace can move.
fn relocate_headers(root: &Path, release: &Release) -> Result<()> {
    let makefile = root.join(format!("usr/src/linux-headers-{release}/Makefile"));
    let text = std::fs::read_to_string(&makefile).map_err(|e| Error::io("read", &makefile, e))?;
    let common = format!("/usr/src/linux-headers-{}-common/", release.abi());
    let relative = format!("../linux-headers-{}-common/", release.abi());
    if !text.contains(&common) {
        return Err(Error::CorruptWorkspace {
            path: makefile,
            reason: format!("expected it to include {common}Makefile"),
        });
    }
    let fixed = text.replace(&common, &relative);
    std::fs::write(&makefile, fixed).map_err(|e| Error::io("write", &makefile, e))
}

/// Reads `key` from a kernel config file.
pub fn config_value(config: &Path, key: &str) -> Result<Option<String>> {
    let text = std::fs::read_to_string(config).map_err(|e| Error::io("read", config, e))?;
    let prefix = format!("{key}=");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim_matches('"').to_string()))
}

/// The image, the package version and the config must tell one story.
fn check_identity(
    release: &Release,
    version: &str,
    id: &ImageIdentity,
    config: &Path,
) -> Result<()> {
    let mismatch = |what: &str, a: &str, b: &str| Error::Inconsistent {
        release: release.to_string(),
        what: what.to_string(),
        expected: a.to_string(),
        found: b.to_string(),
    };
    if id.release != release.as_str() {
        return Err(mismatch(
            "release name and image header",
            release.as_str(),
            &id.release,
        ));
    }
    if let Some(v) = &id.debian_version {
        if v != version {
            return Err(mismatch("package version and image banner", version, v));
        }
    }
    if let Some(cc) = config_value(config, "CONFIG_CC_VERSION_TEXT")? {
        if cc != id.compiler {
            return Err(mismatch(
                "config compiler and image banner compiler",
                &cc,
                &id.compiler,
            ));
        }
    }
    Ok(())
}
