//! noreboot-server: distributes signed live patch bundles to a fleet and
//! keeps the fleet's state. Bundles are published per kernel build-id as
//! cumulative levels and released to feeds; hosts register with a key,
//! check in, and are told the level their feed serves. The same
//! operations ([`Context`]'s methods in `admin`, one module per resource,
//! and `fleet`) back the admin CLI and the HTTP API (`api`), and every
//! admin action is audited (`admin::audit`).
//!
//! Layers, in the order a request meets them: `api` (HTTP, auth, limits)
//! → `admin` / `fleet` / `checkin` (operations; check-ins are
//! batched) → `store` and `target` (shared queries and the feed rule) →
//! `db` and `blobs` (storage). Errors: see `error`.
//! Compliance reports (`report`) are computed from the same reads and
//! served as JSON/CSV, Prometheus metrics and the `/ui` dashboard, whose
//! sign-ins are database-backed sessions (`sessions`). OpenVEX documents
//! for scanners (`vex`) come from the same reads; events people act on
//! go out as signed webhooks (`webhooks`), from an outbox in the database.

pub mod admin;
pub mod api;
pub mod apt;
pub mod blobs;
pub mod checkin;
pub mod clock;
pub mod context;
pub mod counts;
pub mod db;
pub mod deb;
pub mod error;
pub mod fleet;
pub mod history;
pub mod model;
pub mod page;
pub mod printable;
pub mod report;
pub mod secrets;
pub mod sessions;
pub mod store;
pub mod target;
pub mod tls;
pub mod transfer;
pub mod validate;
pub mod vex;
pub mod webhooks;

pub use context::{Context, Options};
pub use error::{Error, ErrorKind};
