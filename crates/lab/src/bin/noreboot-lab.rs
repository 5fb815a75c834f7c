//! `noreboot-lab`: boot real distribution kernels in QEMU from the command
//! line. Fetches kernel workspaces (evicting least recently used ones under
//! the cache's cap), shows and trims the kernel cache, runs commands in
//! guests, and runs the live-patch demo. Errors are mapped to exit codes in
//! `exit_code` only.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kernel_tree::size::{format_size, parse_size};
use kernel_tree::{discover, evict, AptArchive, Cache, Release, Workspace};
use lab::{GuestConfig, LabError};

#[derive(Parser)]
#[command(
    name = "noreboot-lab",
    version,
    about = "Boot real distribution kernels in QEMU for noreboot's tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct KernelArg {
    /// Kernel release, e.g. 6.1.0-47-cloud-amd64 [default: $NOREBOOT_KERNEL,
    /// else the pinned release, else the oldest one the archive offers]
    #[arg(long, short = 'k')]
    kernel: Option<String>,
    #[command(flatten)]
    cap: CacheCapArg,
}

#[derive(clap::Args, Clone)]
struct CacheCapArg {
    /// Keep the kernel workspaces under this much disk (40G, 500M, 1.5T,
    /// bytes; 0 = no cap), evicting the least recently used before a fetch
    /// [default: $NOREBOOT_CACHE_CAP, else no cap]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    cache_cap: Option<u64>,
}

impl CacheCapArg {
    fn cache(&self) -> anyhow::Result<Cache> {
        Ok(Cache::from_env_with_cap(self.cache_cap)?)
    }
}

#[derive(Subcommand)]
enum CacheCmd {
    /// Each workspace with its size, last use and whether a process uses
    /// it now (least recently used, the next to be evicted, first); the
    /// total and the cap. The default.
    Status,
    /// Evict least recently used workspaces not in use now, until the
    /// kernel cache fits under --to (default: the cap), and remove what
    /// interrupted fetches and evictions left.
    Evict {
        /// The size to fit under [default: the cap].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        to: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// List the kernel releases Debian's archive (Debian 12 and 13, with
    /// security and backports suites) offers completely, with the suite
    /// each comes from.
    Releases(ReleasesArgs),
    /// Download and unpack a kernel workspace; print its paths and identity.
    Fetch(FetchArgs),
    /// The kernel cache: `status` (the default) or `evict`.
    Cache {
        #[command(subcommand)]
        action: Option<CacheCmd>,
        /// The cap to show and evict to (40G, 500M, 1.5T, bytes; 0 = no
        /// cap) [default: $NOREBOOT_CACHE_CAP, else no cap]
        #[arg(long, value_name = "SIZE", value_parser = parse_size, global = true)]
        cache_cap: Option<u64>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Read release, GNU build-id and compiler from a kernel image (bzImage).
    Identify {
        /// The image, e.g. /boot/vmlinuz-6.1.0-47-cloud-amd64.
        image: PathBuf,
    },
    /// Boot a guest, run a command, print its output, exit with its status.
    Run(RunArgs),
    /// Print the path of a source tarball of the kernel's series: its own
    /// version's, or another Debian version's (downloaded into the cache
    /// through the private apt view): what fixes between two versions are
    /// made from.
    Source {
        #[command(flatten)]
        kernel: KernelArg,
        /// A Debian version of the same source package, e.g. 6.1.192-3.
        #[arg(long)]
        version: Option<String>,
    },
    /// Run kbuild's make in the kernel's prepared source tree (prepared
    /// first if needed) the way noreboot does: with the kernel's exact
    /// compiler (in a build root when the host lacks it) and noreboot's
    /// make variables, holding the tree's lock (a factory run on the same
    /// kernel waits). Exits with make's status.
    Make {
        #[command(flatten)]
        kernel: KernelArg,
        /// make's arguments (targets, -j, KCFLAGS=...), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the project's live patch fixture, boot the kernel, and show
    /// /proc/cmdline before, during and after the live patch.
    Demo(DemoArgs),
    /// Boot the lab's Debian 12 host (systemd, openssh-server; its image
    /// built into the cache first if missing) with the kernel, print how
    /// long building and booting took, run a command over SSH, power off.
    Debian(DebianArgs),
}

#[derive(clap::Args)]
struct DebianArgs {
    #[command(flatten)]
    kernel: KernelArg,
    /// Boot this many times (the figures of each boot are printed).
    #[arg(long, default_value_t = 1)]
    boots: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// A command to run over SSH after each boot (a shell command line).
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    kernel: KernelArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    kernel: KernelArg,
    /// User-mode networking (the host's loopback is 10.0.2.2).
    #[arg(long)]
    net: bool,
    /// Load a module of the kernel at boot (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// Copy a host file in: HOST[:GUEST] (default guest path /root/NAME).
    #[arg(long = "file", value_name = "HOST[:GUEST]")]
    files: Vec<String>,
    /// Copy a host executable and its libraries in: HOST[:GUEST].
    #[arg(long = "bin", value_name = "HOST[:GUEST]")]
    bins: Vec<String>,
    /// Seconds the command may run.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the serial console to stderr afterwards.
    #[arg(long)]
    console: bool,
    /// Print a JSON result instead of the command's output.
    #[arg(long)]
    json: bool,
    /// The command (a shell command line).
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct FetchArgs {
    #[command(flatten)]
    kernel: KernelArg,
    /// Also fetch the full symbol table (the -dbg package).
    #[arg(long)]
    symbols: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ReleasesArgs {
    /// Upstream series, e.g. 6.1, 6.12 or 7.3 [default: every series].
    #[arg(long)]
    series: Option<String>,
    /// Debian flavour.
    #[arg(long, default_value = "cloud-amd64")]
    flavour: String,
}

fn workspace(arg: &KernelArg) -> anyhow::Result<(Cache, Workspace)> {
    let cache = arg.cap.cache()?;
    let archive = AptArchive::debian(&cache)?;
    let release: Release = match &arg.kernel {
        Some(k) => k.parse()?,
        None => {
            let sel = discover::default_release(&cache, &archive)?;
            eprintln!("kernel: {sel}");
            sel.release
        }
    };
    if Workspace::open(&cache, &release)?.is_none() {
        eprintln!(
            "fetching kernel workspace {release} into {} ...",
            cache.kernels_dir().display()
        );
    }
    let ws = Workspace::fetch(&cache, &archive, &release)?;
    Ok((cache, ws))
}

fn split_host_guest(spec: &str, default_dir: &str) -> (PathBuf, String) {
    match spec.split_once(':') {
        Some((h, g)) => (PathBuf::from(h), g.to_string()),
        None => {
            let host = PathBuf::from(spec);
            let name = host
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (host, format!("{default_dir}/{name}"))
        }
    }
}

/// `noreboot-lab cache [status|evict]`.
fn cache_command(action: Option<CacheCmd>, cap: &CacheCapArg, json: bool) -> anyhow::Result<()> {
    let cache = cap.cache()?;
    match action.unwrap_or(CacheCmd::Status) {
        CacheCmd::Status => {
            let s = evict::status(&cache)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!(
                "kernel cache {} (least recently used first)",
                s.kernels.display()
            );
            for w in &s.workspaces {
                println!(
                    "{:<34} {:>9}  {:<20}  {}",
                    w.release,
                    format_size(w.bytes),
                    w.last_used
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                        .unwrap_or_else(|| "?".into()),
                    if w.in_use { "in use" } else { "" }
                );
            }
            for o in &s.other {
                println!("{:<34} {:>9}  {}", o.name, format_size(o.bytes), o.what);
            }
            let cap = match s.cap {
                Some(c) => format!("cap {}", format_size(c)),
                None => format!(
                    "no cap (set {} or --cache-cap)",
                    kernel_tree::cache::CAP_ENV
                ),
            };
            let over = match s.cap {
                Some(c) if s.total > c => ": over the cap",
                _ => "",
            };
            println!("total {}, {cap}{over}", format_size(s.total));
        }
        CacheCmd::Evict { to } => {
            let Some(target) = to.or(cache.cap()) else {
                anyhow::bail!(
                    "no size to evict to: give --to SIZE (or --cache-cap SIZE, or set {})",
                    kernel_tree::cache::CAP_ENV
                );
            };
            let e = evict::evict_to(&cache, target)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                if !e.leftovers.is_empty() {
                    println!("removed leftovers: {}", e.leftovers.join(", "));
                }
                println!("{e}");
            }
        }
    }
    Ok(())
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Cache {
            action,
            cache_cap,
            json,
        } => {
            cache_command(action, &CacheCapArg { cache_cap }, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Releases(a) => releases(a),
        Cmd::Identify { image } => {
            let id = kernel_tree::image::read_identity(&image)?;
            println!("{}", serde_json::to_string_pretty(&id)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fetch(a) => fetch(a),
        Cmd::Run(a) => run(a),
        Cmd::Debian(a) => debian(a),
        Cmd::Source { kernel, version } => {
            let (cache, ws) = workspace(&kernel)?;
            let tarball = match version {
                Some(v) if v != ws.version() => {
                    ws.other_source(&cache, &AptArchive::debian(&cache)?, &v)?
                }
                _ => ws.source_tarball(),
            };
            println!("{}", tarball.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Make { kernel, args } => {
            let (cache, ws) = workspace(&kernel)?;
            let tree = ws.source_tree(&cache, &AptArchive::debian(&cache)?)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // The factory compiles in the same tree: one at a time.
            let _lock = tree.lock()?;
            let mut cmd = tree.make_command(&args);
            let status = cmd
                .status()
                .with_context(|| format!("running make in {}", tree.dir().display()))?;
            tree.grew()?;
            Ok(ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            ))
        }
        Cmd::Demo(a) => demo(a),
    }
}

/// `demo`: the live patch fixture built, loaded and checked in a guest.
fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs { kernel, json } = a;
    let (_cache, ws) = workspace(&kernel)?;
    eprintln!(
        "kernel {} ({}), build-id {}",
        ws.release(),
        ws.version(),
        ws.identity().build_id
    );
    let build_dir = tempfile::tempdir().context("creating a build directory")?;
    eprintln!(
        "building the live patch fixture against the headers, booting the kernel in QEMU ..."
    );
    let r = lab::sample::run_cmdline_sample(&ws, build_dir.path())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "kernel              {} (booted in {:.1}s under QEMU)",
            r.release,
            r.boot.as_secs_f64()
        );
        println!("/proc/cmdline before:   {}", r.before);
        println!("/proc/cmdline patched:  {}", r.patched);
        println!("/proc/cmdline reverted: {}", r.after);
        println!(
            "transition: patched in {:.2}s, unpatched in {:.2}s; taint {}; dmesg problems: {}",
            r.patch_transition.as_secs_f64(),
            r.unpatch_transition.as_secs_f64(),
            r.taint,
            if r.dmesg_problems.is_empty() {
                "none".to_string()
            } else {
                r.dmesg_problems.join(" | ")
            }
        );
        println!(
            "total {:.1}s (module build {:.1}s)",
            r.total.as_secs_f64(),
            r.build.as_secs_f64()
        );
    }
    if !r.dmesg_problems.is_empty() || r.patched != lab::sample::PATCHED_TEXT || r.after != r.before
    {
        anyhow::bail!("the live patch did not behave as expected (see above)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`: a command in a guest of the kernel.
fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        kernel,
        net,
        modules,
        files,
        bins,
        timeout,
        console,
        json,
        command,
    } = a;
    let (_cache, ws) = workspace(&kernel)?;
    let mut cfg = GuestConfig::for_workspace(&ws);
    cfg.network = net;
    cfg.modules = modules;
    cfg.command_timeout = Duration::from_secs(timeout);
    for f in &files {
        cfg.files.push(split_host_guest(f, "/root"));
    }
    for b in &bins {
        cfg.binaries.push(split_host_guest(b, "/usr/local/bin"));
    }
    let r = lab::run(&cfg, &command.join(" "))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        std::io::stdout().write_all(r.stdout.as_bytes())?;
        std::io::stderr().write_all(r.stderr.as_bytes())?;
        if console {
            eprintln!("--- console ---\n{}", r.console);
        }
        eprintln!(
            "[guest: boot {:.2}s, command {:.2}s, total {:.2}s, exit {}]",
            r.boot.as_secs_f64(),
            r.exec.as_secs_f64(),
            r.total.as_secs_f64(),
            r.status
        );
    }
    Ok(ExitCode::from(u8::try_from(r.status).unwrap_or(1)))
}

/// `fetch`: a kernel's workspace (and symbols), and where its parts are.
fn fetch(a: FetchArgs) -> anyhow::Result<ExitCode> {
    let FetchArgs {
        kernel,
        symbols,
        json,
    } = a;
    let (cache, ws) = workspace(&kernel)?;
    let syms = if symbols {
        Some(ws.symbols(&cache, &AptArchive::debian(&cache)?)?)
    } else {
        None
    };
    let id = ws.identity();
    if json {
        let v = serde_json::json!({
            "release": ws.release().as_str(),
            "version": ws.version(),
            "identity": id,
            "paths": {
                "workspace": ws.dir(),
                "vmlinuz": ws.vmlinuz(),
                "config": ws.config(),
                "headers": ws.headers_dir(),
                "module_symvers": ws.module_symvers(),
                "source_tarball": ws.source_tarball(),
                "modules": ws.modules_dir(),
                "system_map": syms.as_ref().map(|s| &s.system_map),
                "vmlinux": syms.as_ref().map(|s| &s.vmlinux),
            },
            "packages": ws.manifest().packages,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("release         {}", ws.release());
        println!("version         {}", ws.version());
        println!("build-id        {}", id.build_id);
        println!("uname -v        {}", id.uname_version);
        println!("compiler        {}", id.compiler);
        println!("vmlinuz         {}", ws.vmlinuz().display());
        println!("config          {}", ws.config().display());
        println!("headers         {}", ws.headers_dir().display());
        println!("Module.symvers  {}", ws.module_symvers().display());
        println!("source          {}", ws.source_tarball().display());
        if let Some(s) = syms {
            println!("System.map      {}", s.system_map.display());
            println!("vmlinux         {}", s.vmlinux.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `releases`: the builds the archive offers, with their suites.
fn releases(a: ReleasesArgs) -> anyhow::Result<ExitCode> {
    let ReleasesArgs { series, flavour } = a;
    let archive = AptArchive::debian(&Cache::from_env()?)?;
    let list = match &series {
        Some(s) => discover::available_releases(&archive, &flavour, s)?,
        None => discover::all_available_releases(&archive, &flavour)?,
    };
    if list.is_empty() {
        anyhow::bail!(kernel_tree::Error::NoReleases {
            flavour,
            series: series.unwrap_or_else(|| "(any)".into()),
        });
    }
    let suites = discover::suites_of(&archive, &list)?;
    for ((r, v), suite) in list.iter().zip(suites) {
        let pin = if r.as_str() == discover::PINNED_RELEASE {
            "  (pinned)"
        } else {
            ""
        };
        let suite = suite.unwrap_or_else(|| "?".into());
        println!("{r}\t{v}\t{suite}{pin}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The one place errors become exit codes: 2 usage (clap), 3 kernel
/// workspace or archive, 4 guest failure, 1 anything else.
/// `debian`: the Debian host's image, and its boots timed.
fn debian(a: DebianArgs) -> anyhow::Result<ExitCode> {
    let (cache, ws) = workspace(&a.kernel)?;
    let image = lab::DebianImage::ensure(&cache, &ws)?;
    let mut boots = Vec::new();
    let mut status = 0;
    for _ in 0..a.boots.max(1) {
        let mut guest = lab::DebianGuest::boot(&image)?;
        // What systemd itself measured, kernel and userspace.
        let analyze = guest.ssh("systemd-analyze time")?.stdout;
        let mut output = String::new();
        if !a.command.is_empty() {
            let r = guest.ssh(&a.command.join(" "))?;
            status = r.status;
            output = r.stdout;
            if !a.json {
                print!("{output}");
                eprint!("{}", r.stderr);
            }
        }
        let boot = guest.boot_time();
        guest.poweroff()?;
        if !a.json {
            eprintln!(
                "boot to SSH: {:.1}s; {}",
                boot.as_secs_f64(),
                analyze.lines().next().unwrap_or("").trim()
            );
        }
        boots.push(serde_json::json!({
            "boot_to_ssh_s": boot.as_secs_f64(),
            "systemd_analyze": analyze.lines().next().unwrap_or("").trim(),
            "output": output,
        }));
    }
    if a.json {
        let report = serde_json::json!({
            "release": image.release,
            "disk": image.disk,
            "built_in_s": image.built_in.map(|d| d.as_secs_f64()),
            "boots": boots,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(d) = image.built_in {
        eprintln!(
            "image built in {:.1}s: {}",
            d.as_secs_f64(),
            image.disk.display()
        );
    }
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<LabError>() {
        return match e {
            LabError::KernelTree(_) => 3,
            _ => 4,
        };
    }
    if err.downcast_ref::<kernel_tree::Error>().is_some() {
        return 3;
    }
    1
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NOREBOOT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("noreboot-lab: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
