//! The agent protocol: the JSON messages a host agent and noreboot-server
//! exchange over HTTPS, shared by both so they cannot drift apart. Plain
//! data with serde; no I/O. Unknown fields are refused in requests (the
//! server sees exactly what it documents) and tolerated in responses (an
//! older agent keeps working against a newer server).
//!
//! Endpoints (all under [`API_PREFIX`]):
//!
//! | method and path | auth | body → answer |
//! |---|---|---|
//! | `POST /register` | registration key in the body | [`RegisterRequest`] → 201 [`RegisterResponse`] |
//! | `POST /checkin` | `Authorization: Bearer <host token>` | [`CheckinRequest`] → [`CheckinResponse`] |
//! | `GET /bundles/<sha256>` | host token | the bundle file |
//! | `POST /report` | host token | [`ReportRequest`] → 204 |
//!
//! Errors are 4xx/5xx with an [`ErrorBody`]. With the feature `openapi`
//! the messages derive `utoipa::ToSchema`, for the server's OpenAPI
//! document. [`vex`] makes the OpenVEX documents both publish for
//! vulnerability scanners.

use serde::{Deserialize, Serialize};

pub mod vex;

/// Where the agent API lives on a server.
pub const API_PREFIX: &str = "/api/v1";

/// A host asks to join the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The registration key an administrator created (bound to a feed).
    pub registration_key: String,
    /// The host's name.
    pub hostname: String,
    /// The running kernel.
    pub kernel: Kernel,
    /// The agent's version.
    pub agent_version: String,
    /// Free-form tags for the fleet view.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A kernel as the agent identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// GNU build-id, lowercase hex.
    pub build_id: String,
}

/// The server's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// The host's id on the server.
    pub host_id: String,
    /// The secret the host authenticates with from now on.
    pub token: String,
    /// The feed the registration key put it on.
    pub feed: String,
}

/// A periodic check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    /// The running kernel (it may have changed since registration).
    pub kernel: Kernel,
    /// The level active now (0: none).
    pub level: u32,
    /// The effective `uname -v` the host reports to scanners.
    pub effective_version: String,
    /// Levels the host's crash guard took out of play.
    #[serde(default)]
    pub skipped: Vec<u32>,
    /// The agent's version.
    pub agent_version: String,
}

/// What the host should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckinResponse {
    /// False when the server has no patches at all for this build-id.
    pub supported: bool,
    /// The level this host's feed wants it on; `None` with `supported`
    /// means "no level published for this kernel yet".
    #[serde(default)]
    pub target: Option<TargetLevel>,
    /// When to check in again, in seconds (the agent adds jitter).
    #[serde(default)]
    pub next_checkin_seconds: Option<u64>,
}

/// A level to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetLevel {
    /// The level.
    pub level: u32,
    /// Its patch name.
    pub name: String,
    /// Where to download the bundle: a path on the same server
    /// (`/api/v1/bundles/<sha256>`) or an absolute URL.
    pub bundle_url: String,
    /// sha256 of the bundle file, lowercase hex.
    pub sha256: String,
    /// Size of the bundle file in bytes.
    pub size: u64,
}

/// What happened on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// apply, update, revert, unload, boot.
    pub action: String,
    /// The level acted on.
    pub level: u32,
    /// applied, failed, refused, rolled-back.
    pub result: String,
    /// Why, when it did not apply.
    #[serde(default)]
    pub reason: String,
    /// Tasks that held a transition up ("comm (pid N) in [stack]").
    #[serde(default)]
    pub stalled_tasks: Vec<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// The level active afterwards.
    pub active_level: u32,
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What was wrong, for people.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_responses_tolerate_them() {
        let r = r#"{"kernel":{"release":"r","version":"v","build_id":"ab"},"level":1,"effective_version":"v","agent_version":"0.1","extra":1}"#;
        assert!(serde_json::from_str::<CheckinRequest>(r).is_err());
        let a = r#"{"supported":true,"target":null,"future":"x"}"#;
        let c: CheckinResponse = serde_json::from_str(a).unwrap();
        assert!(c.supported && c.target.is_none());
    }
}
