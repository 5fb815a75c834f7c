//! `noreboot-server admin`: one subcommand per admin action, each run as
//! one [`Context`] method whose result is printed by [`Output::print`].
//! Groups of subcommands (`feed`, `key`, `token`, `host`) dispatch in
//! their own functions, so that [`run`] reads as the list of actions.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use server::admin::Coverage;
use server::model::Role;
use server::report::Policy;
use server::{validate, Context, Error};

use super::render::{
    AptKey, Builds, Held, Output, Pinned, RemovedPackages, ReportView, RevokedToken, Unpinned,
    VexDocument, Wrote,
};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
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
    /// Agent packages (.deb) the server's APT repository serves to the
    /// fleet (/apt/, joined by /install.sh).
    #[command(subcommand)]
    AgentPackage(AgentPackageCommand),
    /// The APT repository's signing key: its fingerprint and the armored
    /// public key (made on first use).
    AptKey,
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
    /// Webhooks: events POSTed to a URL, signed (see the README).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// The OpenVEX document vulnerability scanners take (`trivy --vex`),
    /// of the fleet or of one host; always JSON.
    Vex {
        /// One host (its id, or a hostname only one active host has)
        /// instead of the fleet.
        #[arg(long)]
        host: Option<String>,
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
    /// Write the printable compliance report for a period (the daily
    /// figures, charts, CVE timelines and release audit trail) to a file.
    Printable {
        /// The period's first day, YYYY-MM-DD (UTC); default: 29 days
        /// before --to.
        #[arg(long)]
        from: Option<String>,
        /// Its last day, YYYY-MM-DD; default: today.
        #[arg(long)]
        to: Option<String>,
        /// Days a fixed CVE may stay unpatched.
        #[arg(long, default_value_t = server::report::DEFAULT_POLICY_DAYS)]
        policy_days: i64,
        /// Write PDF instead of HTML.
        #[arg(long)]
        pdf: bool,
        /// The file to write.
        #[arg(long, short = 'o')]
        out: std::path::PathBuf,
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
pub enum ReportKind {
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
pub enum FeedCommand {
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
pub enum HostCommand {
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
pub enum WebhookCommand {
    /// Register a webhook (its signing secret is printed once).
    Create {
        /// Where to POST events (http:// or https://).
        #[arg(long)]
        url: String,
        /// An event it takes (repeatable): apply-failed, rolled-back,
        /// crash-guard-skip, policy-breach, policy-breach-resolved.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
    },
    /// Delete a webhook; its deliveries not yet made are given up.
    Delete {
        /// Its id.
        id: String,
    },
    /// List webhooks (secrets by their first characters).
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
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
pub enum AgentPackageCommand {
    /// Add a noreboot .deb (scripts/package-agent) to the repository.
    Upload {
        /// The .deb.
        file: PathBuf,
    },
    /// Take a version out of the repository.
    Remove {
        /// The package version.
        version: String,
    },
    /// List the packages in the repository.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
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

/// A command's result, printed by [`run`] once the command has succeeded.
type Done = anyhow::Result<Box<dyn Output>>;

fn done(out: impl Output + 'static) -> Done {
    Ok(Box::new(out))
}

/// Runs one admin command as `actor` and prints its result (`json`: as
/// JSON). Nothing is printed unless the action succeeded.
pub async fn run(
    ctx: &Context,
    actor: &str,
    json: bool,
    command: AdminCommand,
) -> anyhow::Result<()> {
    use AdminCommand as C;
    let out = match command {
        C::Publish { file, feeds } => {
            let bytes =
                bundle::read_file(&file).map_err(|e| Error::BundleRefused(e.to_string()))?;
            done(ctx.publish(actor, bytes, &feeds).await?)
        }
        C::Feed(c) => feed(ctx, actor, c).await,
        C::Promote { kernel, level, to } => {
            let level = validate::level("level", level)?;
            done(ctx.promote(actor, &kernel, level, &to).await?)
        }
        C::Pin {
            feed,
            kernel,
            level,
        } => {
            let level = validate::level("level", level)?;
            done(Pinned(ctx.pin(actor, &feed, &kernel, level).await?))
        }
        C::Hold { feed, kernel } => done(Held(ctx.hold(actor, &feed, &kernel).await?)),
        C::Unpin { feed, kernel } => done(Unpinned(ctx.unpin(actor, &feed, &kernel).await?)),
        C::Rollback { feed, kernel } => done(ctx.rollback(actor, &feed, &kernel).await?),
        C::Key(c) => key(ctx, actor, c).await,
        C::AgentPackage(c) => agent_package(ctx, actor, c).await,
        C::AptKey => {
            let k = ctx.repo_key().await?;
            done(AptKey {
                fingerprint: k.fingerprint.clone(),
                public_key: k.public_armored.clone(),
            })
        }
        C::Webhook(WebhookCommand::Create { url, events }) => {
            done(ctx.create_webhook(actor, &url, &events).await?)
        }
        C::Webhook(WebhookCommand::Delete { id }) => done(ctx.delete_webhook(actor, &id).await?),
        C::Webhook(WebhookCommand::List) => done(ctx.webhooks().await?),
        C::Token(c) => token(ctx, actor, c).await,
        C::Hosts { retired: false } => done(ctx.hosts().await?),
        C::Hosts { retired: true } => done(ctx.retired_hosts().await?),
        C::Host(c) => host(ctx, actor, c).await,
        C::Kernels {
            reported,
            uncovered,
        } => kernels(ctx, reported, uncovered).await,
        C::Levels { kernel } => done(ctx.levels(kernel.as_deref()).await?),
        C::Report {
            kind,
            csv,
            policy_days,
            stale_hours,
        } => {
            let policy = Policy::default().with(Some(policy_days), Some(stale_hours))?;
            done(ReportView {
                kind,
                csv,
                report: ctx.compliance(policy).await?,
            })
        }
        C::Vex { host: Some(h) } => done(VexDocument(ctx.host_vex(&h).await?)),
        C::Vex { host: None } => done(VexDocument(ctx.fleet_vex().await?)),
        C::Printable {
            from,
            to,
            policy_days,
            pdf,
            out,
        } => {
            Policy::default().with(Some(policy_days), None)?;
            let period =
                server::printable::Period::parse(from.as_deref(), to.as_deref(), ctx.clock.now())?;
            let report = ctx.printable(period, policy_days).await?;
            let bytes = if pdf {
                server::printable::pdf::render(&report)?
            } else {
                server::printable::html::document(&report).into_bytes()
            };
            std::fs::write(&out, &bytes)
                .with_context(|| format!("write the report to {}", out.display()))?;
            done(Wrote {
                path: out.display().to_string(),
                bytes: bytes.len(),
            })
        }
        C::Export {
            out,
            kernels,
            feeds,
            force,
        } => done(ctx.export(actor, &out, &kernels, &feeds, force).await?),
        C::Import { dir, feeds } => done(ctx.import(actor, &dir, &feeds).await?),
        C::Audit { limit } => done(ctx.audit_log(limit).await?),
    };
    out?.print(json)
}

async fn feed(ctx: &Context, actor: &str, command: FeedCommand) -> Done {
    match command {
        FeedCommand::Create { name, delay_hours } => {
            done(ctx.create_feed(actor, &name, delay_hours).await?)
        }
        FeedCommand::List => done(ctx.feeds().await?),
    }
}

async fn key(ctx: &Context, actor: &str, command: KeyCommand) -> Done {
    match command {
        KeyCommand::Create { feed, note } => done(ctx.create_key(actor, &feed, &note).await?),
        KeyCommand::Revoke { id } => done(ctx.revoke_key(actor, &id).await?),
        KeyCommand::List => done(ctx.keys().await?),
    }
}

async fn agent_package(ctx: &Context, actor: &str, command: AgentPackageCommand) -> Done {
    match command {
        AgentPackageCommand::Upload { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))?;
            done(ctx.upload_agent_package(actor, bytes).await?)
        }
        AgentPackageCommand::Remove { version } => done(RemovedPackages(
            ctx.remove_agent_package(actor, &version).await?,
        )),
        AgentPackageCommand::List => done(ctx.agent_packages().await?),
    }
}

async fn token(ctx: &Context, actor: &str, command: TokenCommand) -> Done {
    match command {
        TokenCommand::Create { name, role } => done(ctx.create_token(actor, &name, role).await?),
        TokenCommand::Revoke { name } => {
            ctx.revoke_token(actor, &name).await?;
            done(RevokedToken(name))
        }
        TokenCommand::List => done(ctx.tokens().await?),
    }
}

async fn host(ctx: &Context, actor: &str, command: HostCommand) -> Done {
    match command {
        HostCommand::Move { host, feed } => done(ctx.move_host(actor, &host, &feed).await?),
        HostCommand::Tags { host, tags, clear } => {
            // clap lets `--clear` through only without tags.
            let tags = if clear { Vec::new() } else { tags };
            done(ctx.set_host_tags(actor, &host, &tags).await?)
        }
        HostCommand::Retire { host } => done(ctx.retire_host(actor, &host).await?),
    }
}

async fn kernels(ctx: &Context, reported: bool, uncovered: bool) -> Done {
    let which = match (reported, uncovered) {
        (false, false) => return done(ctx.kernels().await?),
        (_, true) => Coverage::Uncovered,
        (true, false) => Coverage::All,
    };
    done(Builds {
        which,
        builds: ctx.reported_builds(which).await?,
    })
}
