//! Releasing a fix catalog as cumulative patch levels, one job per kernel
//! build: the build's plan decides which fixes its level carries; the
//! level is composed into one diff, built and verified in a guest of that
//! build by the factory, signed with the effective version only a
//! catalog's declared completion grants, and optionally published. Each
//! job is idempotent and resumable: a per-build state file under the
//! catalog (`state/<release>.json`, written atomically after each step
//! that must not be repeated) records every level, so an unchanged level
//! is never rebuilt and a killed run neither skips nor repeats a number.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::catalog::{Catalog, CatalogFix};
use crate::factory::{self, Stop};
use crate::plan::{Applicability, BuildPlan};
use crate::publish;

/// What a release run needs besides the plans.
#[derive(Debug, Clone)]
pub struct Options {
    /// The catalog (its directory holds the state files).
    pub catalog: Catalog,
    /// Where levels are built and bundles written: `<out>/<release>/`.
    pub out: PathBuf,
    /// The bundle signing key.
    pub key: PathBuf,
    /// Builds run at once.
    pub jobs: usize,
    /// Publish each new level here.
    pub publish: Option<publish::Target>,
    /// The kernel cache's cap (`--cache-cap`), else the environment's.
    pub cache_cap: Option<u64>,
}

/// One released level, as the state file records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateLevel {
    /// The level number.
    pub level: u32,
    /// The fixes it carries, in catalog order.
    pub fixes: Vec<String>,
    /// The identity of what it carries (see `fixset`): equal means the
    /// level would be built again the same.
    pub fixset: String,
    /// The version scanners see, when a completion grants one.
    pub effective_version: Option<String>,
    /// The bundle file, relative to the output directory.
    pub bundle: String,
    /// Its sha256.
    pub bundle_sha256: String,
    /// RFC 3339 UTC.
    pub built_at: String,
    /// Servers it was published to.
    #[serde(default)]
    pub published_to: Vec<String>,
}

/// A build's release state (`<catalog>/state/<release>.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The kernel release.
    pub release: String,
    /// Every level released, oldest first.
    pub levels: Vec<StateLevel>,
    /// Fixes the factory refused for this build, with the content hash
    /// they were refused at (a changed fix is tried again).
    #[serde(default)]
    pub refused: BTreeMap<String, Refusal>,
    /// Fixes that change only files this build's configuration does not
    /// compile, with their content hash then.
    #[serde(default)]
    pub not_built: BTreeMap<String, Refusal>,
}

/// A fix the factory refused for a build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Refusal {
    /// The fix's content hash when refused.
    pub fix_hash: String,
    /// The factory's reasons.
    pub reasons: Vec<String>,
}

impl State {
    fn path(catalog: &Path, release: &str) -> PathBuf {
        catalog.join("state").join(format!("{release}.json"))
    }

    /// The build's state, empty when it has none yet.
    pub fn load(catalog: &Path, release: &str) -> anyhow::Result<State> {
        let path = State::path(catalog, release);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let s: State = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{}: not a release state file (fix or remove it)",
                        path.display()
                    )
                })?;
                if s.release != release {
                    bail!(
                        "{}: the state of {}, not of {release}",
                        path.display(),
                        s.release
                    );
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                release: release.to_string(),
                ..State::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state atomically (a temporary file renamed over it,
    /// synced first): a kill leaves the old state or the new one.
    pub fn save(&self, catalog: &Path) -> anyhow::Result<()> {
        let path = State::path(catalog, &self.release);
        let dir = path.parent().expect("state path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp", self.release));
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The newest level.
    pub fn newest(&self) -> Option<&StateLevel> {
        self.levels.last()
    }
}

/// What one fix came to for one build.
#[derive(Debug, Clone, Serialize)]
pub struct FixOutcome {
    /// The fix's id.
    pub id: String,
    /// One word: in, in*, contained, conflict, absent, other-series,
    /// refused, not-built (its files are not compiled in this build),
    /// no-change.
    pub state: String,
    /// Why (hunks, offsets, the factory's reasons), one item each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

/// What the job did with the build's level.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum LevelResult {
    /// A new level was built, verified and signed (and published).
    Released {
        /// Its number.
        level: u32,
        /// The bundle file.
        bundle: PathBuf,
        /// The effective version it says.
        effective_version: Option<String>,
        /// Published to this server.
        published: Option<String>,
    },
    /// The newest level already carries exactly this; nothing was built.
    UpToDate {
        /// That level.
        level: u32,
    },
    /// No fix of the catalog goes into this build.
    NothingApplies,
    /// The fixes that apply change no code this build runs.
    NoChange {
        /// The factory's words.
        why: String,
    },
    /// Every fix that applies was refused by the factory.
    Refused,
    /// Built, and the guest showed it does not work: no level.
    VerifyFailed {
        /// Each problem.
        problems: Vec<String>,
    },
    /// The job stopped with an error.
    Failed {
        /// The error, with its causes.
        error: String,
    },
}

/// One build's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    /// The kernel release.
    pub release: String,
    /// Its Debian version.
    pub version: String,
    /// Each fix, in catalog order.
    pub fixes: Vec<FixOutcome>,
    /// The level.
    #[serde(flatten)]
    pub result: LevelResult,
    /// Seconds the job took (build and verify included).
    pub seconds: f64,
}

impl BuildOutcome {
    /// Whether the job did what it had to (a failure makes the run fail).
    pub fn ok(&self) -> bool {
        !matches!(
            self.result,
            LevelResult::Failed { .. } | LevelResult::VerifyFailed { .. }
        )
    }
}

/// Per-build progress on stderr: a spinner per build where stderr is a
/// terminal, lines otherwise.
struct Progress {
    bars: Option<indicatif::MultiProgress>,
}

/// One build's line of progress.
struct Line<'a> {
    progress: &'a Progress,
    release: String,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            bars: std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
        }
    }

    fn line(&self, release: &str) -> Line<'_> {
        let bar = self.bars.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new_spinner());
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix:32} {elapsed:>4} {msg}")
                    .expect("a valid template"),
            );
            b.set_prefix(release.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Line {
            progress: self,
            release: release.to_string(),
            bar,
        }
    }
}

impl Line<'_> {
    fn step(&self, what: &str) {
        match &self.bar {
            Some(b) => b.set_message(what.to_string()),
            None => eprintln!("release: {}: {what}", self.release),
        }
    }

    fn finish(&self, what: &str) {
        match (&self.bar, &self.progress.bars) {
            (Some(b), _) => b.finish_with_message(what.to_string()),
            _ => eprintln!("release: {}: {what}", self.release),
        }
    }
}

/// The content hash of a fix for one build series: what its level would
/// be built and described from (its diff, hooks, checks, CVEs and words).
fn fix_hash(fix: &CatalogFix, patch: &Path) -> anyhow::Result<String> {
    let mut h = sha2::Sha256::new();
    let mut part = |name: &str, bytes: &[u8]| {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(
        "patch",
        &std::fs::read(patch).with_context(|| format!("reading {}", patch.display()))?,
    );
    for a in &fix.appends {
        part("append-file", a.file.as_bytes());
        part(
            "append",
            &std::fs::read(&a.source).with_context(|| format!("reading {}", a.source.display()))?,
        );
    }
    for c in &fix.checks {
        part(
            "check",
            &std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
        );
    }
    for c in &fix.cves {
        part("cve", c.as_bytes());
    }
    part("description", fix.description.as_bytes());
    Ok(hex::encode(h.finalize()))
}

/// The identity of a level: its fixes' hashes and the effective version.
fn fixset(fixes: &[(String, String)], effective: Option<&str>) -> String {
    let mut h = sha2::Sha256::new();
    for (id, hash) in fixes {
        h.update(format!("{id}={hash}\n"));
    }
    h.update(format!("effective={}\n", effective.unwrap_or("-")));
    hex::encode(h.finalize())
}

/// The effective version a build may claim with `carried` (built into the
/// level) and `contained` fixes (its source has them, or it does not
/// compile the code they fix): the newest completion whose fixes it all
/// has and whose `builds_from` it is at least. None when none holds.
pub fn effective_version(
    catalog: &Catalog,
    version: &str,
    carried: &BTreeSet<String>,
    contained: &BTreeSet<String>,
) -> Option<String> {
    let build: debversion::Version = version.parse().ok()?;
    catalog
        .completes
        .iter()
        .filter(|c| {
            c.builds_from
                .parse::<debversion::Version>()
                .is_ok_and(|from| build >= from)
                && c.fixes
                    .iter()
                    .all(|f| carried.contains(f) || contained.contains(f))
        })
        .filter_map(|c| Some((c.version.parse::<debversion::Version>().ok()?, c)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, c)| c.version.clone())
}

/// Composes the level of `ids` for a build into one diff against the
/// build's own source (`plan.source`): each fix applied in catalog order
/// with GNU patch (offsets and fuzz resolved once, here), then its hooks
/// appended. Written to `dir/level.patch`.
fn compose(
    catalog: &Catalog,
    plan: &BuildPlan,
    ids: &[String],
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(dir)?;
    for side in [&a, &b] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(&plan.source)
            .arg(side)
            .status()
            .context("running cp")?;
        if !st.success() {
            bail!("copying {} to {}", plan.source.display(), side.display());
        }
    }
    for (fix, patch) in catalog.fixes.iter().zip(&plan.patches) {
        if !ids.contains(&fix.id) {
            continue;
        }
        let patch = patch
            .as_ref()
            .with_context(|| format!("fix {} has no diff for this series", fix.id))?;
        let out = Command::new("patch")
            .args([
                "-p1",
                "--forward",
                "--batch",
                "--no-backup-if-mismatch",
                "-d",
            ])
            .arg(&b)
            .arg("-i")
            .arg(patch)
            .output()
            .context("running patch")?;
        if !out.status.success() {
            bail!(
                "fix {} does not apply on top of the fixes before it: {}",
                fix.id,
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        for ap in &fix.appends {
            let target = b.join(&ap.file);
            let mut text = std::fs::read(&target)
                .with_context(|| format!("fix {}: reading {}", fix.id, ap.file))?;
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend(
                std::fs::read(&ap.source)
                    .with_context(|| format!("reading {}", ap.source.display()))?,
            );
            std::fs::write(&target, text)?;
        }
    }
    let mut files = Vec::new();
    walk(&b, &b, &mut files)?;
    files.sort();
    let mut text = String::new();
    for f in &files {
        let out = Command::new("diff")
            .arg("-u")
            .arg(format!("--label=a/{f}"))
            .arg(format!("--label=b/{f}"))
            .arg(a.join(f))
            .arg(b.join(f))
            .output()
            .context("running diff")?;
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let path = dir.join("level.patch");
    std::fs::write(&path, text)?;
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
    Ok(path)
}

/// Every regular file under `dir`, relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The module name of level `n`.
fn module_name(n: u32) -> String {
    format!("noreboot_l{n}")
}

/// Text cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Runs one build's job; never panics on the build's own trouble: an
/// error is the outcome `Failed`.
fn job(o: &Options, plan: &BuildPlan, line: &Line) -> BuildOutcome {
    let started = Instant::now();
    let mut fixes: Vec<FixOutcome> = plan
        .fixes
        .iter()
        .map(|(id, a)| FixOutcome {
            id: id.clone(),
            state: a.word().to_string(),
            detail: match a {
                Applicability::Applies { adjusted } => adjusted.clone(),
                Applicability::Conflict { hunks } => hunks.clone(),
                Applicability::Absent { files } => {
                    files.iter().map(|f| format!("no {f}")).collect()
                }
                Applicability::OtherSeries { series } => vec![format!("for {series}")],
                Applicability::Contained => Vec::new(),
            },
        })
        .collect();
    let result = match run_job(o, plan, line, &mut fixes) {
        Ok(r) => r,
        Err(e) => LevelResult::Failed {
            error: format!("{e:#}"),
        },
    };
    line.finish(&match &result {
        LevelResult::Released { level, .. } => format!("released level {level}"),
        LevelResult::UpToDate { level } => format!("level {level} is up to date"),
        LevelResult::NothingApplies => "no fix applies".into(),
        LevelResult::NoChange { .. } => "the fixes change no code of this build".into(),
        LevelResult::Refused => "every fix refused".into(),
        LevelResult::VerifyFailed { .. } => "verification failed".into(),
        LevelResult::Failed { error } => format!("failed: {}", error.lines().next().unwrap_or("")),
    });
    BuildOutcome {
        release: plan.release.clone(),
        version: plan.version.clone(),
        fixes,
        result,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// One build's release job: what every step of it shares.
struct Job<'a, 'l> {
    o: &'a Options,
    plan: &'a BuildPlan,
    line: &'a Line<'l>,
    catalog: &'a Catalog,
    state: State,
    /// Content hashes of the fixes that apply.
    hashes: BTreeMap<String, String>,
    /// Fixes the build's source already contains.
    contained: BTreeSet<String>,
    client: Option<publish::Client>,
}

/// What one attempt at building a level decided.
enum Attempt {
    /// The job is over.
    Done(LevelResult),
    /// Fixes were left out: try again with the rest.
    Again(Vec<String>),
}

/// The level for one build: the fixes that apply, less those refused or
/// not built before at the same content; then, until it settles, build
/// it (leaving out what is refused or not compiled here, one attempt at a
/// time), sign it and publish it — or find it built already.
fn run_job(
    o: &Options,
    plan: &BuildPlan,
    line: &Line,
    fixes: &mut [FixOutcome],
) -> anyhow::Result<LevelResult> {
    let (mut job, mut level) = match Job::start(o, plan, line, fixes)? {
        Ok(started) => started,
        Err(result) => return Ok(result),
    };
    loop {
        match job.attempt(&level, fixes)? {
            Attempt::Done(result) => return Ok(result),
            Attempt::Again(rest) => level = rest,
        }
    }
}

impl<'a, 'l> Job<'a, 'l> {
    /// The job's shared state and the fixes to try, or the result when no
    /// fix is left to try.
    fn start(
        o: &'a Options,
        plan: &'a BuildPlan,
        line: &'a Line<'l>,
        fixes: &mut [FixOutcome],
    ) -> anyhow::Result<Result<(Job<'a, 'l>, Vec<String>), LevelResult>> {
        let catalog = &o.catalog;
        let state = State::load(&catalog.dir, &plan.release)?;
        let dir = o.out.join(&plan.release);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut hashes: BTreeMap<String, String> = BTreeMap::new();
        for (fix, patch) in catalog.fixes.iter().zip(&plan.patches) {
            if let Some(p) = patch {
                if plan.level.contains(&fix.id) {
                    hashes.insert(fix.id.clone(), fix_hash(fix, p)?);
                }
            }
        }
        // Fixes refused before at the same content stay out without a try.
        let mut level: Vec<String> = Vec::new();
        for id in &plan.level {
            match (state.refused.get(id), state.not_built.get(id)) {
                (Some(r), _) if r.fix_hash == hashes[id] => {
                    mark(fixes, id, "refused", r.reasons.clone())
                }
                (_, Some(r)) if r.fix_hash == hashes[id] => {
                    mark(fixes, id, "not-built", r.reasons.clone())
                }
                _ => level.push(id.clone()),
            }
        }
        if level.is_empty() {
            return Ok(Err(if plan.level.is_empty() {
                LevelResult::NothingApplies
            } else {
                LevelResult::Refused
            }));
        }
        let contained: BTreeSet<String> = plan
            .fixes
            .iter()
            .filter(|(_, a)| *a == Applicability::Contained)
            .map(|(id, _)| id.clone())
            .collect();
        let client = o
            .publish
            .as_ref()
            .map(|t| publish::Client::new(&t.url, &t.token, t.ca.as_deref()))
            .transpose()?;
        let job = Job {
            o,
            plan,
            line,
            catalog,
            state,
            hashes,
            contained,
            client,
        };
        Ok(Ok((job, level)))
    }

    /// One attempt with the fixes of `level`.
    fn attempt(&mut self, level: &[String], fixes: &mut [FixOutcome]) -> anyhow::Result<Attempt> {
        let carried: BTreeSet<String> = level.iter().cloned().collect();
        // A fix of code this build does not compile leaves nothing to fix
        // here: for a completion it counts as had.
        let had: BTreeSet<String> = self
            .contained
            .iter()
            .cloned()
            .chain(
                self.state
                    .not_built
                    .iter()
                    .filter(|(id, r)| self.hashes.get(*id) == Some(&r.fix_hash))
                    .map(|(id, _)| id.clone()),
            )
            .collect();
        let effective = effective_version(self.catalog, &self.plan.version, &carried, &had);
        let ids: Vec<(String, String)> = level
            .iter()
            .map(|id| (id.clone(), self.hashes[id].clone()))
            .collect();
        let set = fixset(&ids, effective.as_deref());
        if let Some(result) = self.built_before(&set, &effective)? {
            return Ok(Attempt::Done(result));
        }
        let (n, build_id) = self.next_number()?;
        self.line
            .step(&format!("composing level {n} ({} fixes)", level.len()));
        let work = self
            .o
            .out
            .join(&self.plan.release)
            .join(format!("level-{n}"));
        let patch = compose(self.catalog, self.plan, level, &work.join("compose"))?;
        let opts = self.level_options(n, level, patch, &work);
        self.line.step(&format!("building and verifying level {n}"));
        if let Err(e) = factory::build(&opts) {
            return self.stopped(e, level, &opts, &work, fixes);
        }
        let result = self.sign_and_publish(n, level, &opts, set, effective, build_id)?;
        Ok(Attempt::Done(result))
    }

    /// The newest level, when it carries exactly this set: up to date, or
    /// published now if it never reached this server (a run killed after
    /// signing, or a new server).
    fn built_before(
        &mut self,
        set: &str,
        effective: &Option<String>,
    ) -> anyhow::Result<Option<LevelResult>> {
        let Some(newest) = self.state.newest().filter(|l| l.fixset == set) else {
            return Ok(None);
        };
        let n = newest.level;
        let (Some(t), Some(c)) = (&self.o.publish, &self.client) else {
            return Ok(Some(LevelResult::UpToDate { level: n }));
        };
        if newest.published_to.contains(&t.url) {
            return Ok(Some(LevelResult::UpToDate { level: n }));
        }
        self.line.step(&format!("publishing level {n}"));
        let bundle = self.o.out.join(&newest.bundle);
        let build_id = build_id(&self.plan.release, self.o.cache_cap)?;
        publish_level(c, t, &build_id, &bundle, &newest.bundle_sha256, n)?;
        if let Some(l) = self.state.levels.last_mut() {
            l.published_to.push(t.url.clone());
        }
        self.state.save(&self.catalog.dir)?;
        Ok(Some(LevelResult::Released {
            level: n,
            bundle,
            effective_version: effective.clone(),
            published: Some(t.url.clone()),
        }))
    }

    /// The next level number (after the state's newest and the server's)
    /// and, when publishing, the build-id.
    fn next_number(&self) -> anyhow::Result<(u32, Option<String>)> {
        let mut n = self.state.newest().map_or(0, |l| l.level) + 1;
        let Some(c) = &self.client else {
            return Ok((n, None));
        };
        self.line.step("fetching the kernel");
        let id = build_id(&self.plan.release, self.o.cache_cap)?;
        if let Some(max) = c.levels(&id)?.iter().map(|l| l.level).max() {
            n = n.max(max + 1);
        }
        Ok((n, Some(id)))
    }

    /// The catalog fixes of `level`.
    fn chosen(&self, level: &[String]) -> Vec<&'a CatalogFix> {
        self.catalog
            .fixes
            .iter()
            .filter(|f| level.contains(&f.id))
            .collect()
    }

    /// The factory's options for level `n`: built and verified with the
    /// fixes' checks, named and described by its fixes.
    fn level_options(
        &self,
        n: u32,
        level: &[String],
        patch: PathBuf,
        work: &Path,
    ) -> factory::Options {
        let chosen = self.chosen(level);
        factory::Options {
            kernel: self.plan.release.clone(),
            patches: vec![patch],
            name: module_name(n),
            cves: chosen
                .iter()
                .flat_map(|f| f.cves.iter().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            description: cut(
                &chosen
                    .iter()
                    .map(|f| format!("{}: {}", f.id, f.description.lines().next().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("\n"),
                bundle::manifest::MAX_DESCRIPTION,
            )
            .to_string(),
            verify: true,
            checks: chosen
                .iter()
                .flat_map(|f| f.checks.iter().cloned())
                .collect(),
            sign: None,
            out: work.join("build"),
            strict: false,
            quiet: true,
            cache_cap: self.o.cache_cap,
            keep_work: false,
        }
    }

    /// A build that stopped: the outcome for its reason, or the fixes to
    /// try again without those not compiled here or refused.
    fn stopped(
        &mut self,
        e: anyhow::Error,
        level: &[String],
        opts: &factory::Options,
        work: &Path,
        fixes: &mut [FixOutcome],
    ) -> anyhow::Result<Attempt> {
        match e.downcast_ref::<Stop>() {
            Some(Stop::NoChange(why)) => {
                for id in level {
                    mark(fixes, id, "no-change", vec![why.clone()]);
                }
                Ok(Attempt::Done(LevelResult::NoChange { why: why.clone() }))
            }
            Some(Stop::NotCompiled { files, .. }) => {
                let dropped = self.not_compiled(level, files, fixes)?;
                if dropped.is_empty() {
                    return Err(e);
                }
                let rest: Vec<String> = level
                    .iter()
                    .filter(|id| !dropped.contains(id))
                    .cloned()
                    .collect();
                Ok(if rest.is_empty() {
                    Attempt::Done(LevelResult::NothingApplies)
                } else {
                    Attempt::Again(rest)
                })
            }
            Some(Stop::VerifyFailed(problems)) => Ok(Attempt::Done(LevelResult::VerifyFailed {
                problems: problems.clone(),
            })),
            Some(Stop::Refused(reasons)) => {
                let kept = self.each_alone(level, opts, work, fixes)?;
                if kept.len() == level.len() {
                    bail!(
                        "the level is refused though each of its fixes alone builds:\n{}",
                        reasons.join("\n")
                    );
                }
                Ok(if kept.is_empty() {
                    Attempt::Done(LevelResult::Refused)
                } else {
                    Attempt::Again(kept)
                })
            }
            None => Err(e),
        }
    }

    /// Fixes of code this configuration does not build (a driver it
    /// leaves out) are not for this build: marked and recorded, and
    /// returned.
    fn not_compiled(
        &mut self,
        level: &[String],
        files: &[String],
        fixes: &mut [FixOutcome],
    ) -> anyhow::Result<Vec<String>> {
        let mut dropped = Vec::new();
        for (fix, patch) in self.catalog.fixes.iter().zip(&self.plan.patches) {
            let Some(patch) = patch.as_ref().filter(|_| level.contains(&fix.id)) else {
                continue;
            };
            let text = std::fs::read_to_string(patch)?;
            let mine: Vec<String> = crate::patch::parse_files(patch, &text)?
                .into_iter()
                .filter_map(|(_, new, _)| crate::patch::strip_path(&new, 1))
                .filter(|f| files.contains(f))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let why: Vec<String> = mine
                .iter()
                .map(|f| format!("{f} is not compiled in this build's configuration"))
                .collect();
            mark(fixes, &fix.id, "not-built", why.clone());
            self.state.not_built.insert(
                fix.id.clone(),
                Refusal {
                    fix_hash: self.hashes[&fix.id].clone(),
                    reasons: why,
                },
            );
            dropped.push(fix.id.clone());
        }
        if !dropped.is_empty() {
            self.state.save(&self.catalog.dir)?;
        }
        Ok(dropped)
    }

    /// A refused level: which fix? Each is built alone (no guest); the
    /// refused ones are recorded and stay out; the others are returned.
    fn each_alone(
        &mut self,
        level: &[String],
        opts: &factory::Options,
        work: &Path,
        fixes: &mut [FixOutcome],
    ) -> anyhow::Result<Vec<String>> {
        self.line
            .step("refused: building each fix alone to find which");
        let mut kept = Vec::new();
        for id in level {
            let alone = compose(
                self.catalog,
                self.plan,
                std::slice::from_ref(id),
                &work.join("alone").join(id),
            )?;
            let o1 = factory::Options {
                patches: vec![alone],
                verify: false,
                checks: Vec::new(),
                out: work.join("alone").join(id).join("build"),
                ..opts.clone()
            };
            match factory::build(&o1) {
                Ok(_) => kept.push(id.clone()),
                Err(e) => match e.downcast_ref::<Stop>() {
                    Some(Stop::Refused(r)) => {
                        mark(fixes, id, "refused", r.clone());
                        self.state.refused.insert(
                            id.clone(),
                            Refusal {
                                fix_hash: self.hashes[id].clone(),
                                reasons: r.clone(),
                            },
                        );
                    }
                    Some(Stop::NoChange(why)) => {
                        mark(fixes, id, "no-change", vec![why.clone()]);
                    }
                    _ => return Err(e.context(format!("building fix {id} alone"))),
                },
            }
        }
        self.state.save(&self.catalog.dir)?;
        Ok(kept)
    }

    /// Signs the built level, records it (before publishing: a run killed
    /// in between publishes this same bundle next time instead of building
    /// a new number), publishes it when asked.
    fn sign_and_publish(
        &mut self,
        n: u32,
        level: &[String],
        opts: &factory::Options,
        set: String,
        effective: Option<String>,
        build_id: Option<String>,
    ) -> anyhow::Result<LevelResult> {
        self.line.step(&format!("signing level {n}"));
        let cve_descriptions = self
            .chosen(level)
            .iter()
            .flat_map(|f| {
                f.cves.iter().map(|c| {
                    (
                        c.clone(),
                        cut(&f.description, bundle::manifest::MAX_CVE_DESCRIPTION).to_string(),
                    )
                })
            })
            .collect();
        let bundle_name = format!("{}/level-{n}.nrb", self.plan.release);
        let (bundle_path, _) = crate::bundling::bundle(&crate::bundling::BundleOptions {
            from: opts.out.clone(),
            level: n,
            key: self.o.key.clone(),
            effective_version: effective.clone(),
            cve_descriptions,
            out: Some(self.o.out.join(&bundle_name)),
        })?;
        let bytes = std::fs::read(&bundle_path)?;
        let sha = factory::hex_sha256(&bytes);
        let mut entry = StateLevel {
            level: n,
            fixes: level.to_vec(),
            fixset: set,
            effective_version: effective.clone(),
            bundle: bundle_name,
            bundle_sha256: sha.clone(),
            built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            published_to: Vec::new(),
        };
        self.state.levels.push(entry.clone());
        self.state.save(&self.catalog.dir)?;
        let mut published = None;
        if let (Some(t), Some(c)) = (&self.o.publish, &self.client) {
            self.line.step(&format!("publishing level {n}"));
            let id = build_id.as_deref().expect("fetched when publishing");
            publish_level(c, t, id, &bundle_path, &sha, n)?;
            entry.published_to.push(t.url.clone());
            *self.state.levels.last_mut().expect("just pushed") = entry;
            self.state.save(&self.catalog.dir)?;
            published = Some(t.url.clone());
        }
        Ok(LevelResult::Released {
            level: n,
            bundle: bundle_path,
            effective_version: effective,
            published,
        })
    }
}

/// Publishes a level's bundle; a level the server already has with this
/// very bundle (a run killed after publishing) counts as published.
fn publish_level(
    c: &publish::Client,
    t: &publish::Target,
    build_id: &str,
    bundle: &Path,
    sha: &str,
    n: u32,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    match c.publish(&bytes, &t.feeds) {
        Ok(_) => Ok(()),
        Err(e) => {
            let on_server = c.levels(build_id)?;
            if on_server.iter().any(|l| l.level == n && l.sha256 == sha) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// The GNU build-id of a build's kernel image (its workspace is fetched:
/// the level's build needs it anyway; the value is dropped at once, so
/// nothing here keeps it from being evicted later).
fn build_id(release: &str, cap: Option<u64>) -> anyhow::Result<String> {
    let cache = kernel_tree::Cache::from_env_with_cap(cap)?;
    let archive = kernel_tree::AptArchive::debian(&cache)?;
    let ws = kernel_tree::Workspace::fetch(&cache, &archive, &release.parse()?)?;
    Ok(ws.identity().build_id.to_string())
}

fn mark(fixes: &mut [FixOutcome], id: &str, state: &str, detail: Vec<String>) {
    if let Some(f) = fixes.iter_mut().find(|f| f.id == id) {
        f.state = state.to_string();
        f.detail = detail;
    }
}

/// Runs every build's job, `o.jobs` at once; outcomes in the plans' order.
pub fn release(o: &Options, plans: &[BuildPlan]) -> Vec<BuildOutcome> {
    let progress = Progress::new();
    let next = Mutex::new(0usize);
    let outcomes: Mutex<Vec<Option<BuildOutcome>>> = Mutex::new(vec![None; plans.len()]);
    std::thread::scope(|s| {
        for _ in 0..o.jobs.clamp(1, plans.len().max(1)) {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(plan) = plans.get(i) else { break };
                let line = progress.line(&plan.release);
                let outcome = job(o, plan, &line);
                outcomes.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(outcome);
            });
        }
    });
    outcomes
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// The summary: a row per build (kernel × fix), then why each fix that is
/// not in a build's level was left out, and each failure.
pub fn table(catalog: &Catalog, outcomes: &[BuildOutcome]) -> String {
    let level = |o: &BuildOutcome| match &o.result {
        LevelResult::Released { level, .. } => format!("{level} new"),
        LevelResult::UpToDate { level } => format!("{level} unchanged"),
        LevelResult::NothingApplies => "none".into(),
        LevelResult::NoChange { .. } => "no change".into(),
        LevelResult::Refused => "refused".into(),
        LevelResult::VerifyFailed { .. } => "VERIFY FAILED".into(),
        LevelResult::Failed { .. } => "FAILED".into(),
    };
    let mut s = crate::plan::grid(
        catalog,
        "level",
        14,
        outcomes.iter().map(|o| {
            (
                o.release.as_str(),
                o.version.as_str(),
                level(o),
                o.fixes.iter().map(|f| f.state.as_str()).collect(),
            )
        }),
    );
    let mut notes = Vec::new();
    for o in outcomes {
        for f in &o.fixes {
            let why = match f.state.as_str() {
                "contained" => "contained: the build's source already has it".to_string(),
                "in" => continue,
                _ if f.detail.is_empty() => f.state.clone(),
                state => format!("{state}: {}", f.detail.join("; ")),
            };
            notes.push(format!("{} {}: {why}", o.release, f.id));
        }
        match &o.result {
            LevelResult::Released {
                level,
                bundle,
                effective_version,
                published,
            } => notes.push(format!(
                "{}: level {level} in {}{}{}",
                o.release,
                bundle.display(),
                effective_version
                    .as_ref()
                    .map(|v| format!(", effective version {v}"))
                    .unwrap_or_default(),
                published
                    .as_ref()
                    .map(|u| format!(", published to {u}"))
                    .unwrap_or_default()
            )),
            LevelResult::VerifyFailed { problems } => notes.push(format!(
                "{}: verification failed: {}",
                o.release,
                problems.join("; ")
            )),
            LevelResult::Failed { error } => notes.push(format!("{}: {error}", o.release)),
            LevelResult::NoChange { why } => notes.push(format!("{}: {why}", o.release)),
            _ => {}
        }
    }
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            s.push_str(&n);
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_names_its_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path(), "6.1.0-47-cloud-amd64").unwrap();
        assert!(s.levels.is_empty());
        s.levels.push(StateLevel {
            level: 1,
            fixes: vec!["a".into()],
            fixset: "f".into(),
            effective_version: None,
            bundle: "x.nrb".into(),
            bundle_sha256: "00".into(),
            built_at: "2026-12-05T00:00:00Z".into(),
            published_to: Vec::new(),
        });
        s.save(dir.path()).unwrap();
        let t = State::load(dir.path(), "6.1.0-47-cloud-amd64").unwrap();
        assert_eq!(t.levels, s.levels);
        std::fs::copy(
            dir.path().join("state/6.1.0-47-cloud-amd64.json"),
            dir.path().join("state/6.1.0-48-cloud-amd64.json"),
        )
        .unwrap();
        let e = State::load(dir.path(), "6.1.0-48-cloud-amd64").unwrap_err();
        assert!(format!("{e:#}").contains("the state of 6.1.0-47"), "{e:#}");
        std::fs::write(dir.path().join("state/6.1.0-49-cloud-amd64.json"), "{").unwrap();
        let e = State::load(dir.path(), "6.1.0-49-cloud-amd64").unwrap_err();
        assert!(
            format!("{e:#}").contains("not a release state file"),
            "{e:#}"
        );
    }

    #[test]
    fn only_a_declared_completion_grants_an_effective_version() {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w(
            "catalog.toml",
            "[[completes]]\nversion = \"6.1.192-3\"\nbuilds_from = \"6.1.192-1\"\nfixes = [\"a\", \"b\"]\n",
        );
        for id in ["a", "b", "c"] {
            w(&format!("fixes/{id}/fix.toml"), "description = \"d\"\n");
            w(
                &format!("fixes/{id}/x.patch"),
                "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n",
            );
        }
        let c = Catalog::load(dir.path()).unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        // Both fixes, carried or contained, on a build new enough.
        assert_eq!(
            effective_version(&c, "6.1.192-2", &set(&["b"]), &set(&["a"])).as_deref(),
            Some("6.1.192-3")
        );
        // One missing: a partial level claims nothing.
        assert_eq!(
            effective_version(&c, "6.1.192-2", &set(&["b", "c"]), &set(&[])),
            None
        );
        // Too old a build, though it has both.
        assert_eq!(
            effective_version(&c, "6.1.170-3", &set(&["a", "b"]), &set(&[])),
            None
        );
    }

    #[test]
    fn a_level_is_identified_by_its_fixes_and_version() {
        let a = fixset(&[("a".into(), "1".into())], None);
        assert_eq!(a, fixset(&[("a".into(), "1".into())], None));
        assert_ne!(a, fixset(&[("a".into(), "2".into())], None));
        assert_ne!(a, fixset(&[("a".into(), "1".into())], Some("6.1.192-3")));
        assert_ne!(
            a,
            fixset(&[("a".into(), "1".into()), ("b".into(), "1".into())], None)
        );
    }
}
