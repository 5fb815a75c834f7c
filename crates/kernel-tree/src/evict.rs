//! Bounds on the kernel cache: which workspaces are in use, when each was
//! last used and what each takes on disk, and eviction of whole workspaces,
//! least recently used first, until `kernels/` fits under the cache's cap
//! (`NOREBOOT_CACHE_CAP`, `--cache-cap`). A workspace takes about 2.3 GB
//! once its source is prepared and its symbols extracted, and grows as
//! objects are compiled in it (6 GB seen), so a release run across every
//! Debian build would otherwise fill the disk.
//!
//! - **In use**: a [`Workspace`](crate::Workspace) value (and every source
//!   tree made from it) holds a shared `flock` on
//!   `<cache>/locks/<release>.use.lock` for its lifetime. Eviction takes
//!   that lock exclusively and without waiting, so a workspace some
//!   process holds is skipped, never pulled from under it; an opener that
//!   comes while a workspace is being evicted waits the moment the rename
//!   takes, then finds it gone and fetches it again.
//! - **Last use**: opening a workspace sets the modification time of its
//!   `.last-used` file (one `utimensat`); eviction order is by that time,
//!   oldest first. Workspaces from before this file existed count from
//!   their manifest's time.
//! - **Size**: blocks allocated in the directory ([`disk_usage`]), kept in
//!   its `.disk-usage` file: written when a fetch completes, removed when
//!   the workspace grows (source tree prepared, symbols extracted, build
//!   index made, objects compiled in the tree), measured again when
//!   missing. Scratch copies, which live only while a build runs, are not
//!   tracked: the cap is a target, not an accounting.
//! - **Removal** renames the workspace aside to `kernels/.evicting-*`
//!   first, so a crash midway leaves no directory that looks like a
//!   workspace; the next eviction deletes such leftovers, and partial
//!   fetches (`.<release>.partial`) whose fetch is no longer running.
//!
//! Room is made before each fetch ([`make_room`]) and before the two steps
//! that grow a workspace most: preparing its source tree (1.7 GB for
//! 6.12) and extracting its symbols. Evictions are serialized by the
//! cache's `evict` lock. When everything that could go is gone and
//! `kernels/` is still over the cap (the rest is in use), the work goes
//! ahead with a warning: a cap must not fail a build.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::cache::Cache;
use crate::release::Release;
use crate::size::{disk_usage, format_size};
use crate::{Error, Result};

/// Touched on each use of a workspace.
pub const STAMP: &str = ".last-used";
/// The workspace's measured disk usage in bytes (decimal).
pub const SIZE_FILE: &str = ".disk-usage";
/// Prefix of a workspace being (or left half) removed.
const EVICTING: &str = ".evicting-";
/// Suffix of a fetch's directory before it is renamed into place.
const PARTIAL: &str = ".partial";
/// Serializes evictions across processes.
const EVICT_LOCK: &str = "evict";

/// The lock a workspace's users share and eviction takes alone.
fn use_lock(name: &str) -> String {
    format!("{name}.use")
}

/// A shared hold on one workspace: while any clone lives, no eviction
/// removes it.
#[derive(Debug, Clone)]
pub struct InUse {
    _lock: Arc<File>,
}

impl InUse {
    /// Takes the shared lock of the workspace of `release`, waiting while
    /// an eviction holds it.
    pub fn acquire(cache: &Cache, release: &str) -> Result<InUse> {
        Ok(InUse {
            _lock: Arc::new(cache.lock_shared(&use_lock(release))?),
        })
    }
}

/// Records a use of the workspace in `dir` now.
pub(crate) fn touch(dir: &Path) -> Result<()> {
    let path = dir.join(STAMP);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    file.set_modified(SystemTime::now())
        .map_err(|e| Error::io("touch", &path, e))
}

/// When the workspace in `dir` was last used: its stamp, else its
/// manifest's time (a workspace fetched before stamps existed), else the
/// directory's.
pub fn last_used(dir: &Path) -> Option<SystemTime> {
    [
        dir.join(STAMP),
        dir.join("workspace.toml"),
        dir.to_path_buf(),
    ]
    .iter()
    .find_map(|p| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok())
}

/// The stamp's own time, to tell whether a use began during a measurement.
fn stamp_time(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join(STAMP))
        .and_then(|m| m.modified())
        .ok()
}

/// The size recorded in `dir`, if any and readable.
fn recorded_size(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(SIZE_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records `bytes` as the size of the workspace in `dir` (written aside
/// and renamed, so a reader never sees half a number).
pub(crate) fn record_size(dir: &Path, bytes: u64) -> Result<()> {
    let path = dir.join(SIZE_FILE);
    let tmp = dir.join(format!("{SIZE_FILE}.tmp"));
    std::fs::write(&tmp, format!("{bytes}\n")).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("write", &path, e))
}

/// Drops the recorded size of the workspace in `dir`: it has grown, and
/// the next status or eviction measures it again.
pub(crate) fn forget_size(dir: &Path) -> Result<()> {
    let path = dir.join(SIZE_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

/// What a directory entry of `kernels/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A workspace (complete or not: any visible directory).
    Workspace,
    /// A fetch's directory before the rename; the release it is for.
    Partial(String),
    /// Left by an eviction that did not finish.
    Evicting,
    /// Anything else (files, hidden directories of unknown purpose).
    Other,
}

struct Entry {
    name: String,
    path: PathBuf,
    kind: Kind,
}

/// The entries of `kernels/` (none when it does not exist yet), by name.
fn scan(kernels: &Path) -> Result<Vec<Entry>> {
    let read = match std::fs::read_dir(kernels) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", kernels, e)),
    };
    let mut entries = Vec::new();
    for e in read {
        let e = e.map_err(|e| Error::io("list", kernels, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let kind = if !is_dir {
            Kind::Other
        } else if name.starts_with(EVICTING) {
            Kind::Evicting
        } else if let Some(release) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(PARTIAL))
            .filter(|r| !r.is_empty())
        {
            Kind::Partial(release.to_string())
        } else if name.starts_with('.') {
            Kind::Other
        } else {
            Kind::Workspace
        };
        entries.push(Entry {
            name,
            path: e.path(),
            kind,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Whether some process holds the workspace `name` (a momentary probe).
fn in_use(cache: &Cache, name: &str) -> Result<bool> {
    Ok(cache.try_lock(&use_lock(name))?.is_none())
}

/// The size of the workspace `entry`: recorded, or measured (and then
/// recorded, unless a use began while it was being measured, which may
/// have grown it).
fn workspace_size(cache: &Cache, entry: &Entry, busy: bool) -> Result<u64> {
    if let Some(bytes) = recorded_size(&entry.path) {
        return Ok(bytes);
    }
    let before = stamp_time(&entry.path);
    let bytes = disk_usage(&entry.path)?;
    if !busy {
        if let Some(_alone) = cache.try_lock(&use_lock(&entry.name))? {
            if stamp_time(&entry.path) == before && entry.path.is_dir() {
                record_size(&entry.path, bytes)?;
            }
        }
    }
    Ok(bytes)
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
        None => s.serialize_none(),
    }
}

/// One workspace in [`CacheStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceUse {
    /// The release (the directory's name).
    pub release: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was last opened (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub last_used: Option<SystemTime>,
    /// Whether a process holds it now (eviction skips it).
    pub in_use: bool,
}

/// Something in `kernels/` that is not a workspace.
#[derive(Debug, Clone, Serialize)]
pub struct OtherUse {
    /// Its name in `kernels/`.
    pub name: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// What it is: `partial fetch`, `interrupted eviction` or `unknown`.
    pub what: &'static str,
}

/// What `kernels/` holds and uses, against the cap.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// The directory.
    pub kernels: PathBuf,
    /// The cap in bytes, if any.
    pub cap: Option<u64>,
    /// Bytes used by everything in `kernels/`.
    pub total: u64,
    /// Workspaces, least recently used (next to be evicted) first.
    pub workspaces: Vec<WorkspaceUse>,
    /// Everything else in `kernels/`.
    pub other: Vec<OtherUse>,
}

/// The cache's use now. Reads recorded sizes and measures missing ones;
/// removes nothing.
pub fn status(cache: &Cache) -> Result<CacheStatus> {
    let kernels = cache.kernels_dir();
    let mut workspaces = Vec::new();
    let mut other = Vec::new();
    for entry in scan(&kernels)? {
        let what = match &entry.kind {
            Kind::Workspace => {
                let busy = in_use(cache, &entry.name)?;
                workspaces.push(WorkspaceUse {
                    bytes: workspace_size(cache, &entry, busy)?,
                    last_used: last_used(&entry.path),
                    in_use: busy,
                    release: entry.name,
                });
                continue;
            }
            Kind::Partial(_) => "partial fetch",
            Kind::Evicting => "interrupted eviction",
            Kind::Other => "unknown",
        };
        other.push(OtherUse {
            bytes: disk_usage(&entry.path)?,
            name: entry.name,
            what,
        });
    }
    workspaces.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| a.release.cmp(&b.release))
    });
    let total = workspaces.iter().map(|w| w.bytes).sum::<u64>()
        + other.iter().map(|o| o.bytes).sum::<u64>();
    Ok(CacheStatus {
        kernels,
        cap: cache.cap(),
        total,
        workspaces,
        other,
    })
}

/// A workspace an eviction removed.
#[derive(Debug, Clone, Serialize)]
pub struct Evicted {
    /// The release.
    pub release: String,
    /// Bytes it used.
    pub bytes: u64,
    /// When it was last used.
    #[serde(serialize_with = "rfc3339")]
    pub last_used: Option<SystemTime>,
}

/// What an eviction did.
#[derive(Debug, Clone, Serialize)]
pub struct Eviction {
    /// Bytes `kernels/` was to fit under.
    pub target: u64,
    /// Bytes of the fetch room was made for (0 for an explicit eviction).
    pub incoming: u64,
    /// Bytes `kernels/` used before (after leftovers were removed).
    pub before: u64,
    /// Bytes `kernels/` uses now.
    pub after: u64,
    /// Workspaces removed, oldest use first.
    pub evicted: Vec<Evicted>,
    /// Workspaces that would have gone but are in use.
    pub busy: Vec<String>,
    /// Leftovers of interrupted evictions and fetches that were removed.
    pub leftovers: Vec<String>,
}

impl Eviction {
    /// Whether `kernels/` and the incoming fetch fit under the target.
    pub fn fits(&self) -> bool {
        self.after.saturating_add(self.incoming) <= self.target
    }
}

impl std::fmt::Display for Eviction {
    /// One line: what went, the use and the cap, and what kept it over.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.evicted.is_empty() {
            write!(f, "evicted nothing")?;
        } else {
            let list: Vec<String> = self
                .evicted
                .iter()
                .map(|e| format!("{} ({})", e.release, format_size(e.bytes)))
                .collect();
            write!(f, "evicted {}", list.join(", "))?;
        }
        write!(f, "; kernels/ uses {}", format_size(self.after))?;
        if self.incoming > 0 {
            write!(f, " + {} to fetch", format_size(self.incoming))?;
        }
        write!(f, " of cap {}", format_size(self.target))?;
        if !self.fits() {
            write!(f, ": still over the cap")?;
            if self.busy.is_empty() {
                write!(f, " with nothing left to evict")?;
            } else {
                write!(f, ", in use: {}", self.busy.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Makes room for fetching `release` (about `incoming` bytes) under the
/// cache's cap: evicts least recently used workspaces other than
/// `release` itself and those in use. `None` when the cache has no cap.
/// What the release engineering loop calls before fetching each kernel
/// ([`Workspace::fetch`](crate::Workspace::fetch) calls it too).
pub fn make_room(cache: &Cache, release: &Release, incoming: u64) -> Result<Option<Eviction>> {
    let Some(cap) = cache.cap() else {
        return Ok(None);
    };
    let eviction = evict(cache, cap, Some(release.as_str()), incoming)?;
    // The one line for callers of a plain fetch (the lab, tests); the
    // factory prints the report itself.
    if !eviction.fits() {
        tracing::warn!("kernel cache over its cap: {eviction}");
    } else if !eviction.evicted.is_empty() {
        tracing::info!("kernel cache: {eviction}");
    }
    Ok(Some(eviction))
}

/// Evicts until `kernels/` uses at most `target` bytes (or nothing more
/// can go): `noreboot-lab cache evict`.
pub fn evict_to(cache: &Cache, target: u64) -> Result<Eviction> {
    evict(cache, target, None, 0)
}

fn evict(cache: &Cache, target: u64, keep: Option<&str>, incoming: u64) -> Result<Eviction> {
    let _serial = cache.lock(EVICT_LOCK)?;
    let kernels = cache.kernels_dir();
    let mut used = 0u64;
    let mut leftovers = Vec::new();
    let mut candidates = Vec::new();
    for entry in scan(&kernels)? {
        match &entry.kind {
            // Evictions run one at a time and finish their removal under
            // the lock held here: any such directory is a crash's.
            Kind::Evicting => {
                remove_tree(&entry.path)?;
                leftovers.push(entry.name);
            }
            // A fetch holds its release's lock until the rename: a partial
            // directory whose lock is free is an interrupted fetch's.
            Kind::Partial(release) => match cache.try_lock(release)? {
                Some(_fetch) => {
                    remove_tree(&entry.path)?;
                    leftovers.push(entry.name);
                }
                None => used += disk_usage(&entry.path)?,
            },
            Kind::Other => used += disk_usage(&entry.path)?,
            Kind::Workspace => {
                let busy = in_use(cache, &entry.name)?;
                let bytes = workspace_size(cache, &entry, busy)?;
                used += bytes;
                candidates.push((last_used(&entry.path), entry, bytes));
            }
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let before = used;
    let mut evicted = Vec::new();
    let mut busy = Vec::new();
    for (last_used, entry, bytes) in candidates {
        if used.saturating_add(incoming) <= target {
            break;
        }
        if keep == Some(entry.name.as_str()) {
            continue;
        }
        let Some(alone) = cache.try_lock(&use_lock(&entry.name))? else {
            busy.push(entry.name);
            continue;
        };
        let aside = kernels.join(format!("{EVICTING}{}-{}", entry.name, std::process::id()));
        match std::fs::rename(&entry.path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("move aside", &entry.path, e)),
        }
        // Renamed: an opener now finds nothing and fetches anew, so the
        // lock need not be held through the slow part.
        drop(alone);
        remove_tree(&aside)?;
        used = used.saturating_sub(bytes);
        tracing::debug!(release = %entry.name, bytes, "evicted kernel workspace");
        evicted.push(Evicted {
            release: entry.name,
            bytes,
            last_used,
        });
    }
    Ok(Eviction {
        target,
        incoming,
        before,
        after: used,
        evicted,
        busy,
        leftovers,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Workspace;

    const G: u64 = 1 << 30;

    /// A cache in a temporary directory: never the real one.
    fn temp_cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        (dir, cache)
    }

    /// A workspace directory `Workspace::open` accepts, recorded as using
    /// `bytes` (the directory itself is tiny), last used `hours_ago`.
    fn fake_workspace(cache: &Cache, release: &str, bytes: Option<u64>, hours_ago: u64) -> PathBuf {
        let dir = cache.kernels_dir().join(release);
        std::fs::create_dir_all(dir.join("root/boot")).unwrap();
        std::fs::write(dir.join("root/boot/vmlinuz"), vec![1u8; 64 << 10]).unwrap();
        std::fs::write(
            dir.join("workspace.toml"),
            format!(
                "format = 1\nrelease = \"{release}\"\nversion = \"6.1.170-3\"\npackages = []\n\n\
                 [identity]\nrelease = \"{release}\"\nbuild_id = \"0123abcd\"\n\
                 uname_version = \"#1 SMP\"\ncompiler = \"gcc-12\"\nlinker = \"ld\"\n\
                 compression = \"xz\"\n"
            ),
        )
        .unwrap();
        if let Some(bytes) = bytes {
            record_size(&dir, bytes).unwrap();
        }
        set_last_use(&dir, hours_ago);
        dir
    }

    fn set_last_use(dir: &Path, hours_ago: u64) {
        touch(dir).unwrap();
        let when = SystemTime::now() - Duration::from_secs(hours_ago * 3600);
        File::options()
            .write(true)
            .open(dir.join(STAMP))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn open(cache: &Cache, release: &str) -> Workspace {
        Workspace::open(cache, &release.parse().unwrap())
            .unwrap()
            .expect("the fake workspace opens")
    }

    fn names(cache: &Cache) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(cache.kernels_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    const A: &str = "6.1.0-47-cloud-amd64";
    const B: &str = "6.1.0-48-cloud-amd64";
    const C: &str = "6.1.0-49-cloud-amd64";

    #[test]
    fn eviction_takes_the_least_recently_used_first_by_use_not_by_fetch() {
        let (_tmp, cache) = temp_cache();
        fake_workspace(&cache, A, Some(10 * G), 3);
        fake_workspace(&cache, B, Some(10 * G), 2);
        fake_workspace(&cache, C, Some(10 * G), 1);
        // A was fetched first but is used now: B becomes the oldest use.
        drop(open(&cache, A));
        let e = evict_to(&cache, 20 * G).unwrap();
        assert_eq!(names(&cache), [A, C]);
        assert_eq!(
            e.evicted
                .iter()
                .map(|e| e.release.as_str())
                .collect::<Vec<_>>(),
            [B]
        );
        assert_eq!((e.before, e.after), (30 * G, 20 * G));
        assert!(e.fits(), "{e}");
        // Then C, then A; nothing once it fits.
        let e = evict_to(&cache, 10 * G).unwrap();
        assert_eq!(e.evicted[0].release, C);
        assert_eq!(names(&cache), [A]);
        assert!(evict_to(&cache, 10 * G).unwrap().evicted.is_empty());
    }

    #[test]
    fn a_workspace_in_use_is_skipped_and_the_cap_left_exceeded_with_a_reason() {
        let (_tmp, cache) = temp_cache();
        fake_workspace(&cache, A, Some(10 * G), 3);
        fake_workspace(&cache, B, Some(10 * G), 2);
        let held = open(&cache, A);
        set_last_use(held.dir(), 3);
        // A clone held elsewhere keeps it in use after the first is gone,
        // and so does a value made from it (a source tree's hold).
        let hold = held.in_use().clone();
        let clone = held.clone();
        drop(held);
        let e = evict_to(&cache, 10 * G).unwrap();
        assert_eq!(e.busy, [A]);
        assert_eq!(e.evicted[0].release, B);
        assert!(e.fits());
        let e = evict_to(&cache, 0).unwrap();
        assert!(!e.fits());
        assert_eq!(names(&cache), [A]);
        let line = e.to_string();
        assert!(
            line.contains("still over the cap, in use: 6.1.0-47-cloud-amd64"),
            "{line}"
        );
        drop(clone);
        assert_eq!(evict_to(&cache, 0).unwrap().busy, [A]);
        drop(hold);
        let e = evict_to(&cache, 0).unwrap();
        assert_eq!(e.evicted[0].release, A);
        assert!(e.fits());
        assert!(names(&cache).is_empty());
    }

    #[test]
    fn the_workspace_being_fetched_is_never_evicted() {
        let (_tmp, cache) = temp_cache();
        let cache = cache.with_cap(Some(15 * G));
        // The oldest: a directory the fetch of A is about to replace.
        fake_workspace(&cache, A, Some(10 * G), 5);
        fake_workspace(&cache, B, Some(10 * G), 1);
        let e = make_room(&cache, &A.parse().unwrap(), 4 * G)
            .unwrap()
            .expect("a capped cache evicts");
        assert_eq!(e.evicted.len(), 1);
        assert_eq!(e.evicted[0].release, B);
        assert_eq!(names(&cache), [A]);
        assert_eq!((e.after, e.incoming), (10 * G, 4 * G));
        // 10 + 4 fits under 15.
        assert!(e.fits(), "{e}");
        let e = make_room(&cache, &A.parse().unwrap(), 6 * G)
            .unwrap()
            .unwrap();
        assert!(e.evicted.is_empty() && !e.fits());
        assert!(
            e.to_string()
                .ends_with("still over the cap with nothing left to evict"),
            "{e}"
        );
        assert_eq!(names(&cache), [A]);
        // Without a cap nothing is even looked at.
        assert!(
            make_room(&cache.clone().with_cap(None), &A.parse().unwrap(), G)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_running_fetch_keeps_its_partial_directory_and_it_counts() {
        let (_tmp, cache) = temp_cache();
        fake_workspace(&cache, A, Some(10 * G), 5);
        let partial = cache.kernels_dir().join(format!(".{B}.partial"));
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("linux.deb"), vec![3u8; 1 << 20]).unwrap();
        let fetching = cache.lock(B).unwrap();
        let e = evict_to(&cache, u64::MAX).unwrap();
        assert!(e.leftovers.is_empty());
        assert!(e.before > 10 * G + (1 << 20) - 1, "{}", e.before);
        assert!(partial.is_dir());
        drop(fetching);
        let e = evict_to(&cache, u64::MAX).unwrap();
        assert_eq!(e.leftovers, [format!(".{B}.partial")]);
        assert_eq!(names(&cache), [A]);
    }

    #[test]
    fn leftovers_of_a_crash_mid_removal_are_not_workspaces_and_go_next_time() {
        let (_tmp, cache) = temp_cache();
        fake_workspace(&cache, A, Some(G), 2);
        // What a crash after the rename aside leaves.
        let dir = fake_workspace(&cache, B, Some(G), 1);
        let aside = cache.kernels_dir().join(format!("{EVICTING}{B}-4242"));
        std::fs::rename(&dir, &aside).unwrap();
        std::fs::remove_file(aside.join("workspace.toml")).unwrap();
        assert!(Workspace::open(&cache, &B.parse().unwrap())
            .unwrap()
            .is_none());
        let s = status(&cache).unwrap();
        assert_eq!(s.workspaces.len(), 1);
        assert_eq!(s.other[0].what, "interrupted eviction");
        // Cleared even when nothing has to be evicted.
        let e = evict_to(&cache, u64::MAX).unwrap();
        assert_eq!(e.leftovers, [format!("{EVICTING}{B}-4242")]);
        assert!(e.evicted.is_empty());
        assert_eq!(names(&cache), [A]);
    }

    #[test]
    fn opening_records_the_use_and_a_release_never_fetched_leaves_no_lock() {
        let (_tmp, cache) = temp_cache();
        let dir = fake_workspace(&cache, A, None, 48);
        let before = last_used(&dir).unwrap();
        let ws = open(&cache, A);
        let after = last_used(&dir).unwrap();
        assert!(after > before + Duration::from_secs(47 * 3600));
        assert!(SystemTime::now().duration_since(after).unwrap() < Duration::from_secs(60));
        // Shared: a second user opens it too.
        let again = open(&cache, A);
        assert!(in_use(&cache, A).unwrap());
        drop((ws, again));
        assert!(!in_use(&cache, A).unwrap());
        assert!(Workspace::open(&cache, &B.parse().unwrap())
            .unwrap()
            .is_none());
        assert!(!cache.root().join(format!("locks/{B}.use.lock")).exists());
        // A workspace from before stamps counts from its manifest.
        std::fs::remove_file(dir.join(STAMP)).unwrap();
        let manifest = std::fs::metadata(dir.join("workspace.toml")).unwrap();
        assert_eq!(last_used(&dir), manifest.modified().ok());
    }

    #[test]
    fn sizes_are_measured_when_missing_recorded_when_idle_and_forgotten_on_growth() {
        let (_tmp, cache) = temp_cache();
        let a = fake_workspace(&cache, A, None, 2);
        let b = fake_workspace(&cache, B, None, 1);
        let held = open(&cache, B);
        let measured = disk_usage(&a).unwrap();
        assert!(measured >= 64 << 10);
        let s = status(&cache).unwrap();
        // Idle: measured and recorded (the record itself is outside what
        // was measured).
        assert_eq!(s.workspaces[0].release, A);
        assert_eq!(s.workspaces[0].bytes, measured);
        assert_eq!(recorded_size(&a), Some(measured));
        // In use, perhaps growing: measured each time, not recorded.
        assert!(s.workspaces[1].in_use);
        assert!(s.workspaces[1].bytes >= 64 << 10);
        assert_eq!(recorded_size(&b), None);
        // The record is what status trusts...
        record_size(&a, 7 * G).unwrap();
        assert_eq!(status(&cache).unwrap().workspaces[0].bytes, 7 * G);
        // ...until the workspace grows.
        held.grew().unwrap();
        assert_eq!(recorded_size(&b), None);
        let a_ws = open(&cache, A);
        a_ws.grew().unwrap();
        assert_eq!(recorded_size(&a), None);
    }

    #[test]
    fn status_lists_workspaces_oldest_use_first_with_the_cap_as_json() {
        let (_tmp, cache) = temp_cache();
        let cache = cache.with_cap(Some(40 * G));
        fake_workspace(&cache, A, Some(5 * G), 1);
        fake_workspace(&cache, B, Some(6 * G), 30);
        let partial = cache.kernels_dir().join(format!(".{C}.partial"));
        std::fs::create_dir_all(&partial).unwrap();
        let held = open(&cache, A);
        let s = status(&cache).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["cap"], 40 * G);
        assert_eq!(json["kernels"], cache.kernels_dir().to_str().unwrap());
        let w = json["workspaces"].as_array().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0]["release"], B);
        assert_eq!(w[0]["bytes"], 6 * G);
        assert_eq!(w[0]["in_use"], false);
        assert_eq!(w[1]["release"], A);
        assert_eq!(w[1]["in_use"], true);
        let stamp = w[1]["last_used"].as_str().unwrap();
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
        let o = json["other"].as_array().unwrap();
        assert_eq!(o[0]["name"], format!(".{C}.partial"));
        assert_eq!(o[0]["what"], "partial fetch");
        let other = o[0]["bytes"].as_u64().unwrap();
        assert_eq!(json["total"], 11 * G + other);
        // Status removes nothing, not even a partial nobody is fetching.
        assert!(partial.is_dir());
        drop(held);
        let empty = Cache::at(cache.root().join("nothing-here"));
        let s = status(&empty).unwrap();
        assert_eq!((s.total, s.cap, s.workspaces.len()), (0, None, 0));
    }
}
