//! The records the server keeps, as the admin API and CLI show them. Each
//! is read straight from a row; times are stored as Unix seconds and shown
//! as RFC 3339, JSON columns are shown as JSON. Secrets and their hashes
//! are never part of these records.

use serde::{Serialize, Serializer};

use crate::clock::rfc3339;

fn time<S: Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn opt_time<S: Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// Emits a JSON text column as JSON (`null` if it does not parse, which
/// only a hand-edited database could cause).
fn json<S: Serializer>(t: &str, s: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<serde_json::Value>(t)
        .unwrap_or(serde_json::Value::Null)
        .serialize(s)
}

/// A kernel build with published levels.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Kernel {
    /// GNU build-id.
    pub build_id: String,
    /// `uname -r`.
    pub release: String,
    /// Distribution package version.
    pub version: Option<String>,
    /// When its first level was published.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub first_published_at: i64,
    /// How many levels it has.
    pub levels: i64,
    /// Its newest level.
    pub newest_level: Option<i64>,
}

/// A kernel build active hosts run, as they report it (`GET
/// /admin/kernels/reported`), with the newest level published for its
/// build-id. The JSON field names are an interface: `noreboot-build
/// release --kernels-from-server` reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReportedBuild {
    /// `uname -r`, as the hosts report it.
    pub release: String,
    /// `uname -v`, as the hosts report it.
    pub version: String,
    /// GNU build-id.
    pub build_id: String,
    /// Active (not retired) hosts running it.
    pub hosts: i64,
    /// The newest level published for the build-id (`None`: no level, no
    /// release covers it).
    #[schema(required = true)]
    pub newest_level: Option<i64>,
}

/// A CVE a level fixes.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Cve {
    /// `CVE-YYYY-NNNN`.
    pub cve: String,
    /// What it is.
    pub description: String,
}

/// A published patch level.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Level {
    /// The kernel build it is for.
    pub build_id: String,
    /// The level.
    pub level: i64,
    /// Patch name.
    pub name: String,
    /// sha256 of the bundle file.
    pub sha256: String,
    /// Size of the bundle file.
    pub size: i64,
    /// What `uname -v` becomes.
    pub effective_version: Option<String>,
    /// What the patch fixes.
    pub description: String,
    /// The minisign key id that signed it.
    pub signer: String,
    /// The manifest's creation time.
    pub created: String,
    /// When it was published here.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub published_at: i64,
    /// Who published it.
    pub published_by: String,
    /// CVEs fixed.
    #[sqlx(skip)]
    pub cves: Vec<Cve>,
    /// Feeds it is released to (and not withdrawn from).
    #[sqlx(skip)]
    pub feeds: Vec<String>,
}

/// A feed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Feed {
    /// Its name.
    pub name: String,
    /// Hours after publication before a level is served (0: at once).
    pub delay_hours: i64,
    /// When it was created.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A registered host.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Host {
    /// Its id.
    pub id: String,
    /// Its name.
    pub hostname: String,
    /// The feed it follows.
    pub feed: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v`.
    pub kernel_version: String,
    /// The running kernel's build-id.
    pub build_id: String,
    /// The level applied (0: none).
    pub level: i64,
    /// The effective `uname -v`.
    pub effective_version: String,
    /// Levels its crash guard took out of play.
    #[serde(serialize_with = "json")]
    #[schema(value_type = Vec<i64>)]
    pub skipped: String,
    /// The agent's version.
    pub agent_version: String,
    /// Tags.
    #[serde(serialize_with = "json")]
    #[schema(value_type = Vec<String>)]
    pub tags: String,
    /// The registration key it registered with.
    pub registration_key: String,
    /// When it registered.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: i64,
    /// Its last check-in.
    #[serde(serialize_with = "opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_checkin: Option<i64>,
}

/// A registration key (without its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RegistrationKey {
    /// Its id.
    pub id: String,
    /// The feed hosts registering with it join.
    pub feed: String,
    /// What it is for.
    pub note: String,
    /// When it was created.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// By whom.
    pub created_by: String,
    /// When it was revoked.
    #[serde(serialize_with = "opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read only.
    ReadOnly,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }

    /// The role stored as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "read-only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// An admin API token (without its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AdminToken {
    /// Its name: who the audit trail names.
    pub name: String,
    /// `admin` or `read-only`.
    pub role: String,
    /// When it was created.
    #[serde(serialize_with = "time")]
    pub created_at: i64,
    /// By whom.
    pub created_by: String,
    /// When it was revoked.
    #[serde(serialize_with = "opt_time")]
    pub revoked_at: Option<i64>,
}

/// One admin action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// Who: a token name or `cli:<user>`.
    pub actor: String,
    /// What: `publish`, `promote`, …
    pub action: String,
    /// On what: a kernel and level, a feed, a key id, …
    pub target: String,
    /// The action's parameters and outcome.
    #[serde(serialize_with = "json")]
    #[schema(value_type = Object)]
    pub detail: String,
}

/// A host's report.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Report {
    /// Its id.
    pub id: String,
    /// The reporting host.
    pub host_id: String,
    /// When the server received it.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: i64,
    /// apply, update, revert, unload, boot.
    pub action: String,
    /// The level acted on.
    pub level: i64,
    /// applied, failed, refused, rolled-back.
    pub result: String,
    /// Why.
    pub reason: String,
    /// Tasks that held a transition up.
    #[serde(serialize_with = "json")]
    #[schema(value_type = Vec<String>)]
    pub stalled_tasks: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The level active afterwards.
    pub active_level: i64,
}
