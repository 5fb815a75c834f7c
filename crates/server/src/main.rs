//! `noreboot-server`: `serve` runs the HTTP API; `admin` acts on the same
//! database directly (publishing, feeds, hosts, keys, tokens, views), for the
//! first admin token and for scripts on the server machine. Arguments are
//! parsed by clap, turned into a [`server::Options`], and every failure is
//! mapped to an exit status in [`exit_code`]. The `admin` subcommands, and
//! how their results print, are in `cli`.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use server::api::connections::ConnectionLimits;
use server::api::{self, AppState, Settings};
use server::clock::SystemClock;
use server::transfer::ImportError;
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
        /// Milliseconds a count of the fleet (hosts by kernel and level,
        /// stale hosts) may take and still be made for every request that
        /// needs it; a larger fleet's figures come from its last count, at
        /// most 15 s old, recounted in the background (0: always so).
        #[arg(long, default_value_t = server::counts::DEFAULT_BUDGET.as_millis() as u64)]
        count_budget_ms: u64,
        /// The URL hosts reach this server at (https://noreboot.example.com),
        /// written into /install.sh [default: the Host header of each request
        /// for it, with this server's scheme].
        #[arg(long, env = "NOREBOOT_SERVER_PUBLIC_URL")]
        public_url: Option<String>,
        /// Attempts at a webhook delivery before it is given up (and the
        /// failure audited).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
        webhook_attempts: u32,
        /// Seconds to wait after a webhook delivery's first failed attempt,
        /// doubled after each further one (at most an hour).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        webhook_backoff: u64,
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
        command: cli::admin::AdminCommand,
    },
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
            count_budget_ms,
            public_url,
            webhook_attempts,
            webhook_backoff,
        } => {
            let public_url = public_url.map(|u| u.trim_end_matches('/').to_string());
            if let Some(u) = &public_url {
                if !api::apt::valid_public_url(u) {
                    anyhow::bail!(
                        "--public-url {u:?}: not an http:// or https:// URL of plain characters"
                    );
                }
            }
            let policy =
                server::report::Policy::default().with(Some(policy_days), Some(stale_hours))?;
            let tls = match (&tls_cert, &tls_key) {
                (Some(c), Some(k)) => Some(server::tls::server_config(c, k)?),
                _ => None,
            };
            let mut ctx = Context::open(&storage.options(), Arc::new(SystemClock)).await?;
            ctx.counts = Arc::new(server::counts::FleetCounts::new(
                Some(Duration::from_millis(count_budget_ms)),
                policy.stale_hours,
            ));
            // PostgreSQL: other processes may serve this database. They
            // must judge bundles by the same keys, and serve the bundles
            // this one's data directory kept before they moved into it.
            ctx.record_trusted_keys().await?;
            ctx.import_disk_bundles().await?;
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
                public_url,
                webhooks: server::webhooks::DeliverySettings {
                    attempts: webhook_attempts,
                    backoff: Duration::from_secs(webhook_backoff),
                    ..Default::default()
                },
            };
            let db = ctx.db.clone();
            // The day's compliance record (`server::history`) is written by
            // its first count; a server that nobody asks for figures
            // still counts once an hour, so no day goes unrecorded.
            let recorder = ctx.clone();
            tokio::spawn(async move {
                let mut hourly = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    hourly.tick().await;
                    if let Err(e) = recorder.compliance_summary(policy).await {
                        tracing::warn!("the hourly compliance count: {e}");
                    }
                }
            });
            let state = AppState::new(ctx, settings);
            let key = state.repo.key(&state.ctx).await?;
            tracing::info!("APT repository key {}", key.fingerprint);
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
            let r = cli::admin::run(&ctx, &actor, json, command).await;
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
