//! The patch factory pipeline, one function that reads as the pipeline:
//! kernel workspace → affected objects → compile original and patched
//! (in parallel, two trees) → diff → run-pre match against the kernel's
//! own code → emit → module glue and kbuild link → livepatch conversion
//! → checks → signing → manifest → optional verification in the lab.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use elfdiff::read::Object;
use elfdiff::report::Status;
use elfdiff::Outcome;
use kernel_tree::{AptArchive, Cache, IndexedObject, Target, Workspace, DIFF_CFLAGS};
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
}

impl Progress {
    fn new() -> Self {
        Progress {
            started: Instant::now(),
            phase: Instant::now(),
            phases: Vec::new(),
        }
    }

    fn done(&mut self, phase: &str, detail: impl AsRef<str>) {
        let s = self.phase.elapsed().as_secs_f64();
        eprintln!(
            "[{:>7.2}s] {phase:<9} {} ({s:.2} s)",
            self.started.elapsed().as_secs_f64(),
            detail.as_ref()
        );
        self.phases.push((phase.to_string(), s));
        self.phase = Instant::now();
    }
}

/// Sources the fix touches, sorted into what the build does with them.
struct Affected {
    /// Objects to compile (by object path).
    objects: BTreeMap<String, IndexedObject>,
    /// Per C file, its diff (for line maps).
    line_diffs: HashMap<String, String>,
}

const NOREBOOT_HEADER: &str = include_str!("../include/noreboot/livepatch.h");
/// kpatch's author macros, for fixes written for kpatch
/// (`#include "kpatch-macros.h"`); `elfdiff::markers` reads what they write.
const KPATCH_HEADER: &str = include_str!("../include/kpatch-macros.h");

/// Runs the pipeline.
pub fn build(opts: &Options) -> anyhow::Result<Manifest> {
    let mut progress = Progress::new();
    klp::module::check_patch_name(&opts.name)?;
    for cve in &opts.cves {
        let ok = cve
            .strip_prefix("CVE-")
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(y, n)| {
                y.len() == 4
                    && y.bytes().all(|b| b.is_ascii_digit())
                    && n.len() >= 4
                    && n.bytes().all(|b| b.is_ascii_digit())
            });
        if !ok {
            bail!("--cve {cve:?} is not a CVE identifier (CVE-YYYY-NNNN)");
        }
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    // kbuild and the lab run elsewhere: paths must not be relative.
    let out_dir = std::path::absolute(&opts.out)?;
    let opts = &Options {
        out: out_dir,
        ..opts.clone()
    };
    let work = opts.out.join("work");
    let _ = std::fs::remove_dir_all(&work);

    // 1. Kernel workspace.
    let cache = Cache::from_env()?;
    let archive = AptArchive::new();
    let ws = Workspace::fetch(&cache, &archive, &opts.kernel.parse()?)?;
    ws.check_compiler()?;
    let tree = ws.source_tree(&cache, &archive)?;
    let symbols = ws.symbols(&cache, &archive)?;
    progress.done("workspace", format!("{} ({})", ws.release(), ws.version()));

    // 2. Affected objects.
    let index = tree.index()?;
    let fixes: Vec<Fix> = opts
        .patches
        .iter()
        .map(|p| Fix::read(p, tree.dir()))
        .collect::<anyhow::Result<_>>()?;
    let affected = affected_objects(&fixes, &index, tree.dir(), ws.release().as_str())?;
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

    // 3. Patched tree and compiles, original and patched side by side.
    let scratch = tree.scratch_copy(&opts.name)?;
    for fix in &fixes {
        for f in &fix.files {
            let path = scratch.dir().join(&f.path);
            if path.is_file() {
                let contents = std::fs::read(&path)?;
                scratch.replace_file(&f.path, &contents)?;
            }
        }
        fix.apply(scratch.dir())?;
    }
    let include_dir = tree
        .dir()
        .parent()
        .unwrap_or(tree.dir())
        .join("noreboot-include");
    std::fs::create_dir_all(include_dir.join("noreboot"))?;
    let header = include_dir.join("noreboot/livepatch.h");
    for (header, text) in [
        (header, NOREBOOT_HEADER),
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
    let (orig_dir, patched_dir) = (work.join("orig"), work.join("patched"));
    // The original through kbuild; the patched tree then runs the very
    // commands kbuild used (no second kbuild walking the tree, and the
    // host tools it shares with the original are never rebuilt there).
    let orig_objs = tree
        .compile_objects(&objects, &cflags, cores, &orig_dir)
        .context("compiling the original source")?;
    let patched_objs = scratch
        .compile_like(&tree, &objects, cores, &patched_dir)
        .map_err(|e| {
            let what = if matches!(e, kernel_tree::Error::CompileFailed { .. }) {
                format!(
                    "the fix does not compile against {}'s source (it may need changes from other files of the same change)",
                    ws.release()
                )
            } else {
                "compiling the patched source".to_string()
            };
            anyhow::Error::from(e).context(what)
        })?;
    // Removing the scratch tree takes about a second of file system work:
    // done beside the CPU-bound phases that follow.
    let cleanup = std::thread::spawn(move || drop(scratch));
    progress.done(
        "compile",
        format!(
            "{} object(s), original and patched, {cores} jobs",
            objects.len()
        ),
    );

    // 4. Diff; refusals stop the build.
    let ksyms = klp::KernelSymbols::from_vmlinux(&symbols.vmlinux)?;
    let symvers = klp::Symvers::read(&ws.module_symvers())?;
    // Special sections' entry sizes, where an object alone cannot tell.
    // Unreadable BTF leaves the objects' own layout to tell them; a table
    // that cannot then is refused by name.
    let entry_sizes = elfdiff::layout::from_btf_file(&symbols.vmlinux).unwrap_or_else(|e| {
        eprintln!("noreboot-build: note: entry sizes from the kernel's BTF: {e}");
        Default::default()
    });
    let mut diffs = Vec::new();
    let mut refusals = Vec::new();
    let mut unchanged = Vec::new();
    let mut ignored: Vec<(String, String)> = Vec::new();
    let mut left_out: Vec<(String, NotCarried)> = Vec::new();
    for ((obj, info), (o, p)) in affected
        .objects
        .iter()
        .zip(orig_objs.iter().zip(&patched_objs))
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
        let (c, mut report) = elfdiff::analyse(&orig, &patched, map.as_ref());
        if opts.strict {
            report.make_strict();
        }
        left_out.extend(report.not_carried.iter().map(|n| {
            (
                info.target.name().to_string(),
                NotCarried {
                    object: obj.clone(),
                    subject: n.subject.clone(),
                    rule: n.rule.to_string(),
                    reason: n.reason.clone(),
                },
            )
        }));
        for f in report.names(Status::Ignored) {
            ignored.push((info.target.name().to_string(), format!("{obj}: {f} changed but is marked unchanged by the patch author (NOREBOOT_IGNORE_FUNCTION): the kernel's own copy stays")));
        }
        match report.outcome {
            Outcome::Refused => refusals.extend(
                report
                    .refusals
                    .iter()
                    .map(|r| format!("  {obj}: {}: {}", r.subject, r.reason)),
            ),
            Outcome::NoChange => unchanged.push(obj.clone()),
            Outcome::Changed => diffs.push((obj.clone(), info.clone(), orig, patched, c, report)),
        }
    }
    if !refusals.is_empty() {
        return Err(Stop::Refused(refusals).into());
    }
    if diffs.is_empty() {
        let mut why = format!(
            "nothing of {} that the running kernel uses differs after the fix",
            unchanged.join(", ")
        );
        for (_, n) in &left_out {
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
            diffs.len(),
            unchanged.len()
        ),
    );

    // 5. Run-pre: the original functions are the kernel's own code.
    let vmlinux = runpre::Vmlinux::open(&symbols.vmlinux)?;
    // Each target module's .ko as the distribution shipped it: its symbol
    // table for resolution, its code for run-pre matching.
    let mut modules: HashMap<String, (Object, klp::KernelSymbols)> = HashMap::new();
    let wanted: BTreeSet<&str> = diffs
        .iter()
        .filter_map(|d| match &d.1.target {
            Target::Module(m) => Some(m.as_str()),
            Target::Vmlinux => None,
        })
        .collect();
    if !wanted.is_empty() {
        let index = lab::initramfs::ModuleIndex::new(&ws.modules_dir())?;
        for m in wanted {
            let ko = index
                .path(m)?
                .with_context(|| format!("module {m} is not in {}", ws.modules_dir().display()))?;
            modules.insert(
                m.to_string(),
                (Object::read(&ko)?, klp::KernelSymbols::from_module(&ko)?),
            );
        }
    }
    let mut targets: BTreeMap<String, TargetReport> = BTreeMap::new();
    let mut parts = Vec::new();
    let mut glue_objects: BTreeMap<String, klp::module::PatchObject> = BTreeMap::new();
    let mut alias_count = 0usize;
    for (obj, info, orig, patched, c, report) in &diffs {
        let target = info.target.name().to_string();
        let resolver = match &info.target {
            Target::Vmlinux => klp::KernelResolver::new(&ksyms, &symvers, "vmlinux", orig)?,
            Target::Module(m) => {
                klp::KernelResolver::for_module(&ksyms, &symvers, m, &modules[m].1, orig)?
            }
        };
        // The functions replaced, located in the target: (name, sympos,
        // address or section offset).
        let mut replaced = Vec::new();
        for f in report
            .functions
            .iter()
            .filter(|f| f.status == Status::Changed && !f.fragment)
        {
            let (pos, sym) = resolver
                .replaced(&f.name)
                .with_context(|| format!("{obj}: {} in the running kernel", f.name))?;
            replaced.push((f, pos, sym.address));
        }
        let matched = match &info.target {
            Target::Vmlinux => {
                let at: Vec<(String, u64)> = replaced
                    .iter()
                    .map(|(f, _, a)| (f.name.clone(), *a))
                    .collect();
                runpre::match_vmlinux(orig, &at, &vmlinux)
            }
            Target::Module(m) => {
                let names: Vec<String> = replaced.iter().map(|(f, _, _)| f.name.clone()).collect();
                runpre::match_module(orig, &names, &modules[m].0)
            }
        }
        .with_context(|| format!("run-pre matching {obj}"))?;

        let emitted = elfdiff::emit::emit(orig, patched, c, report, &resolver)
            .with_context(|| format!("emitting the patch object for {obj}"))?;
        let entry =
            glue_objects
                .entry(target.clone())
                .or_insert_with(|| klp::module::PatchObject {
                    name: target.clone(),
                    funcs: Vec::new(),
                    callbacks: BTreeMap::new(),
                });
        let mut aliases = Vec::new();
        let mut functions = Vec::new();
        for &(f, pos, _) in &replaced {
            let new_name = f.patched_name.clone().unwrap_or_else(|| f.name.clone());
            let alias = format!("__noreboot_new_{alias_count}");
            alias_count += 1;
            aliases.push((new_name, alias.clone()));
            entry.funcs.push(klp::module::PatchFunc {
                old_name: f.name.clone(),
                old_sympos: pos,
                new_symbol: alias,
            });
            functions.push((f.name.clone(), pos));
        }
        for (kind, func) in callbacks(patched)? {
            let alias = format!("__noreboot_cb_{alias_count}");
            alias_count += 1;
            aliases.push((func, alias.clone()));
            if entry.callbacks.insert(kind.clone(), alias).is_some() {
                bail!("{obj}: more than one {kind} callback for {target}");
            }
        }
        let bytes = klp::module::add_aliases(&emitted.bytes, &aliases)?;
        parts.push(bytes);
        let t = targets
            .entry(target.clone())
            .or_insert_with(|| TargetReport {
                object: target.clone(),
                functions: Vec::new(),
                new_functions: Vec::new(),
                objects: Vec::new(),
                matched: Vec::new(),
                notes: Vec::new(),
                not_carried: Vec::new(),
            });
        t.notes.extend(
            report
                .notes
                .iter()
                .chain(&emitted.notes)
                .map(|n| format!("{obj}: {n}")),
        );

        t.functions.extend(functions);
        t.new_functions
            .extend(report.names(Status::New).into_iter().map(str::to_string));
        t.objects.push(obj.clone());
        t.matched.extend(matched);
    }
    // Functions the author kept: noted with their target (or the first
    // target, when nothing else of theirs changed).
    for (target, note) in ignored {
        let t = match targets.get_mut(&target) {
            Some(t) => t,
            None => targets.values_mut().next().context("no target")?,
        };
        t.notes.push(note);
    }
    for (target, n) in left_out {
        let t = match targets.get_mut(&target) {
            Some(t) => t,
            None => targets.values_mut().next().context("no target")?,
        };
        t.not_carried.push(n);
    }
    progress.done(
        "match",
        format!(
            "{} function(s) match the kernel's code",
            targets.values().map(|t| t.matched.len()).sum::<usize>()
        ),
    );

    // 6. The module: glue, kbuild link, livepatch conversion, checks.
    let src = work.join("module-src");
    std::fs::create_dir_all(&src)?;
    let glue: Vec<klp::module::PatchObject> = glue_objects.into_values().collect();
    let description = if opts.description.is_empty() {
        format!("noreboot live patch {}", opts.name)
    } else {
        opts.description.clone()
    };
    std::fs::write(
        src.join("noreboot_glue.c"),
        klp::module::glue_source(&opts.name, &description, &glue)?,
    )?;
    let module = opts.name.replace('-', "_");
    let mut kbuild = format!("obj-m := {module}.o\n{module}-y := noreboot_glue.o");
    for (i, bytes) in parts.iter().enumerate() {
        std::fs::write(src.join(format!("part{i}.o_shipped")), bytes)?;
        // modpost reads each object's .cmd file.
        std::fs::write(
            src.join(format!(".part{i}.o.cmd")),
            format!("savedcmd_part{i}.o := noreboot-build diff\n"),
        )?;
        kbuild.push_str(&format!(" part{i}.o"));
    }
    kbuild.push('\n');
    std::fs::write(src.join("Kbuild"), kbuild)?;
    let kos = ws.build_module(&src, &work.join("module"))?;
    let linked = std::fs::read(&kos[0])?;
    // Hosts get the module without debugging information (most of its
    // bytes); the full one stays beside it for crash analysis.
    let full = klp::module::convert(&linked)?;
    let converted = klp::module::convert(&klp::module::strip_debug(&linked)?)?;
    let ko_name = format!("{module}.ko");
    let ko_path = opts.out.join(&ko_name);
    std::fs::write(opts.out.join(format!("{module}.ko.debug")), &full.bytes)?;
    std::fs::write(&ko_path, &converted.bytes)?;
    check_module(&ko_path, ws.release().as_str(), &symvers)?;
    progress.done(
        "module",
        format!(
            "{ko_name}: {} livepatch relocation section(s), {} livepatch symbol(s)",
            converted.sections.len(),
            converted.symbols.len()
        ),
    );

    // 7. Signing.
    let signed = if let Some((key, cert)) = &opts.sign {
        sign_module(&ws, key, cert, &ko_path)?;
        progress.done("sign", format!("signed with {}", cert.display()));
        true
    } else {
        false
    };

    let module_sha = hex_sha256(&std::fs::read(&ko_path)?);
    let mut toolchain = BTreeMap::new();
    toolchain.insert("compiler".into(), ws.identity().compiler.clone());
    toolchain.insert("linker".into(), ws.identity().linker.clone());
    toolchain.insert("noreboot-build".into(), env!("CARGO_PKG_VERSION").into());
    let mut manifest = Manifest {
        name: opts.name.clone(),
        kernel_release: ws.release().to_string(),
        kernel_build_id: ws.identity().build_id.to_string(),
        kernel_version: ws.version().to_string(),
        targets: targets.into_values().collect(),
        cves: opts.cves.clone(),
        description,
        patches: fixes
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
        module: (ko_name, module_sha),
        signed,
        toolchain,
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        phases: Vec::new(),
        verify: None,
    };

    // 8. Verification in a real kernel.
    if opts.verify {
        let report = verify::verify(
            &ws,
            &ko_path,
            &module,
            &manifest,
            &opts.checks,
            &work.join("verify"),
        )?;
        let failed = report.problems.clone();
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
            write_manifest(&opts.out, &manifest)?;
            bail!("verification failed:\n  {}", failed.join("\n  "));
        }
    }
    manifest.phases = progress.phases.clone();
    write_manifest(&opts.out, &manifest)?;
    let _ = cleanup.join();
    eprintln!(
        "[{:>7.2}s] done      {}",
        progress.started.elapsed().as_secs_f64(),
        ko_path.display()
    );
    Ok(manifest)
}

fn write_manifest(out: &Path, m: &Manifest) -> anyhow::Result<()> {
    let path = out.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(m)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Sorts the files a fix touches into objects to compile, refusing what
/// cannot be live patched.
fn affected_objects(
    fixes: &[Fix],
    index: &kernel_tree::BuildIndex,
    tree: &Path,
    release: &str,
) -> anyhow::Result<Affected> {
    let mut objects = BTreeMap::new();
    let mut line_diffs = HashMap::new();
    let mut problems = Vec::new();
    for fix in fixes {
        for f in &fix.files {
            let p = f.path.as_str();
            let ext = Path::new(p)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            if p.starts_with("Documentation/")
                || p.starts_with("tools/")
                || p.starts_with("samples/")
            {
                continue;
            }
            match ext {
                "c" => match index.by_source(p) {
                    Some(o) => {
                        objects.insert(o.object.clone(), o.clone());
                        line_diffs.insert(p.to_string(), f.text.clone());
                    }
                    None if f.created => problems.push(format!(
                        "{}: {p} is a new source file; a live patch can only change files the kernel was built from",
                        fix.file.display()
                    )),
                    None => problems.push(format!(
                        "{}: {p} is not compiled in {release}'s configuration",
                        fix.file.display()
                    )),
                },
                "h" => {
                    if f.created {
                        continue;
                    }
                    let deps = index.dependents(tree, p);
                    if deps.is_empty() {
                        problems.push(format!(
                            "{}: no object of {release}'s configuration includes {p}",
                            fix.file.display()
                        ));
                    }
                    for o in deps {
                        objects.insert(o.object.clone(), o.clone());
                    }
                }
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
    for fix in fixes {
        for f in &fix.files {
            if !seen.insert(f.path.clone()) {
                line_diffs.remove(&f.path);
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if objects.is_empty() {
        bail!("the patches change no C source or header of the kernel");
    }
    Ok(Affected {
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

/// Checks a built module: vermagic names the kernel, the livepatch flag
/// is set, and every undefined symbol is one the kernel exports.
fn check_module(ko: &Path, release: &str, symvers: &klp::Symvers) -> anyhow::Result<()> {
    let fields = lab::initramfs::modinfo(ko)?;
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
fn sign_module(ws: &Workspace, key: &Path, cert: &Path, ko: &Path) -> anyhow::Result<()> {
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
    let out = std::process::Command::new(&sign_file)
        .arg(&hash)
        .arg(key)
        .arg(cert)
        .arg(ko)
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
