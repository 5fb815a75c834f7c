//! The patch factory pipeline. `build` reads as the pipeline, one pass a
//! line, each a function taking what the passes before it made: workspace
//! → affected objects → compile (original and patched) → diff → locate
//! the replaced functions in the running kernel → run-pre match against
//! its code → emit the patch objects → link the module (glue, kbuild,
//! livepatch conversion, checks) → sign → manifest → verify in the lab.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use elfdiff::read::Object;
use elfdiff::report::Status;
use elfdiff::Outcome;
use kernel::module_id::{Marker, ModuleNotes};
use kernel_tree::{AptArchive, Cache, IndexedObject, SourceTree, Target, Workspace, DIFF_CFLAGS};
use sha2::Digest;

use crate::patch::Fix;
use crate::runpre::{self, Matched};
use crate::verify::{self, VerifyReport};

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kernel release.
    pub kernel: String,
    /// The fix as one or more unified diffs, applied in order.
    pub patches: Vec<PathBuf>,
    /// Patch (module) name.
    pub name: String,
    /// CVE identifiers.
    pub cves: Vec<String>,
    /// Free text.
    pub description: String,
    /// Boot the kernel in the lab and load the module.
    pub verify: bool,
    /// Scripts that must fail before and pass after loading.
    pub checks: Vec<PathBuf>,
    /// Key and certificate for module signing.
    pub sign: Option<(PathBuf, PathBuf)>,
    /// Output directory.
    pub out: PathBuf,
    /// Refuse instead of leaving any difference out (init code, line-only
    /// changes, …): the patch carries every difference or is not built.
    pub strict: bool,
    /// No phase lines on stderr (a release runs several builds at once and
    /// shows its own progress); warnings and notes still print.
    pub quiet: bool,
    /// The kernel cache's cap (`--cache-cap`; `Some(0)` is none), else
    /// `NOREBOOT_CACHE_CAP`'s.
    pub cache_cap: Option<u64>,
    /// Keep `<out>/work` (the objects compiled before and after the fix,
    /// the module's source, the guest's files) after the build, whatever
    /// its outcome; without it only the module and manifest remain.
    pub keep_work: bool,
}

/// Why a build stopped without a module, as distinct outcomes.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The fix changes no function the kernel runs.
    #[error("the fix changes no code of this kernel: {0}")]
    NoChange(String),
    /// The fix cannot be applied live.
    #[error("the fix cannot be applied live:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    /// The fix changes only files this kernel's configuration does not
    /// compile (a driver it does not build): nothing to patch here. The
    /// paths, and the message naming each.
    #[error("{message}")]
    NotCompiled {
        /// The C files not compiled.
        files: Vec<String>,
        /// One line per file.
        message: String,
    },
    /// The module was built, and the lab showed it does not work: each
    /// problem seen (the manifest beside it holds the whole report).
    #[error("verification failed:\n  {}", .0.join("\n  "))]
    VerifyFailed(Vec<String>),
}

/// Per target object: what the patch replaces.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    /// `vmlinux` or a module.
    pub object: String,
    /// Functions replaced, with `old_sympos`.
    pub functions: Vec<(String, u32)>,
    /// New functions carried.
    pub new_functions: Vec<String>,
    /// Source objects compiled for it.
    pub objects: Vec<String>,
    /// Run-pre matches.
    pub matched: Vec<Matched>,
    /// What the patch deliberately leaves out, and why.
    pub notes: Vec<String>,
    /// What may keep the patch from taking effect (a replaced function
    /// that is a kernel thread's main loop).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Every difference between the original and patched objects that the
    /// module does not carry, with the rule that allowed it.
    pub not_carried: Vec<NotCarried>,
}

/// One difference the module does not carry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotCarried {
    /// The compiled object it was found in.
    pub object: String,
    /// Function, data or export.
    pub subject: String,
    /// The rule that allowed leaving it out.
    pub rule: String,
    /// What the running kernel keeps, and why that is sound.
    pub reason: String,
}

/// The build's manifest (written as `manifest.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Manifest {
    /// Patch name (module and sysfs name).
    pub name: String,
    /// Kernel release.
    pub kernel_release: String,
    /// GNU build-id of the kernel image.
    pub kernel_build_id: String,
    /// Debian version of the kernel packages.
    pub kernel_version: String,
    /// Targets.
    pub targets: Vec<TargetReport>,
    /// CVE identifiers.
    pub cves: Vec<String>,
    /// Description.
    pub description: String,
    /// (file name, sha256) of each source patch.
    pub patches: Vec<(String, String)>,
    /// The module file name and its sha256.
    pub module: (String, String),
    /// Whether the module is signed.
    pub signed: bool,
    /// Compiler and linker of the kernel (the same ones built the patch).
    pub toolchain: BTreeMap<String, String>,
    /// RFC 3339 UTC build time.
    pub built_at: String,
    /// Seconds per phase.
    pub phases: Vec<(String, f64)>,
    /// Verification in the lab.
    pub verify: Option<VerifyReport>,
}

/// Phase timings, printed to stderr as they finish.
struct Progress {
    started: Instant,
    phase: Instant,
    phases: Vec<(String, f64)>,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress {
            started: Instant::now(),
            phase: Instant::now(),
            phases: Vec::new(),
            quiet,
        }
    }

    /// A line within the current phase, which goes on timing.
    fn note(&self, what: &str, detail: impl AsRef<str>) {
        eprintln!(
            "[{:>7.2}s] {what:<9} {}",
            self.started.elapsed().as_secs_f64(),
            detail.as_ref()
        );
    }

    fn done(&mut self, phase: &str, detail: impl AsRef<str>) {
        let s = self.phase.elapsed().as_secs_f64();
        if !self.quiet {
            eprintln!(
                "[{:>7.2}s] {phase:<9} {} ({s:.2} s)",
                self.started.elapsed().as_secs_f64(),
                detail.as_ref()
            );
        }
        self.phases.push((phase.to_string(), s));
        self.phase = Instant::now();
    }
}

const NOREBOOT_HEADER: &str = include_str!("../include/noreboot/livepatch.h");
/// kpatch's author macros, for fixes written for kpatch
/// (`#include "kpatch-macros.h"`); `elfdiff::markers` reads what they write.
const KPATCH_HEADER: &str = include_str!("../include/kpatch-macros.h");

/// Runs the pipeline ([`passes`]), then removes the work directory unless
/// asked to keep it.
pub fn build(opts: &Options) -> anyhow::Result<Manifest> {
    let built = passes(opts);
    if !opts.keep_work {
        // What is left of a failed removal is only scratch space.
        let _ = std::fs::remove_dir_all(opts.out.join("work"));
    }
    built
}

/// The pipeline: one pass per line, each taking what the ones before it
/// made and timed under its own name.
fn passes(opts: &Options) -> anyhow::Result<Manifest> {
    let mut progress = Progress::new(opts.quiet);
    let opts = &checked_options(opts)?;
    let kernel = workspace(opts, &mut progress)?;
    let affected = affected(opts, &kernel, &mut progress)?;
    let compiled = compile(opts, &kernel, &affected, &mut progress)?;
    let diffs = diff(opts, &kernel, &affected, &compiled, &mut progress)?;
    let modules = target_modules(&kernel, &diffs)?;
    let located = locate(&kernel, &diffs, &modules)?;
    let matched = run_pre(opts, &kernel, &located, &mut progress)?;
    let parts = emit(&located, &mut progress)?;
    let module = link(opts, &kernel, &parts, &mut progress)?;
    let signed = sign(opts, &kernel, &module, &mut progress)?;
    let mut manifest = manifest(
        opts, &kernel, &affected, &diffs, &parts, matched, &module, signed,
    )?;
    verify_in_lab(opts, &kernel, &module, &mut manifest, &mut progress)?;
    manifest.phases = progress.phases.clone();
    write_manifest(&opts.out, &manifest)?;
    let _ = compiled.cleanup.join();
    if !opts.quiet {
        eprintln!(
            "[{:>7.2}s] done      {}",
            progress.started.elapsed().as_secs_f64(),
            module.path.display()
        );
    }
    Ok(manifest)
}

/// The options with the name and CVE ids checked, the output directory
/// made absolute (kbuild and the lab run elsewhere) and its work directory
/// emptied.
fn checked_options(opts: &Options) -> anyhow::Result<Options> {
    klp::module::check_patch_name(&opts.name)?;
    for cve in &opts.cves {
        if !bundle::manifest::is_cve_id(cve) {
            bail!("--cve {cve:?} is not a CVE identifier (CVE-YYYY-NNNN, 4 to 19 digits in the last part)");
        }
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let opts = Options {
        out: std::path::absolute(&opts.out)?,
        ..opts.clone()
    };
    let _ = std::fs::remove_dir_all(opts.out.join("work"));
    Ok(opts)
}

/// Pass 1: the cached kernel workspace, its prepared source and symbols.
struct Kernel {
    ws: Workspace,
    tree: SourceTree,
    symbols: kernel_tree::SymbolTable,
    ksyms: klp::KernelSymbols,
    symvers: klp::Symvers,
}

fn workspace(opts: &Options, progress: &mut Progress) -> anyhow::Result<Kernel> {
    let cache = Cache::from_env_with_cap(opts.cache_cap)?;
    // noreboot's own view of Debian 12 and 13, whatever the host runs.
    let archive = AptArchive::debian(&cache)?;
    let fetched = Workspace::fetch_reporting(&cache, &archive, &opts.kernel.parse()?)?;
    match &fetched.eviction {
        Some(e) if !e.fits() => eprintln!("warning: kernel cache over its cap: {e}"),
        Some(e) if !e.evicted.is_empty() => progress.note("cache", e.to_string()),
        _ => {}
    }
    let ws = fetched.workspace;
    ws.check_compiler()?;
    let tree = ws.source_tree(&cache, &archive)?;
    let symbols = ws.symbols(&cache, &archive)?;
    let ksyms = klp::KernelSymbols::from_vmlinux(&symbols.vmlinux)?;
    let symvers = klp::Symvers::read(&ws.module_symvers())?;
    progress.done("workspace", format!("{} ({})", ws.release(), ws.version()));
    Ok(Kernel {
        ws,
        tree,
        symbols,
        ksyms,
        symvers,
    })
}

/// Pass 2: the fixes, and the objects they touch.
struct Affected {
    fixes: Vec<Fix>,
    /// Objects to compile (by object path).
    objects: BTreeMap<String, IndexedObject>,
    /// Per C file, its diff (for line maps).
    line_diffs: HashMap<String, String>,
}

fn affected(opts: &Options, k: &Kernel, progress: &mut Progress) -> anyhow::Result<Affected> {
    let index = k.tree.index()?;
    let fixes: Vec<Fix> = opts
        .patches
        .iter()
        .map(|p| Fix::read(p, k.tree.dir()))
        .collect::<anyhow::Result<_>>()?;
    let affected = affected_objects(fixes, &index, k.tree.dir(), k.ws.release().as_str())?;
    progress.done(
        "affected",
        format!(
            "{} object(s): {}",
            affected.objects.len(),
            affected
                .objects
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    Ok(affected)
}

/// Pass 3: each affected object compiled from the original and the
/// patched source.
struct Compiled {
    orig: Vec<PathBuf>,
    patched: Vec<PathBuf>,
    /// Removing the scratch tree takes about a second of file system work:
    /// done beside the CPU-bound passes that follow.
    cleanup: std::thread::JoinHandle<()>,
}

fn compile(
    opts: &Options,
    k: &Kernel,
    affected: &Affected,
    progress: &mut Progress,
) -> anyhow::Result<Compiled> {
    let scratch = k.tree.scratch_copy(&opts.name)?;
    for fix in &affected.fixes {
        for f in &fix.files {
            let path = scratch.dir().join(&f.path);
            if path.is_file() {
                let contents = std::fs::read(&path)?;
                scratch.replace_file(&f.path, &contents)?;
            }
        }
        fix.apply(scratch.dir())?;
    }
    let include_dir = k
        .tree
        .dir()
        .parent()
        .unwrap_or(k.tree.dir())
        .join("noreboot-include");
    std::fs::create_dir_all(include_dir.join("noreboot"))?;
    for (header, text) in [
        (include_dir.join("noreboot/livepatch.h"), NOREBOOT_HEADER),
        (include_dir.join("kpatch-macros.h"), KPATCH_HEADER),
    ] {
        if std::fs::read_to_string(&header).ok().as_deref() != Some(text) {
            std::fs::write(&header, text)?;
        }
    }
    let cflags = format!("{DIFF_CFLAGS} -I{}", include_dir.display());
    let objects: Vec<&str> = affected.objects.keys().map(String::as_str).collect();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let work = opts.out.join("work");
    // The original through kbuild; the patched tree then runs the very
    // commands kbuild used (no second kbuild walking the tree, and the
    // host tools it shares with the original are never rebuilt there).
    let orig = k
        .tree
        .compile_objects(&objects, &cflags, cores, &work.join("orig"))
        .context("compiling the original source")?;
    let patched = scratch
        .compile_like(&orig, &objects, cores, &work.join("patched"))
        .map_err(|e| {
            let what = if matches!(e, kernel_tree::Error::CompileFailed { .. }) {
                format!(
                    "the fix does not compile against {}'s source (it may need changes from other files of the same change)",
                    k.ws.release()
                )
            } else {
                "compiling the patched source".to_string()
            };
            anyhow::Error::from(e).context(what)
        })?;
    let cleanup = std::thread::spawn(move || drop(scratch));
    let orig = orig.paths;
    progress.done(
        "compile",
        format!(
            "{} object(s), original and patched, {cores} jobs",
            objects.len()
        ),
    );
    Ok(Compiled {
        orig,
        patched,
        cleanup,
    })
}

/// One changed object: what the differ found and what it rests on.
struct ObjectDiff {
    object: String,
    info: IndexedObject,
    orig: Object,
    patched: Object,
    correlation: elfdiff::correlate::Correlation,
    report: elfdiff::Report,
}

/// Pass 4: the differ over every compiled pair; refusals stop the build.
struct Diffs {
    changed: Vec<ObjectDiff>,
    /// (target, note) for functions the author kept.
    ignored: Vec<(String, String)>,
    /// (target, difference) the module does not carry.
    left_out: Vec<(String, NotCarried)>,
    /// (target, warning) about replaced functions.
    warnings: Vec<(String, String)>,
}

/// Calls that mark a function as a kernel thread's main loop.
const KTHREAD_LOOP_CALLS: [&str; 2] = ["kthread_should_stop", "kthread_freezable_should_stop"];

/// Replaced functions that look like a kernel thread's main loop (they
/// ask whether the thread should stop): a thread sleeping in one never
/// leaves it, so the transition cannot finish while the thread runs.
fn kthread_loops(patched: &Object, report: &elfdiff::Report) -> Vec<String> {
    report
        .functions
        .iter()
        .filter(|f| f.status == Status::Changed && !f.fragment && !f.left_out)
        .filter(|f| {
            patched.section_by_name(&f.section).is_some_and(|s| {
                patched
                    .section(s)
                    .relocs
                    .iter()
                    .any(|r| KTHREAD_LOOP_CALLS.contains(&patched.symbol(r.symbol).name.as_str()))
            })
        })
        .map(|f| f.name.clone())
        .collect()
}

fn diff(
    opts: &Options,
    k: &Kernel,
    affected: &Affected,
    compiled: &Compiled,
    progress: &mut Progress,
) -> anyhow::Result<Diffs> {
    // Special sections' entry sizes, where an object alone cannot tell.
    // Unreadable BTF leaves the objects' own layout to tell them; a table
    // that cannot then is refused by name.
    let entry_sizes = elfdiff::layout::from_btf_file(&k.symbols.vmlinux).unwrap_or_else(|e| {
        eprintln!("noreboot-build: note: entry sizes from the kernel's BTF: {e}");
        Default::default()
    });
    let mut out = Diffs {
        changed: Vec::new(),
        ignored: Vec::new(),
        left_out: Vec::new(),
        warnings: Vec::new(),
    };
    let mut refusals = Vec::new();
    let mut unchanged = Vec::new();
    for ((obj, info), (o, p)) in affected
        .objects
        .iter()
        .zip(compiled.orig.iter().zip(&compiled.patched))
    {
        let mut orig = Object::read(o)?;
        let mut patched = Object::read(p)?;
        orig.entry_sizes = entry_sizes.clone();
        patched.entry_sizes = entry_sizes.clone();
        let map = match affected.line_diffs.get(&info.source) {
            Some(d) => Some(
                elfdiff::lines::LineMap::from_unified_diff(d)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", info.source))?,
            ),
            None => None,
        };
        let (correlation, mut report) = elfdiff::analyse(&orig, &patched, map.as_ref());
        if opts.strict {
            report.make_strict();
        }
        let target = info.target.name().to_string();
        out.left_out.extend(report.not_carried.iter().map(|n| {
            (
                target.clone(),
                NotCarried {
                    object: obj.clone(),
                    subject: n.subject.clone(),
                    rule: n.rule.to_string(),
                    reason: n.reason.clone(),
                },
            )
        }));
        for f in report.names(Status::Ignored) {
            out.ignored.push((target.clone(), format!("{obj}: {f} changed but is marked unchanged by the patch author (NOREBOOT_IGNORE_FUNCTION): the kernel's own copy stays")));
        }
        match report.outcome {
            Outcome::Refused => refusals.extend(
                report
                    .refusals
                    .iter()
                    .map(|r| format!("  {obj}: {}: {}", r.subject, r.reason)),
            ),
            Outcome::NoChange => unchanged.push(obj.clone()),
            Outcome::Changed => {
                for f in kthread_loops(&patched, &report) {
                    let w = format!(
                        "{obj}: {f} looks like a kernel thread's main loop (it calls kthread_should_stop): a thread sleeping in it never returns, so the transition cannot finish while that thread runs; if so, leave its change out with NOREBOOT_IGNORE_FUNCTION({f}) or move the change into a function the loop calls"
                    );
                    eprintln!("noreboot-build: warning: {w}");
                    out.warnings.push((target.clone(), w));
                }
                out.changed.push(ObjectDiff {
                    object: obj.clone(),
                    info: info.clone(),
                    orig,
                    patched,
                    correlation,
                    report,
                })
            }
        }
    }
    if !refusals.is_empty() {
        return Err(Stop::Refused(refusals).into());
    }
    if out.changed.is_empty() {
        let mut why = format!(
            "nothing of {} that the running kernel uses differs after the fix",
            unchanged.join(", ")
        );
        for (_, n) in &out.left_out {
            why.push_str(&format!(
                "\n  not carried ({}) {}: {}: {}",
                n.rule, n.object, n.subject, n.reason
            ));
        }
        return Err(Stop::NoChange(why).into());
    }
    progress.done(
        "diff",
        format!(
            "{} changed object(s), {} unchanged",
            out.changed.len(),
            unchanged.len()
        ),
    );
    Ok(out)
}

/// Pass 5: the replaced functions found in the running kernel — each
/// changed object with its resolver and, per replaced function, its
/// `sympos` and address (section offset in a module) — and each target
/// module as the distribution shipped it.
struct Located<'a> {
    objects: Vec<LocatedObject<'a>>,
    vmlinux: runpre::Vmlinux<'a>,
}

struct LocatedObject<'a> {
    diff: &'a ObjectDiff,
    resolver: klp::KernelResolver<'a>,
    /// (function, sympos, address).
    replaced: Vec<(&'a elfdiff::report::FunctionReport, u32, u64)>,
    /// The target module's `.ko`, for run-pre matching.
    module: Option<&'a Object>,
}

/// Each target module's `.ko` as the distribution shipped it: its symbol
/// table for resolution, its code for run-pre matching.
/// Per target module: its `.ko`, its symbols, the modules it depends on.
type Modules = HashMap<String, (Object, klp::KernelSymbols, Vec<String>)>;

fn target_modules(k: &Kernel, diffs: &Diffs) -> anyhow::Result<Modules> {
    let mut modules = Modules::new();
    let wanted: BTreeSet<&str> = diffs
        .changed
        .iter()
        .filter_map(|d| match &d.info.target {
            Target::Module(m) => Some(m.as_str()),
            Target::Vmlinux => None,
        })
        .collect();
    if !wanted.is_empty() {
        let index = kernel_tree::modules::ModuleIndex::new(&k.ws.modules_dir())?;
        for m in wanted {
            let ko = index.path(m)?.with_context(|| {
                format!("module {m} is not in {}", k.ws.modules_dir().display())
            })?;
            let syms = module_symbols(k, &ko)?;
            modules.insert(
                m.to_string(),
                (
                    Object::read(&ko)?,
                    syms,
                    kernel_tree::modules::module_depends(&ko)?,
                ),
            );
        }
    }
    Ok(modules)
}

/// A target module's symbols, grouped by object file: Debian strips its
/// modules of the `STT_FILE` symbols that tell whose a static is, so the
/// debug copy of the module from the `-dbg` package is read instead when
/// it holds exactly the same symbols in the same order (then every
/// position and `sympos` is the installed module's). Without a usable
/// copy, the installed module's table is used and statics are placed by
/// where they sit (`KernelSymbols::with_object_block`).
fn module_symbols(k: &Kernel, ko: &Path) -> anyhow::Result<klp::KernelSymbols> {
    let syms = klp::KernelSymbols::from_module(ko)?;
    if syms.has_object_blocks() {
        return Ok(syms);
    }
    let Ok(rel) = ko.strip_prefix(k.ws.modules_dir()) else {
        return Ok(syms);
    };
    let cache = k.ws.cache();
    let archive = AptArchive::debian(cache)?;
    let debug = match k
        .ws
        .module_debug_file(cache, &archive, &rel.to_string_lossy())
    {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(syms),
        Err(e) => {
            eprintln!(
                "noreboot-build: note: no debug copy of {} ({e}); its statics are placed by position",
                rel.display()
            );
            return Ok(syms);
        }
    };
    let full = klp::KernelSymbols::from_module(&debug)?;
    if full.has_object_blocks() && full.same_symbols(&syms) {
        Ok(full)
    } else {
        eprintln!(
            "noreboot-build: note: the debug copy of {} does not hold the module's symbols; its statics are placed by position",
            rel.display()
        );
        Ok(syms)
    }
}

fn locate<'a>(
    k: &'a Kernel,
    diffs: &'a Diffs,
    modules: &'a Modules,
) -> anyhow::Result<Located<'a>> {
    let mut objects = Vec::new();
    for d in &diffs.changed {
        let (resolver, module) = match &d.info.target {
            Target::Vmlinux => (
                klp::KernelResolver::new(&k.ksyms, &k.symvers, "vmlinux", &d.orig)?,
                None,
            ),
            Target::Module(m) => (
                klp::KernelResolver::for_module(&k.ksyms, &k.symvers, m, &modules[m].1, &d.orig)?
                    .with_depends(modules[m].2.clone()),
                Some(&modules[m].0),
            ),
        };
        let mut replaced = Vec::new();
        for f in d
            .report
            .functions
            .iter()
            .filter(|f| f.status == Status::Changed && !f.fragment && !f.left_out)
        {
            let (pos, sym) = resolver
                .replaced(&f.name)
                .with_context(|| format!("{}: {} in the running kernel", d.object, f.name))?;
            replaced.push((f, pos, sym.address));
        }
        objects.push(LocatedObject {
            diff: d,
            resolver,
            replaced,
            module,
        });
    }
    Ok(Located {
        objects,
        vmlinux: runpre::Vmlinux::open(&k.symbols.vmlinux)?,
    })
}

/// Pass 6 (run-pre): each replaced function, compiled from the original
/// source, is the running kernel's own code. Returns the matches per
/// object, in the order of `located`.
///
/// The originals are compiled with function sections; where that alone
/// moves code (gcc aligns loops relative to the section, and a function
/// with its own section starts elsewhere relative to an alignment
/// boundary than in the kernel's `.text`: 6.12+deb13's `crypto/ecc.o`),
/// the object is compiled once more exactly as the kernel's build did and
/// matched again, byte for byte: the source, configuration and compiler
/// are still proven the kernel's.
fn run_pre(
    opts: &Options,
    k: &Kernel,
    located: &Located,
    progress: &mut Progress,
) -> anyhow::Result<Vec<Vec<Matched>>> {
    let match_one = |l: &LocatedObject, orig: &Object| -> anyhow::Result<Vec<Matched>> {
        match l.module {
            None => {
                let at: Vec<(String, u64)> = l
                    .replaced
                    .iter()
                    .map(|(f, _, a)| (f.name.clone(), *a))
                    .collect();
                runpre::match_vmlinux(orig, &at, &located.vmlinux)
            }
            Some(ko) => {
                let at: Vec<(String, u64)> = l
                    .replaced
                    .iter()
                    .map(|(f, _, a)| (f.name.clone(), *a))
                    .collect();
                runpre::match_module(orig, &at, ko)
            }
        }
    };
    let mut out = Vec::new();
    let mut recompiled = 0;
    for l in &located.objects {
        let matched = match match_one(l, &l.diff.orig) {
            Ok(m) => m,
            Err(first) => {
                let dir = opts.out.join("work").join("orig-as-built");
                std::fs::create_dir_all(&dir)?;
                let path = dir.join(l.diff.object.replace('/', "_"));
                k.tree.compile(&l.diff.object, "", &path).with_context(|| {
                    format!("compiling {} as the kernel's build did", l.diff.object)
                })?;
                let as_built = Object::read(&path)?;
                recompiled += 1;
                match_one(l, &as_built)
                    .map_err(|_| first)
                    .with_context(|| format!("run-pre matching {}", l.diff.object))?
            }
        };
        out.push(matched);
    }
    let again = if recompiled > 0 {
        format!(" ({recompiled} object(s) compiled again without function sections to match)")
    } else {
        String::new()
    };
    progress.done(
        "match",
        format!(
            "{} function(s) match the kernel's code{again}",
            out.iter().map(Vec::len).sum::<usize>()
        ),
    );
    Ok(out)
}

/// Pass 7: the patch object of each changed object, with global aliases
/// for what the glue names, and the glue's view of each target.
struct Parts {
    /// Emitted objects, ready to link.
    objects: Vec<Vec<u8>>,
    /// Per target: functions replaced and callbacks, for the glue.
    glue: BTreeMap<String, klp::module::PatchObject>,
    /// Per changed object (in order): the emitter's notes.
    notes: Vec<Vec<String>>,
    /// Kernel exports the patch module links against.
    exports: BTreeSet<String>,
}

fn emit(located: &Located, progress: &mut Progress) -> anyhow::Result<Parts> {
    let mut parts = Parts {
        objects: Vec::new(),
        glue: BTreeMap::new(),
        notes: Vec::new(),
        exports: BTreeSet::new(),
    };
    let mut alias_count = 0usize;
    for l in &located.objects {
        let d = l.diff;
        let target = d.info.target.name().to_string();
        let emitted =
            elfdiff::emit::emit(&d.orig, &d.patched, &d.correlation, &d.report, &l.resolver)
                .with_context(|| format!("emitting the patch object for {}", d.object))?;
        parts.exports.extend(emitted.exports.iter().cloned());
        let entry = parts
            .glue
            .entry(target.clone())
            .or_insert_with(|| klp::module::PatchObject {
                name: target.clone(),
                funcs: Vec::new(),
                callbacks: BTreeMap::new(),
            });
        let mut aliases = Vec::new();
        for &(f, pos, _) in &l.replaced {
            let new_name = f.patched_name.clone().unwrap_or_else(|| f.name.clone());
            let alias = format!("__noreboot_new_{alias_count}");
            alias_count += 1;
            aliases.push((new_name, alias.clone()));
            entry.funcs.push(klp::module::PatchFunc {
                old_name: f.name.clone(),
                old_sympos: pos,
                new_symbol: alias,
            });
        }
        for (kind, func) in callbacks(&d.patched)? {
            let alias = format!("__noreboot_cb_{alias_count}");
            alias_count += 1;
            aliases.push((func, alias.clone()));
            if entry.callbacks.insert(kind.clone(), alias).is_some() {
                bail!("{}: more than one {kind} callback for {target}", d.object);
            }
        }
        parts
            .objects
            .push(klp::module::add_aliases(&emitted.bytes, &aliases)?);
        parts.notes.push(emitted.notes);
    }
    progress.done(
        "emit",
        format!(
            "{} patch object(s), {} function(s) replaced",
            parts.objects.len(),
            parts.glue.values().map(|g| g.funcs.len()).sum::<usize>()
        ),
    );
    Ok(parts)
}

/// Pass 8: the module — glue, kbuild link, livepatch conversion, checks.
struct Module {
    /// Module (and sysfs) name.
    name: String,
    path: PathBuf,
    description: String,
}

fn link(
    opts: &Options,
    k: &Kernel,
    parts: &Parts,
    progress: &mut Progress,
) -> anyhow::Result<Module> {
    let work = opts.out.join("work");
    let src = work.join("module-src");
    std::fs::create_dir_all(&src)?;
    let glue: Vec<klp::module::PatchObject> = parts.glue.values().cloned().collect();
    let description = if opts.description.is_empty() {
        format!("noreboot live patch {}", opts.name)
    } else {
        opts.description.clone()
    };
    let module = opts.name.replace('-', "_");
    let marker = marker(&module, k, parts);
    std::fs::write(
        src.join("noreboot_glue.c"),
        klp::module::glue_source(
            &opts.name,
            &description,
            &marker,
            &glue,
            &export_namespaces(&k.symvers, &parts.exports),
        )?,
    )?;
    let mut kbuild = format!("obj-m := {module}.o\n{module}-y := noreboot_glue.o");
    for (i, bytes) in parts.objects.iter().enumerate() {
        // The object itself, not a `part{i}.o_shipped` copied by kbuild's
        // rule: from 6.13 kbuild builds external modules with `obj` = `.`,
        // and its `$(obj)/%: $(src)/%_shipped` rule then names `./part0.o`,
        // which does not match the `part0.o` the module needs. A file with
        // no rule to remake it is used as it is, in every version.
        std::fs::write(src.join(format!("part{i}.o")), bytes)?;
        // modpost reads each object's .cmd file.
        std::fs::write(
            src.join(format!(".part{i}.o.cmd")),
            format!("savedcmd_part{i}.o := noreboot-build diff\n"),
        )?;
        kbuild.push_str(&format!(" part{i}.o"));
    }
    kbuild.push('\n');
    std::fs::write(src.join("Kbuild"), kbuild)?;
    let kos = k.ws.build_module(&src, &work.join("module"))?;
    let linked = std::fs::read(&kos[0])?;
    // Hosts get the module without debugging information (most of its
    // bytes); the full one stays beside it for crash analysis.
    let full = klp::module::convert(&linked)?;
    let converted = klp::module::convert(&klp::module::strip_debug(&linked)?)?;
    let ko_name = format!("{module}.ko");
    let path = opts.out.join(&ko_name);
    std::fs::write(opts.out.join(format!("{module}.ko.debug")), &full.bytes)?;
    std::fs::write(&path, &converted.bytes)?;
    check_module(&path, k.ws.release().as_str(), &k.symvers, &marker)?;
    progress.done(
        "module",
        format!(
            "{ko_name}: {} livepatch relocation section(s), {} livepatch symbol(s)",
            converted.sections.len(),
            converted.symbols.len()
        ),
    );
    Ok(Module {
        name: module,
        path,
        description,
    })
}

/// The module's marker: its name, the kernel it is for, and a digest of
/// what it carries (each patch object and the glue's tables). It depends
/// only on the module's contents, so a rebuild of the same fix is the same
/// build, and another edit under the same name is another.
fn marker(module: &str, k: &Kernel, parts: &Parts) -> Marker {
    let mut h = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"noreboot marker 1");
    field(module.as_bytes());
    field(k.ws.identity().build_id.as_bytes());
    for o in parts.glue.values() {
        field(o.name.as_bytes());
        for f in &o.funcs {
            field(f.old_name.as_bytes());
            field(&f.old_sympos.to_le_bytes());
            field(f.new_symbol.as_bytes());
        }
        for (kind, sym) in &o.callbacks {
            field(kind.as_bytes());
            field(sym.as_bytes());
        }
    }
    for object in &parts.objects {
        field(object);
    }
    Marker {
        patch: module.to_string(),
        kernel: k.ws.identity().build_id.to_string(),
        build: hex::encode(h.finalize()),
    }
}

/// Pass 9 (optional): module signing with the kernel's sign-file.
fn sign(
    opts: &Options,
    k: &Kernel,
    module: &Module,
    progress: &mut Progress,
) -> anyhow::Result<bool> {
    let Some((key, cert)) = &opts.sign else {
        return Ok(false);
    };
    sign_module(&k.ws, k.tree.toolchain(), key, cert, &module.path)?;
    progress.done("sign", format!("signed with {}", cert.display()));
    Ok(true)
}

/// The manifest: what was built, for which kernel, from what, and what it
/// replaces, leaves out and matched, per target.
#[allow(clippy::too_many_arguments)]
fn manifest(
    opts: &Options,
    k: &Kernel,
    affected: &Affected,
    diffs: &Diffs,
    parts: &Parts,
    matched: Vec<Vec<Matched>>,
    module: &Module,
    signed: bool,
) -> anyhow::Result<Manifest> {
    let mut targets: BTreeMap<String, TargetReport> = BTreeMap::new();
    for ((d, notes), matched) in diffs.changed.iter().zip(&parts.notes).zip(matched) {
        let target = d.info.target.name().to_string();
        let t = targets
            .entry(target.clone())
            .or_insert_with(|| TargetReport {
                object: target.clone(),
                functions: Vec::new(),
                new_functions: Vec::new(),
                objects: Vec::new(),
                matched: Vec::new(),
                notes: Vec::new(),
                warnings: Vec::new(),
                not_carried: Vec::new(),
            });
        t.notes.extend(
            d.report
                .notes
                .iter()
                .chain(notes)
                .map(|n| format!("{}: {n}", d.object)),
        );
        t.new_functions
            .extend(d.report.names(Status::New).into_iter().map(str::to_string));
        t.objects.push(d.object.clone());
        t.matched.extend(matched);
    }
    for g in parts.glue.values() {
        if let Some(t) = targets.get_mut(&g.name) {
            t.functions
                .extend(g.funcs.iter().map(|f| (f.old_name.clone(), f.old_sympos)));
        }
    }
    // What the author kept and what the module leaves out: with their
    // target, or the first target when nothing else of theirs changed.
    for (target, note) in &diffs.ignored {
        let t = match targets.get_mut(target) {
            Some(t) => t,
            None => targets.values_mut().next().context("no target")?,
        };
        t.notes.push(note.clone());
    }
    for (target, w) in &diffs.warnings {
        if let Some(t) = targets.get_mut(target) {
            t.warnings.push(w.clone());
        }
    }
    for (target, n) in &diffs.left_out {
        let t = match targets.get_mut(target) {
            Some(t) => t,
            None => targets.values_mut().next().context("no target")?,
        };
        t.not_carried.push(n.clone());
    }
    let mut toolchain = BTreeMap::new();
    toolchain.insert("compiler".into(), k.ws.identity().compiler.clone());
    toolchain.insert("linker".into(), k.ws.identity().linker.clone());
    toolchain.insert("noreboot-build".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(root) = k.tree.toolchain().build_root() {
        toolchain.insert("build-root".into(), format!("debian {}", root.name()));
    }
    Ok(Manifest {
        name: opts.name.clone(),
        kernel_release: k.ws.release().to_string(),
        kernel_build_id: k.ws.identity().build_id.to_string(),
        kernel_version: k.ws.version().to_string(),
        targets: targets.into_values().collect(),
        cves: opts.cves.clone(),
        description: module.description.clone(),
        patches: affected
            .fixes
            .iter()
            .map(|f| {
                (
                    f.file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    hex_sha256(&f.bytes),
                )
            })
            .collect(),
        module: (
            format!("{}.ko", module.name),
            hex_sha256(&std::fs::read(&module.path)?),
        ),
        signed,
        toolchain,
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        phases: Vec::new(),
        verify: None,
    })
}

/// Pass 10 (optional): boot the kernel in the lab, load the module, run
/// the checks. A failed verification still writes the manifest, with the
/// report, before the build fails.
fn verify_in_lab(
    opts: &Options,
    k: &Kernel,
    module: &Module,
    manifest: &mut Manifest,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if !opts.verify {
        return Ok(());
    }
    let report = verify::verify(
        &k.ws,
        &module.path,
        &module.name,
        manifest,
        &opts.checks,
        &opts.out.join("work/verify"),
    )?;
    let failed = report.problems.clone();
    for n in &report.not_exercised {
        eprintln!("noreboot-build: note: not exercised in the lab: {n}");
    }
    for n in &report.before_patch {
        eprintln!("noreboot-build: note: before the patch loaded (not counted against it): {n}");
    }
    progress.done(
        "verify",
        format!(
            "transition {:.2} s, {} check(s), {}",
            report.transition_seconds,
            report.checks.len(),
            if failed.is_empty() {
                "no problems".to_string()
            } else {
                failed.join("; ")
            }
        ),
    );
    manifest.verify = Some(report);
    if !failed.is_empty() {
        manifest.phases = progress.phases.clone();
        write_manifest(&opts.out, manifest)?;
        return Err(Stop::VerifyFailed(failed).into());
    }
    Ok(())
}

fn write_manifest(out: &Path, m: &Manifest) -> anyhow::Result<()> {
    let path = out.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(m)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Sorts the files a fix touches into objects to compile, refusing what
/// cannot be live patched.
fn affected_objects(
    fixes: Vec<Fix>,
    index: &kernel_tree::BuildIndex,
    tree: &Path,
    release: &str,
) -> anyhow::Result<Affected> {
    let mut objects = BTreeMap::new();
    let mut line_diffs = HashMap::new();
    let mut problems = Vec::new();
    let mut not_compiled = Vec::new();
    for fix in &fixes {
        for f in &fix.files {
            let p = f.path.as_str();
            let ext = Path::new(p)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            // Documentation, samples, and the host programs kbuild builds
            // the kernel with (scripts/: modpost, kallsyms, …): none of it
            // runs in the kernel.
            if p.starts_with("Documentation/")
                || p.starts_with("samples/")
                || p.starts_with("scripts/")
            {
                continue;
            }
            // tools/ is user space, except what the kernel compiles from
            // it (kernel/bpf/relo_core.o is built from
            // tools/lib/bpf/relo_core.c): only that counts.
            let tools = p.starts_with("tools/");
            match ext {
                "c" => match index.by_source(p) {
                    Some(o) => {
                        objects.insert(o.object.clone(), o.clone());
                        line_diffs.insert(p.to_string(), f.text.clone());
                    }
                    None if tools => {}
                    None if f.created => problems.push(format!(
                        "{}: {p} is a new source file; a live patch can only change files the kernel was built from",
                        fix.file.display()
                    )),
                    None => {
                        not_compiled.push(p.to_string());
                        problems.push(format!(
                            "{}: {p} is not compiled in {release}'s configuration",
                            fix.file.display()
                        ))
                    }
                },
                "h" => {
                    if f.created {
                        continue;
                    }
                    let deps = index.dependents(tree, p);
                    if deps.is_empty() && !tools {
                        problems.push(format!(
                            "{}: no object of {release}'s configuration includes {p}",
                            fix.file.display()
                        ));
                    }
                    for o in deps {
                        objects.insert(o.object.clone(), o.clone());
                    }
                }
                _ if tools => {}
                "S" | "s" => problems.push(format!(
                    "{}: {p} is assembly; noreboot live patches C functions only",
                    fix.file.display()
                )),
                _ => problems.push(format!(
                    "{}: {p} is not C source or a header (build files and configuration cannot change in a running kernel)",
                    fix.file.display()
                )),
            }
        }
    }
    // A C file's diff may be spread over several patches: the line map
    // needs one diff per file, so several are not used for line maps.
    let mut seen = BTreeSet::new();
    for fix in &fixes {
        for f in &fix.files {
            if !seen.insert(f.path.clone()) {
                line_diffs.remove(&f.path);
            }
        }
    }
    if !problems.is_empty() && problems.len() == not_compiled.len() {
        return Err(Stop::NotCompiled {
            files: not_compiled,
            message: problems.join("\n"),
        }
        .into());
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if objects.is_empty() {
        return Err(Stop::NoChange(
            "the patches change no C source or header the kernel runs (documentation, samples and build tools under scripts/ are not part of it)".into(),
        )
        .into());
    }
    Ok(Affected {
        fixes,
        objects,
        line_diffs,
    })
}

/// Callbacks the author declared with the macros of
/// `<noreboot/livepatch.h>` or kpatch's: (kind, function symbol).
fn callbacks(patched: &Object) -> anyhow::Result<Vec<(String, String)>> {
    Ok(elfdiff::markers::callbacks(patched)
        .with_context(|| format!("reading the callbacks of {}", patched.path.display()))?
        .into_iter()
        .map(|c| (c.kind, c.function))
        .collect())
}

/// The symbol namespaces of `exports` (sorted, each once).
fn export_namespaces(symvers: &klp::Symvers, exports: &BTreeSet<String>) -> Vec<String> {
    let set: BTreeSet<&str> = exports
        .iter()
        .filter_map(|e| symvers.get(e))
        .map(|e| e.namespace.as_str())
        .filter(|ns| !ns.is_empty())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

/// Checks a built module: vermagic names the kernel, the livepatch flag
/// is set, and every undefined symbol is one the kernel exports.
fn check_module(
    ko: &Path,
    release: &str,
    symvers: &klp::Symvers,
    marker: &Marker,
) -> anyhow::Result<()> {
    // Hosts tell this module from any other of its name by the marker the
    // kernel shows for it: it must have come through kbuild and the
    // livepatch conversion as an allocated note.
    let bytes = std::fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let notes = ModuleNotes::from_module(&bytes).with_context(|| ko.display().to_string())?;
    match notes.marker() {
        Some(Ok(m)) if m == *marker => {}
        Some(Ok(m)) => bail!(
            "{}: the module's marker is {m}, expected {marker}",
            ko.display()
        ),
        Some(Err(e)) => bail!("{}: {e}", ko.display()),
        None => bail!(
            "{}: the module lost its {} note",
            ko.display(),
            kernel::module_id::MARKER_SECTION
        ),
    }
    let fields = kernel_tree::modules::modinfo(ko)?;
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let vermagic = field("vermagic").context("the module has no vermagic")?;
    if vermagic.split_whitespace().next() != Some(release) {
        bail!(
            "{}: vermagic {vermagic:?} does not name {release}",
            ko.display()
        );
    }
    if field("livepatch") != Some("Y") {
        bail!("{}: modinfo lacks livepatch=Y", ko.display());
    }
    let m = Object::read(ko)?;
    let mut missing = Vec::new();
    for s in &m.symbols {
        if s.is_undefined()
            && !s.name.is_empty()
            && s.st_shndx != klp::names::SHN_LIVEPATCH
            && symvers.get(&s.name).is_none()
        {
            missing.push(s.name.clone());
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: undefined symbols the kernel does not export: {}",
            ko.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Signs with the kernel tree's sign-file (hash from the kernel's config).
/// Signs `ko` with the kernel's own `scripts/sign-file`, run where the
/// kernel's build commands run (a build root's binary may not run on the
/// host), with the key, certificate and module bound at their paths.
fn sign_module(
    ws: &Workspace,
    toolchain: &kernel_tree::buildroot::Toolchain,
    key: &Path,
    cert: &Path,
    ko: &Path,
) -> anyhow::Result<()> {
    let hash = ws
        .config_value("CONFIG_MODULE_SIG_HASH")?
        .unwrap_or_else(|| "sha256".into())
        .trim_matches('"')
        .to_string();
    let sign_file = ["scripts/sign-file"]
        .iter()
        .map(|p| ws.headers_dir().join(p))
        .find(|p| p.is_file())
        .context("the kernel headers have no scripts/sign-file")?;
    let (key, cert, ko) = (
        std::path::absolute(key)?,
        std::path::absolute(cert)?,
        std::path::absolute(ko)?,
    );
    let dir = ko.parent().unwrap_or(Path::new("/")).to_path_buf();
    let binds: Vec<&Path> = [
        ws.dir(),
        dir.as_path(),
        key.parent().unwrap_or(Path::new("/")),
        cert.parent().unwrap_or(Path::new("/")),
    ]
    .into_iter()
    .collect();
    let mut cmd = toolchain.command(&sign_file.to_string_lossy(), &dir, &binds);
    let out = cmd
        .arg(&hash)
        .arg(&key)
        .arg(&cert)
        .arg(&ko)
        .output()
        .with_context(|| format!("running {}", sign_file.display()))?;
    if !out.status.success() {
        bail!(
            "signing {} failed: {}",
            ko.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Lowercase hex SHA-256.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}
