//! `noreboot-server`: `serve` runs the HTTP API; `admin` acts on the same
//! database directly (publishing, feeds, hosts, keys, tokens, views), for the
//! first admin token and for scripts on the server machine. Arguments are
//! parsed by clap, turned into a [`server::Options`], and every failure is
//! mapped to an exit status in [`exit_code`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use server::admin::Coverage;
use server::api::connections::ConnectionLimits;
use server::api::{self, AppState, Settings};
use server::clock::{rfc3339, SystemClock};
use server::model::{ReportedBuild, Role};
use server::report::Table;
use server::transfer::{ImportError, Outcome};
use server::{Context, Error, ErrorKind, Options};

/// noreboot-server: live patch distribution and fleet status.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Storage {
    /// Database URL: sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
    /// (the database must exist) [default: sqlite://<data>/noreboot.db]
    // The URL may hold a password: --help must not show it.
    #[arg(long, env = "NOREBOOT_SERVER_DB", hide_env_values = true)]
    db: Option<String>,
    /// Data directory: bundles, and the default database.
    #[arg(long, env = "NOREBOOT_SERVER_DATA", default_value = "./noreboot-data")]
    data: PathBuf,
    /// Directory of minisign *.pub keys that bundles must be signed with
    /// [default: <data>/trusted.d]
    #[arg(long, env = "NOREBOOT_SERVER_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
}

impl Storage {
    fn options(&self) -> Options {
        Options {
            db_url: self.db.clone(),
            data_dir: self.data.clone(),
            trusted_keys: self.trusted_keys.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the agent and admin API.
    Serve {
        #[command(flatten)]
        storage: Storage,
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Failed registrations allowed per source address and key presented,
        /// and minute (0: no limit); failures with any key per address may
        /// be 4 times that, registrations per address 20 times.
        #[arg(long, default_value_t = 30)]
        register_per_minute: u32,
        /// Check-in interval suggested to agents, in seconds.
        #[arg(long, default_value_t = 4 * 3600)]
        checkin_interval: u64,
        /// Longest a request may take, in seconds, from its head to its
        /// answer (reading its body included).
        #[arg(long, default_value_t = 120)]
        request_timeout: u64,
        /// Seconds a new connection has to send its first request head (TLS
        /// handshake included); slower clients are disconnected.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
        /// Seconds a connection may stay open with no request in progress
        /// (between kept-alive requests, or a response that does not move).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=24 * 3600))]
        idle_timeout: u64,
        /// Connections open at once; further clients wait to be accepted
        /// until one closes. The open-file limit is raised to fit them.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        max_connections: u32,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's PEM private key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Compliance policy: days a fixed CVE may stay unpatched.
        #[arg(long, default_value_t = server::report::DEFAULT_POLICY_DAYS)]
        policy_days: i64,
        /// Hours without a check-in after which a host counts as stale.
        #[arg(long, default_value_t = server::report::DEFAULT_STALE_HOURS)]
        stale_hours: i64,
        /// Require this bearer token on /metrics (default: open).
        #[arg(long, env = "NOREBOOT_SERVER_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
        /// Flush every batch of check-ins to disk before acknowledging it
        /// (survives power loss; default: acknowledged once the database
        /// has it, which survives a crash of this process — agents resend
        /// their whole state at every check-in).
        #[arg(long)]
        checkin_fsync: bool,
        /// Browsers reach this server through a TLS-terminating proxy
        /// (HTTPS there, plain HTTP here): mark the dashboard's session
        /// cookie Secure and accept dashboard forms from https pages only,
        /// as with --tls-cert. The proxy must pass the Host header on.
        #[arg(long)]
        behind_tls_proxy: bool,
        /// Hours a dashboard session lasts after its sign-in.
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=24 * 366))]
        session_hours: u64,
        /// Failed dashboard sign-ins allowed per client address and minute
        /// (0: no limit); further attempts that minute get 429.
        #[arg(long, default_value_t = 10)]
        login_failures_per_minute: u32,
    },
    /// Act on the server's database directly.
    Admin {
        #[command(flatten)]
        storage: Storage,
        /// The name the audit trail records [default: cli:$USER].
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Verify and publish a bundle (its kernel is registered if new).
    Publish {
        /// The bundle (.nrb).
        file: PathBuf,
        /// Release it to this feed (repeatable; none: promote later).
        #[arg(long = "feed")]
        feeds: Vec<String>,
    },
    /// Feeds.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Release a published level to a feed.
    Promote {
        /// Kernel build-id.
        #[arg(long)]
        kernel: String,
        /// The level.
        #[arg(long)]
        level: u32,
        /// The feed.
        #[arg(long)]
        to: String,
    },
    /// Serve exactly this level on a feed for one kernel.
    Pin {
        /// The feed.
        #[arg(long)]
        feed: String,
        /// Kernel build-id.
        #[arg(long)]
        kernel: String,
        /// The level.
        #[arg(long)]
        level: u32,
    },
    /// Keep a feed at the level it serves now for one kernel.
    Hold {
        /// The feed.
        #[arg(long)]
        feed: String,
        /// Kernel build-id.
        #[arg(long)]
        kernel: String,
    },
    /// Remove a pin or hold.
    Unpin {
        /// The feed.
        #[arg(long)]
        feed: String,
        /// Kernel build-id.
        #[arg(long)]
        kernel: String,
    },
    /// Withdraw the level a feed serves for one kernel: hosts go back to
    /// the previous level at their next check-in.
    Rollback {
        /// The feed.
        #[arg(long)]
        feed: String,
        /// Kernel build-id.
        #[arg(long)]
        kernel: String,
    },
    /// Registration keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Registered hosts (retired ones are left out).
    Hosts {
        /// List the retired hosts instead.
        #[arg(long)]
        retired: bool,
    },
    /// Act on one host, named by its id or by a hostname only one active
    /// host has: move it to another feed, set its tags, retire it.
    #[command(subcommand)]
    Host(HostCommand),
    /// Kernels with published levels; with --reported or --uncovered, the
    /// kernel builds active hosts run instead.
    Kernels {
        /// List every build active hosts run, with its host count and its
        /// newest published level ("none": no level covers it).
        #[arg(long, conflicts_with = "uncovered")]
        reported: bool,
        /// List only the builds active hosts run that have no published
        /// level, with their host counts.
        #[arg(long)]
        uncovered: bool,
    },
    /// Published levels.
    Levels {
        /// Only this kernel build-id.
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Compliance reports: a table, or --csv / --json.
    Report {
        /// Which report.
        #[arg(value_enum)]
        kind: ReportKind,
        /// Print CSV.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Days a fixed CVE may stay unpatched.
        #[arg(long, default_value_t = server::report::DEFAULT_POLICY_DAYS)]
        policy_days: i64,
        /// Hours without a check-in after which a host counts as stale.
        #[arg(long, default_value_t = server::report::DEFAULT_STALE_HOURS)]
        stale_hours: i64,
    },
    /// Write the published levels' bundles and an index.json into a
    /// directory another server can import (and agents can use as their
    /// update.directory).
    Export {
        /// The directory (created; must be empty unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Only this kernel build-id (repeatable).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Only levels released to this feed, and only this feed's
        /// releases (repeatable).
        #[arg(long = "feed")]
        feeds: Vec<String>,
        /// Replace the export in a non-empty directory.
        #[arg(long)]
        force: bool,
    },
    /// Check an export directory against its index.json, verify every
    /// bundle, publish the levels not here yet and release them to the
    /// index's feeds.
    Import {
        /// The export directory.
        dir: PathBuf,
        /// Release only to this feed (repeatable) [default: the index's
        /// feeds that exist here].
        #[arg(long = "feed")]
        feeds: Vec<String>,
    },
    /// The audit trail, newest first.
    Audit {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: i64,
    },
}

/// The views of the compliance report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReportKind {
    /// Every host x CVE exposure.
    Compliance,
    /// Each host's standing.
    Hosts,
    /// Each CVE across the fleet.
    Cves,
    /// The fleet in numbers.
    Summary,
}

#[derive(Debug, Subcommand)]
enum FeedCommand {
    /// Create a feed.
    Create {
        /// Its name.
        name: String,
        /// Serve a level only this many hours after its publication.
        #[arg(long, default_value_t = 0)]
        delay_hours: i64,
    },
    /// List feeds.
    List,
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Move a host to another feed: its next check-in gets that feed's
    /// level.
    Move {
        /// Host id, or a hostname only one active host has.
        host: String,
        /// The feed.
        #[arg(long)]
        feed: String,
    },
    /// Replace a host's tags.
    Tags {
        /// Host id, or a hostname only one active host has.
        host: String,
        /// The new tags (all of them).
        #[arg(required_unless_present = "clear")]
        tags: Vec<String>,
        /// Remove every tag.
        #[arg(long, conflicts_with = "tags")]
        clear: bool,
    },
    /// Retire a decommissioned host: its token stops working at once, it
    /// leaves the host list and the compliance reports; its reports are
    /// kept.
    Retire {
        /// Host id, or a hostname only one active host has.
        host: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a registration key (its secret is printed once).
    Create {
        /// The feed hosts registering with it join.
        #[arg(long)]
        feed: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Revoke a registration key.
    Revoke {
        /// Its id.
        id: String,
    },
    /// List registration keys.
    List,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an admin API token (printed once).
    Create {
        /// Its name (the audit trail records it).
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Revoke an admin API token.
    Revoke {
        /// Its name.
        name: String,
    },
    /// List admin API tokens.
    List,
}

/// Exit statuses: 0 done, 1 server-side failure, 2 usage (clap), 3 not
/// found, 4 refused (invalid input, conflict, bad bundle).
fn exit_code(e: &anyhow::Error) -> u8 {
    let e = e
        .downcast_ref::<ImportError>()
        .map(|i| &i.error)
        .or_else(|| e.downcast_ref::<Error>());
    match e.map(Error::kind) {
        Some(ErrorKind::NotFound) => 3,
        Some(
            ErrorKind::Invalid
            | ErrorKind::Conflict
            | ErrorKind::Refused
            | ErrorKind::Unauthorized
            | ErrorKind::Forbidden,
        ) => 4,
        Some(ErrorKind::Internal) | None => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NOREBOOT_LOG")
                // PostgreSQL's notices ("relation ... already exists,
                // skipping" at every start) are not news.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("noreboot-server: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("noreboot-server: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            storage,
            listen,
            register_per_minute,
            checkin_interval,
            request_timeout,
            header_timeout,
            idle_timeout,
            max_connections,
            tls_cert,
            tls_key,
            policy_days,
            stale_hours,
            metrics_token,
            checkin_fsync,
            behind_tls_proxy,
            session_hours,
            login_failures_per_minute,
        } => {
            let policy =
                server::report::Policy::default().with(Some(policy_days), Some(stale_hours))?;
            let tls = match (&tls_cert, &tls_key) {
                (Some(c), Some(k)) => Some(server::tls::server_config(c, k)?),
                _ => None,
            };
            let ctx = Context::open(&storage.options(), Arc::new(SystemClock)).await?;
            if ctx.trusted.is_empty() {
                tracing::warn!(
                    "no trusted keys in {}: every publication will be refused",
                    ctx.trusted_dir.display()
                );
            }
            if tls.is_none() && !behind_tls_proxy && !listen.ip().is_loopback() {
                tracing::warn!(
                    "serving plain HTTP on {listen}: put a TLS proxy in front of it (and pass --behind-tls-proxy)"
                );
            }
            if let Some(fit) = api::connections::fit_open_files(max_connections) {
                tracing::warn!(
                    "the open-file limit leaves room for about {fit} connections, not --max-connections {max_connections}: raise it (systemd: LimitNOFILE=)"
                );
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listen on {listen}"))?;
            let addr = listener.local_addr().context("local address")?;
            // Tests and scripts read the real port from this line.
            let scheme = if tls.is_some() { "https" } else { "http" };
            println!("listening on {scheme}://{addr}");
            let settings = Settings {
                register_per_minute,
                checkin_interval: Some(checkin_interval),
                request_timeout: Duration::from_secs(request_timeout),
                connections: ConnectionLimits {
                    header_timeout: Duration::from_secs(header_timeout),
                    idle_timeout: Duration::from_secs(idle_timeout),
                    max_connections,
                },
                policy,
                metrics_token,
                checkin_durability: if checkin_fsync {
                    server::checkin::Durability::PowerLoss
                } else {
                    server::checkin::Durability::Crash
                },
                login_failures_per_minute,
                session_lifetime: Duration::from_secs(session_hours * 3600),
                https: tls.is_some() || behind_tls_proxy,
            };
            let db = ctx.db.clone();
            let state = AppState::new(ctx, settings);
            match tls {
                Some(tls) => api::serve_tls(listener, state, tls, shutdown_signal()).await,
                None => api::serve(listener, state, shutdown_signal()).await,
            }
            .context("serve")?;
            db.close().await;
            Ok(())
        }
        Command::Admin {
            storage,
            actor,
            json,
            command,
        } => {
            let ctx = Context::open(&storage.options(), Arc::new(SystemClock)).await?;
            let actor = actor.unwrap_or_else(|| {
                format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                )
            });
            let r = admin(&ctx, &actor, json, command).await;
            ctx.db.close().await;
            r
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The builds hosts run as a table, with their newest levels unless only
/// uncovered ones (no level: the column would say `none` throughout).
fn builds_table(builds: &[ReportedBuild], which: Coverage) -> Table {
    let mut header = vec!["release", "version", "build id", "hosts"];
    if which == Coverage::All {
        header.push("newest level");
    }
    let rows = builds
        .iter()
        .map(|b| {
            let mut row = vec![
                b.release.clone(),
                b.version.clone(),
                b.build_id.clone(),
                b.hosts.to_string(),
            ];
            if which == Coverage::All {
                row.push(b.newest_level.map_or("none".into(), |l| l.to_string()));
            }
            row
        })
        .collect();
    Table { header, rows }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |l| l.to_string())
}

async fn admin(
    ctx: &Context,
    actor: &str,
    json: bool,
    command: AdminCommand,
) -> anyhow::Result<()> {
    match command {
        AdminCommand::Publish { file, feeds } => {
            let bytes =
                bundle::read_file(&file).map_err(|e| Error::BundleRefused(e.to_string()))?;
            let p = ctx.publish(actor, bytes, &feeds).await?;
            if json {
                return print_json(&p);
            }
            println!(
                "published {} level {} for {} ({}){}",
                p.name,
                p.level,
                p.release,
                p.build_id,
                if p.new_kernel { ", a new kernel" } else { "" }
            );
            println!("bundle sha256 {} ({} bytes)", p.sha256, p.size);
            println!(
                "CVEs: {}",
                if p.cves.is_empty() {
                    "-".into()
                } else {
                    p.cves.join(" ")
                }
            );
            if p.feeds.is_empty() {
                println!(
                    "released to no feed yet: `promote --kernel {} --level {} --to FEED`",
                    p.build_id, p.level
                );
            } else {
                println!("released to: {}", p.feeds.join(" "));
            }
        }
        AdminCommand::Feed(FeedCommand::Create { name, delay_hours }) => {
            let f = ctx.create_feed(actor, &name, delay_hours).await?;
            if json {
                return print_json(&f);
            }
            println!("created feed {} (delay {} h)", f.name, f.delay_hours);
        }
        AdminCommand::Feed(FeedCommand::List) => {
            let feeds = ctx.feeds().await?;
            if json {
                return print_json(&feeds);
            }
            for f in feeds {
                println!("{:<20} delay {:>4} h", f.name, f.delay_hours);
            }
        }
        AdminCommand::Promote { kernel, level, to } => {
            let level = server::validate::level("level", level)?;
            let p = ctx.promote(actor, &kernel, level, &to).await?;
            if json {
                return print_json(&p);
            }
            if p.already {
                println!(
                    "level {} of {} was already released to {}",
                    p.level, p.build_id, p.feed
                );
            } else {
                println!("released level {} of {} to {}", p.level, p.build_id, p.feed);
            }
        }
        AdminCommand::Pin {
            feed,
            kernel,
            level,
        } => {
            let level = server::validate::level("level", level)?;
            let s = ctx.pin(actor, &feed, &kernel, level).await?;
            if json {
                return print_json(&s);
            }
            println!(
                "feed {} pinned to level {} for {}",
                s.feed,
                opt(s.level),
                s.build_id
            );
        }
        AdminCommand::Hold { feed, kernel } => {
            let s = ctx.hold(actor, &feed, &kernel).await?;
            if json {
                return print_json(&s);
            }
            println!(
                "feed {} held at level {} for {}",
                s.feed,
                opt(s.level),
                s.build_id
            );
        }
        AdminCommand::Unpin { feed, kernel } => {
            let s = ctx.unpin(actor, &feed, &kernel).await?;
            if json {
                return print_json(&s);
            }
            println!(
                "feed {} follows its releases for {} again: serving level {}",
                s.feed,
                s.build_id,
                opt(s.serving)
            );
        }
        AdminCommand::Rollback { feed, kernel } => {
            let r = ctx.rollback(actor, &feed, &kernel).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "feed {} rolled back from level {} to {} for {} (withdrawn: {:?}); hosts move at their next check-in",
                r.feed,
                r.from,
                opt(r.to),
                r.build_id,
                r.withdrawn
            );
        }
        AdminCommand::Key(KeyCommand::Create { feed, note }) => {
            let k = ctx.create_key(actor, &feed, &note).await?;
            if json {
                return print_json(&k);
            }
            println!(
                "registration key {} for feed {} (shown once):",
                k.id, k.feed
            );
            println!("{}", k.secret);
        }
        AdminCommand::Key(KeyCommand::Revoke { id }) => {
            let k = ctx.revoke_key(actor, &id).await?;
            if json {
                return print_json(&k);
            }
            println!("revoked registration key {}", k.id);
        }
        AdminCommand::Key(KeyCommand::List) => {
            let keys = ctx.keys().await?;
            if json {
                return print_json(&keys);
            }
            for k in keys {
                let state = k
                    .revoked_at
                    .map_or("active".to_string(), |t| format!("revoked {}", rfc3339(t)));
                println!("{}  {:<12} {:<28} {}", k.id, k.feed, state, k.note);
            }
        }
        AdminCommand::Token(TokenCommand::Create { name, role }) => {
            let t = ctx.create_token(actor, &name, role).await?;
            if json {
                return print_json(&t);
            }
            println!("{} token {} (shown once):", t.role.as_str(), t.name);
            println!("{}", t.token);
        }
        AdminCommand::Token(TokenCommand::Revoke { name }) => {
            ctx.revoke_token(actor, &name).await?;
            if !json {
                println!("revoked token {name}");
            }
        }
        AdminCommand::Token(TokenCommand::List) => {
            let tokens = ctx.tokens().await?;
            if json {
                return print_json(&tokens);
            }
            for t in tokens {
                let state = t.revoked_at.map_or("active".to_string(), |at| {
                    format!("revoked {}", rfc3339(at))
                });
                println!("{:<24} {:<10} {}", t.name, t.role, state);
            }
        }
        AdminCommand::Hosts { retired: true } => {
            let hosts = ctx.retired_hosts().await?;
            if json {
                return print_json(&hosts);
            }
            for r in hosts {
                println!(
                    "{}  {:<24} {:<10} {:<24} level {:<3} retired {} by {}",
                    r.host.id,
                    r.host.hostname,
                    r.host.feed,
                    r.host.kernel_release,
                    r.host.level,
                    rfc3339(r.retired_at),
                    r.retired_by
                );
            }
        }
        AdminCommand::Host(HostCommand::Move { host, feed }) => {
            let m = ctx.move_host(actor, &host, &feed).await?;
            if json {
                return print_json(&m);
            }
            if m.from == m.to {
                println!("host {} ({}) is on feed {} already", m.hostname, m.id, m.to);
            } else {
                println!(
                    "moved host {} ({}) from feed {} to {}; its next check-in gets level {}",
                    m.hostname,
                    m.id,
                    m.from,
                    m.to,
                    opt(m.serving)
                );
            }
        }
        AdminCommand::Host(HostCommand::Tags { host, tags, clear }) => {
            // clap lets `--clear` through only without tags.
            let tags = if clear { Vec::new() } else { tags };
            let t = ctx.set_host_tags(actor, &host, &tags).await?;
            if json {
                return print_json(&t);
            }
            println!(
                "host {} ({}) tags: [{}] (were [{}])",
                t.hostname,
                t.id,
                t.to.join(" "),
                t.from.join(" ")
            );
        }
        AdminCommand::Host(HostCommand::Retire { host }) => {
            let r = ctx.retire_host(actor, &host).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "retired host {} ({}) of feed {}: its token no longer works; reports kept: {}",
                r.hostname, r.id, r.feed, r.reports
            );
        }
        AdminCommand::Hosts { retired: false } => {
            let hosts = ctx.hosts().await?;
            if json {
                return print_json(&hosts);
            }
            for h in hosts {
                println!(
                    "{}  {:<24} {:<10} {:<24} level {:<3} last check-in {}",
                    h.id,
                    h.hostname,
                    h.feed,
                    h.kernel_release,
                    h.level,
                    h.last_checkin.map_or("never".into(), rfc3339)
                );
            }
        }
        AdminCommand::Kernels {
            reported,
            uncovered,
        } if reported || uncovered => {
            let which = if uncovered {
                Coverage::Uncovered
            } else {
                Coverage::All
            };
            let builds = ctx.reported_builds(which).await?;
            if json {
                return print_json(&builds);
            }
            if builds.is_empty() {
                println!(
                    "{}",
                    match which {
                        Coverage::Uncovered =>
                            "every kernel build active hosts run has a published level",
                        Coverage::All => "no active hosts",
                    }
                );
                return Ok(());
            }
            print!("{}", builds_table(&builds, which).to_text());
        }
        AdminCommand::Kernels { .. } => {
            let kernels = ctx.kernels().await?;
            if json {
                return print_json(&kernels);
            }
            for k in kernels {
                println!(
                    "{:<28} {}  {} levels, newest {}",
                    k.release,
                    k.build_id,
                    k.levels,
                    opt(k.newest_level)
                );
            }
        }
        AdminCommand::Levels { kernel } => {
            let levels = ctx.levels(kernel.as_deref()).await?;
            if json {
                return print_json(&levels);
            }
            for l in levels {
                let cves: Vec<&str> = l.cves.iter().map(|c| c.cve.as_str()).collect();
                println!(
                    "{} level {:<3} {:<28} {}  feeds [{}]  CVEs [{}]",
                    l.build_id,
                    l.level,
                    l.name,
                    rfc3339(l.published_at),
                    l.feeds.join(" "),
                    cves.join(" ")
                );
            }
        }
        AdminCommand::Report {
            kind,
            csv,
            policy_days,
            stale_hours,
        } => {
            let policy =
                server::report::Policy::default().with(Some(policy_days), Some(stale_hours))?;
            let c = ctx.compliance(policy).await?;
            if json {
                return match kind {
                    ReportKind::Compliance => print_json(
                        &serde_json::json!({"summary": c.summary, "exposures": c.exposures}),
                    ),
                    ReportKind::Hosts => {
                        print_json(&serde_json::json!({"summary": c.summary, "hosts": c.hosts}))
                    }
                    ReportKind::Cves => {
                        print_json(&serde_json::json!({"summary": c.summary, "cves": c.cves}))
                    }
                    ReportKind::Summary => print_json(&c.summary),
                };
            }
            let table = match kind {
                ReportKind::Compliance => c.exposures_table(),
                ReportKind::Hosts => c.hosts_table(),
                ReportKind::Cves => c.cves_table(),
                ReportKind::Summary => c.summary_table(),
            };
            if csv {
                print!("{}", table.to_csv());
                return Ok(());
            }
            let s = &c.summary;
            if let ReportKind::Summary = kind {
                // One row reads better as a list.
                for (k, v) in table.header.iter().zip(&table.rows[0]) {
                    println!("{k:<18} {v}");
                }
                return Ok(());
            }
            print!("{}", table.to_text());
            println!(
                "{} hosts: {} protected, {} exposed, {} unsupported, {} breaching the {}-day policy, {} stale",
                s.hosts_total,
                s.hosts_protected,
                s.hosts_exposed,
                s.hosts_unsupported,
                s.hosts_breaching,
                s.policy_days,
                s.hosts_stale
            );
        }
        AdminCommand::Export {
            out,
            kernels,
            feeds,
            force,
        } => {
            let x = ctx.export(actor, &out, &kernels, &feeds, force).await?;
            if json {
                return print_json(&x);
            }
            for b in &x.bundles {
                println!(
                    "{}  {} {} level {:<3} feeds [{}]",
                    b.file,
                    b.kernel.release,
                    b.kernel.build_id,
                    b.level,
                    b.feeds.join(" ")
                );
            }
            if !x.removed.is_empty() {
                println!("removed from the previous export: {}", x.removed.join(" "));
            }
            println!(
                "exported {} bundle{} to {} (index.json last)",
                x.bundles.len(),
                if x.bundles.len() == 1 { "" } else { "s" },
                x.dir
            );
        }
        AdminCommand::Import { dir, feeds } => {
            let i = ctx.import(actor, &dir, &feeds).await?;
            if json {
                return print_json(&i);
            }
            for l in &i.levels {
                let what = match l.outcome {
                    Outcome::Published => "published",
                    Outcome::Present => "present  ",
                    Outcome::Superseded => "skipped  ",
                };
                let note = match l.outcome {
                    Outcome::Superseded => "  (a newer level is published here)".to_string(),
                    _ if l.released.is_empty() => String::new(),
                    _ => format!("  released to {}", l.released.join(" ")),
                };
                println!(
                    "{what} {} {} level {} ({}){note}",
                    l.release, l.build_id, l.level, l.file
                );
            }
            if !i.feeds_missing.is_empty() {
                println!(
                    "feeds in the index that do not exist here (nothing released to them): {}",
                    i.feeds_missing.join(" ")
                );
            }
            let n = |o: Outcome| i.levels.iter().filter(|l| l.outcome == o).count();
            println!(
                "imported {}: {} published, {} present already, {} skipped",
                i.dir,
                n(Outcome::Published),
                n(Outcome::Present),
                n(Outcome::Superseded)
            );
        }
        AdminCommand::Audit { limit } => {
            let entries = ctx.audit_log(limit).await?;
            if json {
                return print_json(&entries);
            }
            for a in entries {
                println!(
                    "{} {:<16} {:<14} {} {}",
                    rfc3339(a.at),
                    a.actor,
                    a.action,
                    a.target,
                    a.detail
                );
            }
        }
    }
    Ok(())
}
