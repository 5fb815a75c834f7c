//! `noreboot-build`, the live patch factory: `noreboot-build --kernel R
//! --patch FIX --name N -o OUT` turns a kernel fix into a livepatch module
//! for that exact kernel (see `factory`); `noreboot-build diff ORIG.o
//! PATCHED.o` exposes the object differ alone; `noreboot-build keygen` and
//! `noreboot-build bundle` make signing keys and signed bundle files from
//! the factory's output (see `bundling`). Errors become exit codes in
//! `exit_code` only.

mod bundling;
mod catalog;
mod factory;
mod patch;
mod plan;
mod publish;
mod release;
mod runpre;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use elfdiff::{read::Object, Outcome};

#[derive(Parser)]
#[command(
    name = "noreboot-build",
    version,
    about = "Build live patches for running Linux kernels"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    build: BuildArgs,
}

/// Build a live patch module from a kernel fix.
///
/// Exit status: 0 built, 3 the fix changes no code, 4 refused (cannot be
/// applied live; the reasons are printed), 5 the fix does not compile
/// against this kernel's source (the compiler's first errors are printed),
/// 6 built but `--verify` failed (each problem is printed, e.g. the tasks
/// a transition waits for), 1 error, 2 usage.
#[derive(clap::Args)]
struct BuildArgs {
    /// The exact kernel release the patch is for.
    #[arg(long, value_name = "RELEASE")]
    kernel: Option<String>,
    /// The fix as a unified diff against the kernel source (repeatable,
    /// applied in order).
    #[arg(long = "patch", value_name = "FIX.patch")]
    patches: Vec<PathBuf>,
    /// Name of the patch: the module and /sys/kernel/livepatch/<name>.
    #[arg(long)]
    name: Option<String>,
    /// CVE fixed (repeatable).
    #[arg(long = "cve", value_name = "CVE-YYYY-NNNN")]
    cves: Vec<String>,
    /// What the patch fixes.
    #[arg(long, default_value = "")]
    description: String,
    /// Boot the kernel in the lab, load the module, run the checks.
    #[arg(long)]
    verify: bool,
    /// A shell script run in the guest with --verify: it must fail before
    /// the patch is loaded and pass after (repeatable).
    #[arg(long = "check", value_name = "SCRIPT", requires = "verify")]
    checks: Vec<PathBuf>,
    /// Private key to sign the module with (Secure Boot hosts).
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// Certificate for --sign-key.
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// Output directory: the .ko and manifest.json.
    #[arg(short = 'o', long, value_name = "OUTDIR")]
    out: Option<PathBuf>,
    /// Keep OUTDIR/work: the objects compiled before and after the fix,
    /// the patch module's source and the guest's files (removed by
    /// default, whatever the outcome).
    #[arg(long)]
    keep_work: bool,
    /// Refuse when any difference would be left out of the module (init
    /// and exit code, line-only changes, author-ignored functions, …)
    /// instead of listing it as not carried.
    #[arg(long)]
    strict: bool,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// On a compile failure, also print the full compiler command line.
    #[arg(long)]
    verbose: bool,
    /// Keep the kernel workspaces under this much disk (40G, 500M, 1.5T,
    /// bytes; 0 = no cap), evicting the least recently used before a fetch
    /// [default: $NOREBOOT_CACHE_CAP, else no cap]
    #[arg(long, value_name = "SIZE", value_parser = kernel_tree::size::parse_size)]
    cache_cap: Option<u64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare an object before and after a fix, function by function.
    ///
    /// Exit status: 0 changed (a patch can carry it), 3 no change,
    /// 4 refused (the report says why; also input of a kind not compared,
    /// such as LLVM bitcode, and a special section whose entry size is
    /// unknown), 1 error, 2 usage.
    Diff(DiffArgs),
    /// Check a fix catalog (docs/catalog.md) and list its fixes: every
    /// entry is validated, and an error names the file and the field.
    ///
    /// Exit status: 0 valid, 1 invalid or unreadable, 2 usage.
    Catalog {
        /// The catalog directory (holding fixes/ and catalog.toml).
        dir: PathBuf,
        /// Print the catalog as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Plan a release of a fix catalog across kernel builds: for each
    /// build and each fix, whether the build's own Debian source already
    /// contains it, whether it applies (with offsets or fuzz, listed),
    /// conflicts (the failing hunks), touches files the build lacks, or is
    /// for another series. Reads only the builds' source packages.
    ///
    /// Exit status: 0 planned, 1 error, 2 usage.
    Plan {
        /// The catalog directory.
        #[arg(long, value_name = "DIR")]
        catalog: PathBuf,
        /// A kernel build (repeatable), e.g. 6.1.0-47-cloud-amd64.
        #[arg(
            long = "kernel",
            value_name = "RELEASE",
            required_unless_present = "kernels"
        )]
        kernel: Vec<String>,
        /// Every cloud build the archive offers for a Debian release:
        /// `debian12-cloud` (6.1 and 6.12+deb12) or `debian13-cloud`
        /// (6.12+deb13 and the backports).
        #[arg(long, value_name = "SET", conflicts_with = "kernel")]
        kernels: Option<String>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a fix catalog as cumulative patch levels, one per kernel
    /// build: each build's level carries every fix that applies to it
    /// (see `plan`), built and verified in a guest of that build with the
    /// fixes' check scripts, signed with the effective version only a
    /// declared completion grants, optionally published. A level that
    /// would carry what the build's newest level carries is not built
    /// again; state per build lives in DIR/state/<release>.json, so a
    /// killed run is simply started again. One build's job
    /// (`--kernel K`) can run alone, anywhere (docs/catalog.md).
    ///
    /// Exit status: 0 every build released or up to date, 1 a build
    /// failed (the summary says which and why) or an error, 2 usage.
    Release(ReleaseArgs),
    /// Make a bundle signing key pair: DIR/noreboot.key (secret, mode 0600)
    /// and DIR/noreboot.pub, in minisign's formats.
    ///
    /// Exit status: 0 made, 1 error (e.g. the files exist), 2 usage.
    Keygen {
        /// Directory for the key files (created if missing).
        #[arg(short = 'o', long, value_name = "DIR")]
        out: PathBuf,
        /// Replace an existing key pair.
        #[arg(long)]
        force: bool,
    },
    /// Sign the factory's output as a bundle file for one patch level.
    ///
    /// Exit status: 0 written, 1 error, 2 usage.
    Bundle {
        /// The factory's output directory (its manifest.json and module).
        #[arg(long, value_name = "OUTDIR")]
        from: PathBuf,
        /// Patch level, from 1; level N carries every fix of earlier levels.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        level: u32,
        /// The secret key (from `noreboot-build keygen` or `minisign -G -W`).
        #[arg(long, value_name = "SECRET.key")]
        key: PathBuf,
        /// The package version the patched kernel amounts to, for
        /// vulnerability scanners (e.g. 6.1.192-3).
        #[arg(long, value_name = "VERSION")]
        effective_version: Option<String>,
        /// Describe one CVE (repeatable); CVEs without one are described by
        /// the patch description.
        #[arg(
            long = "cve-description",
            value_name = "CVE=TEXT",
            value_parser = bundling::parse_cve_description
        )]
        cve_descriptions: Vec<(String, String)>,
        /// The bundle file [default: OUTDIR/<name>-<level>.nrb].
        #[arg(short = 'o', long, value_name = "FILE.nrb")]
        output: Option<PathBuf>,
        /// Print the bundle's manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct DiffArgs {
    /// The object compiled from the original source.
    orig: PathBuf,
    /// The object compiled from the patched source.
    patched: PathBuf,
    /// The fix as a unified diff of the compiled source file: shifted
    /// `__LINE__` numbers are then recognised exactly.
    #[arg(long, value_name = "DIFF")]
    lines_from: Option<PathBuf>,
    /// Write the patch object (changed and new functions, their data and
    /// special-section entries, livepatch relocation records) here.
    #[arg(short = 'o', long, value_name = "OUT.o", requires = "kernel_symbols")]
    output: Option<PathBuf>,
    /// The kernel's symbols: a System.map, or an unstripped vmlinux
    /// (whose object-file grouping resolves duplicate statics).
    #[arg(
        long,
        value_name = "FILE",
        group = "kernel_symbols",
        requires = "symvers"
    )]
    symbols: Option<PathBuf>,
    /// The kernel's Module.symvers (exports; may be empty).
    #[arg(long, value_name = "FILE")]
    symvers: Option<PathBuf>,
    /// A cached kernel workspace release: its -dbg vmlinux and
    /// Module.symvers are used.
    #[arg(long, value_name = "RELEASE", group = "kernel_symbols")]
    kernel: Option<String>,
    /// The patched object is part of this target: vmlinux or a module.
    #[arg(long, default_value = "vmlinux")]
    object_of: String,
    /// Refuse instead of leaving any difference out (see the factory's
    /// --strict).
    #[arg(long)]
    strict: bool,
    /// The entry size of a special section, for objects whose kernel is
    /// not at hand (repeatable): a table with a single entry cannot
    /// reveal it, e.g. `.parainstructions=16` (sizeof(struct
    /// paravirt_patch_site)). With --kernel, or --symbols naming a
    /// vmlinux, sizes come from the kernel's BTF; this overrides them.
    #[arg(long = "entry-size", value_name = "SECTION=BYTES", value_parser = parse_entry_size)]
    entry_sizes: Vec<(String, u64)>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ReleaseArgs {
    /// The catalog directory.
    #[arg(long, value_name = "DIR")]
    catalog: PathBuf,
    /// A kernel build (repeatable), e.g. 6.1.0-47-cloud-amd64.
    #[arg(long = "kernel", value_name = "RELEASE", required_unless_present_any = ["kernels", "kernels_from_server"])]
    kernel: Vec<String>,
    /// Every cloud build the archive offers for a Debian release:
    /// `debian12-cloud` or `debian13-cloud`.
    #[arg(long, value_name = "SET", conflicts_with_all = ["kernel", "kernels_from_server"])]
    kernels: Option<String>,
    /// The builds the hosts of this noreboot-server run (its admin API,
    /// with --token-file).
    #[arg(long, value_name = "URL", conflicts_with = "kernel")]
    kernels_from_server: Option<String>,
    /// The bundle signing key (noreboot-build keygen).
    #[arg(long, value_name = "SECRET.key")]
    key: PathBuf,
    /// Where levels are built and bundles written [default: DIR/out].
    #[arg(short = 'o', long, value_name = "OUT")]
    out: Option<PathBuf>,
    /// Builds run at once [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Publish each new level to this noreboot-server (admin API).
    #[arg(long, value_name = "URL")]
    publish: Option<String>,
    /// Release published levels to this feed (repeatable).
    #[arg(long = "feed", value_name = "FEED", requires = "publish")]
    feeds: Vec<String>,
    /// A file holding the server's admin token [default: $NOREBOOT_ADMIN_TOKEN].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificates the server's certificate must chain to.
    #[arg(long, value_name = "CA.pem")]
    server_ca: Option<PathBuf>,
    /// Keep the kernel workspaces under this much disk (as the
    /// factory's --cache-cap): builds released earlier in the run are
    /// evicted first [default: $NOREBOOT_CACHE_CAP, else no cap]
    #[arg(long, value_name = "SIZE", value_parser = kernel_tree::size::parse_size)]
    cache_cap: Option<u64>,
    /// Print the outcomes as JSON.
    #[arg(long)]
    json: bool,
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        return run_build(cli.build);
    };
    match command {
        Cmd::Catalog { dir, json } => {
            let c = catalog::Catalog::load(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print!("{}", catalog::table(&c));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan {
            catalog,
            kernel,
            kernels,
            json,
        } => {
            let c = catalog::Catalog::load(&catalog)?;
            let cache = kernel_tree::Cache::from_env()?;
            let archive = kernel_tree::AptArchive::debian(&cache)?;
            let builds = builds(&archive, &kernel, kernels.as_deref(), None)?;
            let work = cache
                .root()
                .join("tmp")
                .join(format!("plan-{}", std::process::id()));
            let plans = plan::plan(&cache, &archive, &c, &builds, &work);
            let _ = std::fs::remove_dir_all(&work);
            let plans = plans?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plans)?);
            } else {
                print!("{}", plan::table(&c, &plans));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Release(a) => release_cmd(a),
        Cmd::Keygen { out, force } => {
            let key = bundling::keygen(&out, force)?;
            println!(
                "wrote {} (secret) and {}: key {}",
                out.join(bundling::SECRET_KEY_FILE).display(),
                out.join(bundling::PUBLIC_KEY_FILE).display(),
                key.key_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bundle {
            from,
            level,
            key,
            effective_version,
            cve_descriptions,
            output,
            json,
        } => {
            let (path, b) = bundling::bundle(&bundling::BundleOptions {
                from,
                level,
                key,
                effective_version,
                cve_descriptions,
                out: output,
            })?;
            let m = b.manifest();
            if json {
                println!("{}", serde_json::to_string_pretty(m)?);
            } else {
                println!(
                    "wrote {}: {} level {} for {} ({} byte module, sha256 {}), signed by key {}",
                    path.display(),
                    m.name,
                    m.level,
                    m.kernel.release,
                    m.module.size,
                    m.module.sha256,
                    b.key_id()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Diff(a) => diff_cmd(a),
    }
}

/// `diff`: compare two objects; with `-o`, emit the patch object.
fn diff_cmd(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let DiffArgs {
        orig,
        patched,
        lines_from,
        output,
        symbols,
        symvers,
        kernel,
        object_of,
        strict,
        entry_sizes,
        json,
    } = a;
    let (mut o, mut p) = match (Object::read(&orig), Object::read(&patched)) {
        (Ok(o), Ok(p)) => (o, p),
        (Err(e), _) | (_, Err(e)) => return refuse_or_fail(e.into()),
    };
    let map = match &lines_from {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                elfdiff::lines::LineMap::from_unified_diff(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let (c, mut report) = elfdiff::analyse(&o, &p, map.as_ref());
    if strict {
        report.make_strict();
    }
    let mut emitted = None;
    if let (Some(out), Outcome::Changed) = (&output, report.outcome) {
        let (ksyms, exports, vmlinux) =
            kernel_symbols(symbols.as_deref(), symvers.as_deref(), kernel.as_deref())?;
        let mut sizes = match &vmlinux {
            Some(v) => elfdiff::layout::from_btf_file(v)?,
            None => Default::default(),
        };
        sizes.extend(entry_sizes);
        o.entry_sizes = sizes.clone();
        p.entry_sizes = sizes;
        let resolver = klp::KernelResolver::new(&ksyms, &exports, &object_of, &o)?;
        let e = match elfdiff::emit::emit(&o, &p, &c, &report, &resolver) {
            Ok(e) => e,
            Err(e) => return refuse_or_fail(e.into()),
        };
        std::fs::write(out, &e.bytes).with_context(|| format!("writing {}", out.display()))?;
        emitted = Some(e);
    }
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(e) = &emitted {
            v["emitted"] = serde_json::json!({
                "functions": e.functions,
                "exports": e.exports,
                "livepatch": e.livepatch.iter().map(|(o, n, p)| serde_json::json!({"object": o, "name": n, "sympos": p})).collect::<Vec<_>>(),
                "special": e.special.iter().map(|(n, k, t)| serde_json::json!({"section": n, "kept": k, "of": t})).collect::<Vec<_>>(),
            });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{report}");
        if let (Some(e), Some(out)) = (&emitted, &output) {
            println!(
                "wrote {}: {} functions, {} exported and {} livepatch references; {}",
                out.display(),
                e.functions.len(),
                e.exports.len(),
                e.livepatch.len(),
                e.special
                    .iter()
                    .map(|(n, k, t)| format!("{n} {k}/{t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(ExitCode::from(match report.outcome {
        Outcome::Changed => 0,
        Outcome::NoChange => 3,
        Outcome::Refused => 4,
    }))
}

/// `release`: plan the catalog for the builds, build, verify, sign and
/// optionally publish each build's level.
fn release_cmd(a: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let ReleaseArgs {
        catalog,
        kernel,
        kernels,
        kernels_from_server,
        key,
        out,
        jobs,
        publish,
        feeds,
        token_file,
        server_ca,
        cache_cap,
        json,
    } = a;
    let c = catalog::Catalog::load(&catalog)?;
    let token = || -> anyhow::Result<String> {
        let t = match &token_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?,
            None => std::env::var("NOREBOOT_ADMIN_TOKEN").map_err(|_| {
                anyhow::anyhow!(
                    "the server needs an admin token: --token-file FILE or NOREBOOT_ADMIN_TOKEN"
                )
            })?,
        };
        Ok(t.trim().to_string())
    };
    // Fail on a bad key now, not after the first build.
    bundle::SecretKey::read(&key).with_context(|| format!("--key {}", key.display()))?;
    let from_server = match &kernels_from_server {
        Some(url) => Some(publish::Client::new(url, &token()?, server_ca.as_deref())?),
        None => None,
    };
    let target = match publish {
        Some(url) => Some(publish::Target {
            url,
            token: token()?,
            feeds,
            ca: server_ca.clone(),
        }),
        None => None,
    };
    let cache = kernel_tree::Cache::from_env()?;
    let archive = kernel_tree::AptArchive::debian(&cache)?;
    let builds = builds(&archive, &kernel, kernels.as_deref(), from_server.as_ref())?;
    let out = out.unwrap_or_else(|| catalog.join("out"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    eprintln!("release: planning {} builds", builds.len());
    let work = out.join("plan");
    let plans = plan::plan(&cache, &archive, &c, &builds, &work)?;
    let opts = release::Options {
        catalog: c,
        out,
        key,
        jobs: jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |j| j as usize,
        ),
        publish: target,
        cache_cap,
    };
    let outcomes = release::release(&opts, &plans);
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        print!("{}", release::table(&opts.catalog, &outcomes));
    }
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} builds failed (the summary says why)",
            outcomes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The kernel builds named by `--kernel` (each checked against what the
/// archive offers), `--kernels SET`, or a server's reported builds: each
/// with its Debian version.
fn builds(
    archive: &kernel_tree::AptArchive,
    kernel: &[String],
    set: Option<&str>,
    server: Option<&publish::Client>,
) -> anyhow::Result<Vec<(kernel_tree::Release, String)>> {
    let available = kernel_tree::discover::all_available_releases(archive, "cloud-amd64")?;
    if let Some(set) = set {
        let debian = match set {
            "debian12-cloud" => 12,
            "debian13-cloud" => 13,
            other => {
                anyhow::bail!("--kernels {other:?}: the sets are debian12-cloud and debian13-cloud")
            }
        };
        return Ok(available
            .iter()
            .filter(|(r, _)| {
                // `+debN` ABIs say which release they are for; the stable
                // release's own kernel does not (6.1.0-47 is Debian 12's).
                r.debian_release().or(match r.series() {
                    "6.1" => Some(12),
                    "5.10" => Some(11),
                    _ => None,
                }) == Some(debian)
            })
            .map(|(r, v)| (r.clone(), v.to_string()))
            .collect());
    }
    let named: Vec<String> = match server {
        Some(c) => {
            let reported = c.reported()?;
            for r in &reported {
                eprintln!(
                    "release: the fleet runs {} ({}) on {} hosts, newest level {}",
                    r.release,
                    r.version,
                    r.hosts,
                    r.newest_level.map_or("none".into(), |l| l.to_string())
                );
            }
            let mut names: Vec<String> = reported.into_iter().map(|r| r.release).collect();
            names.sort();
            names.dedup();
            names
        }
        None => kernel.to_vec(),
    };
    named
        .iter()
        .map(|k| {
            let r: kernel_tree::Release = k.parse()?;
            let v = available
                .iter()
                .find(|(a, _)| *a == r)
                .map(|(_, v)| v.to_string())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "kernel {k}: the archive offers no complete build of that release (noreboot-lab releases lists them)"
                    )
                })?;
            Ok((r, v))
        })
        .collect()
}

fn run_build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let (Some(kernel), Some(name), Some(out)) = (a.kernel, a.name, a.out) else {
        anyhow::bail!(
            "usage: noreboot-build --kernel RELEASE --patch FIX.patch --name NAME -o OUTDIR (or noreboot-build diff; see --help)"
        );
    };
    if a.patches.is_empty() {
        anyhow::bail!("no --patch given");
    }
    let opts = factory::Options {
        kernel,
        patches: a.patches,
        name,
        cves: a.cves,
        description: a.description,
        verify: a.verify,
        checks: a.checks,
        sign: a.sign_key.zip(a.sign_cert),
        out,
        strict: a.strict,
        quiet: false,
        cache_cap: a.cache_cap,
        keep_work: a.keep_work,
    };
    let manifest = factory::build(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        for t in &manifest.targets {
            println!(
                "{}: replaces {}",
                t.object,
                t.functions
                    .iter()
                    .map(|(f, p)| if *p == 0 {
                        f.clone()
                    } else {
                        format!("{f},{p}")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            for n in &t.not_carried {
                println!(
                    "  not carried ({}) {}: {}: {}",
                    n.rule, n.object, n.subject, n.reason
                );
            }
        }
        println!(
            "wrote {} and manifest.json to {}",
            manifest.module.0,
            opts.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `noreboot-build diff`'s answer to an error: input that is well formed
/// but cannot be patched — an object of a kind not compared (another
/// machine, LLVM bitcode), a special section whose entries the object does
/// not delimit — is a refusal with its reason (exit 4); anything else is a
/// tool error.
fn refuse_or_fail(err: anyhow::Error) -> anyhow::Result<ExitCode> {
    let hint = match err.downcast_ref::<elfdiff::emit::EmitError>() {
        Some(elfdiff::emit::EmitError::UnknownLayout(section)) => {
            let section = section.trim_end_matches(" (output)");
            Some(format!(
                "; give the size of one entry with --entry-size {section}=BYTES (sizeof the kernel's structure for that table), or the kernel with --kernel"
            ))
        }
        _ => None,
    };
    let unsupported = matches!(
        err.downcast_ref::<elfdiff::Error>(),
        Some(elfdiff::Error::Unsupported { .. })
    );
    if hint.is_none() && !unsupported {
        return Err(err);
    }
    println!("refused: {err:#}{}", hint.unwrap_or_default());
    Ok(ExitCode::from(4))
}

/// Parses `--entry-size SECTION=BYTES`.
fn parse_entry_size(arg: &str) -> Result<(String, u64), String> {
    elfdiff::layout::parse_entry_size(arg).map_err(|e| e.to_string())
}

/// The kernel's symbols and exports from explicit files or a workspace,
/// and the kernel's vmlinux when there is one (its BTF knows the special
/// sections' entry sizes).
fn kernel_symbols(
    symbols: Option<&std::path::Path>,
    symvers: Option<&std::path::Path>,
    kernel: Option<&str>,
) -> anyhow::Result<(klp::KernelSymbols, klp::Symvers, Option<PathBuf>)> {
    if let Some(release) = kernel {
        let cache = kernel_tree::Cache::from_env()?;
        let archive = kernel_tree::AptArchive::debian(&cache)?;
        let ws = kernel_tree::Workspace::fetch(&cache, &archive, &release.parse()?)?;
        let table = ws.symbols(&cache, &archive)?;
        return Ok((
            klp::KernelSymbols::from_vmlinux(&table.vmlinux)?,
            klp::Symvers::read(&ws.module_symvers())?,
            Some(table.vmlinux.clone()),
        ));
    }
    let (Some(sym), Some(sv)) = (symbols, symvers) else {
        anyhow::bail!("--output needs --kernel, or --symbols with --symvers");
    };
    let head = std::fs::read(sym).with_context(|| format!("reading {}", sym.display()))?;
    let (ksyms, vmlinux) = if head.starts_with(b"\x7fELF") {
        (
            klp::KernelSymbols::from_vmlinux(sym)?,
            Some(sym.to_path_buf()),
        )
    } else {
        (
            klp::KernelSymbols::from_system_map(sym, &String::from_utf8_lossy(&head))?,
            None,
        )
    };
    Ok((ksyms, klp::Symvers::read(sv)?, vmlinux))
}

/// The one place errors become exit codes.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<bundling::Usage>().is_some() {
        return 2;
    }
    // Well-formed input that cannot be patched is a refusal, wherever it
    // is met: an object of a kind not compared, a special section whose
    // entries neither the object nor the kernel delimits.
    let unpatchable = matches!(
        err.downcast_ref::<elfdiff::Error>(),
        Some(elfdiff::Error::Unsupported { .. })
    ) || matches!(
        err.downcast_ref::<elfdiff::emit::EmitError>(),
        Some(elfdiff::emit::EmitError::UnknownLayout(_) | elfdiff::emit::EmitError::Refused(_))
    );
    if err.chain().any(|c| {
        matches!(
            c.downcast_ref::<kernel_tree::Error>(),
            Some(kernel_tree::Error::CompileFailed { .. })
        )
    }) {
        return 5;
    }
    match err.downcast_ref::<factory::Stop>() {
        Some(factory::Stop::NoChange(_)) => 3,
        Some(factory::Stop::Refused(_)) => 4,
        Some(factory::Stop::VerifyFailed(_)) => 6,
        // As before the variant existed: an error naming each file.
        Some(factory::Stop::NotCompiled { .. }) => 1,
        None if unpatchable => 4,
        None => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.build.verbose;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("noreboot-build: error: {e:#}");
            if let Some(kernel_tree::Error::CompileFailed { command, .. }) = e
                .chain()
                .find_map(|c| c.downcast_ref::<kernel_tree::Error>())
            {
                if verbose {
                    eprintln!("the command was: {command}");
                } else {
                    eprintln!("(--verbose prints the compiler command)");
                }
            }
            ExitCode::from(exit_code(&e))
        }
    }
}
