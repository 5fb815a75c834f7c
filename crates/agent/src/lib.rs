//! The noreboot host agent as a library: the engine that applies, watches,
//! reverts and reconciles live patch levels against the running kernel,
//! its on-disk state, journal and audit log, the update sources and the
//! server client, and the host's OpenVEX document for scanners (`vex`).
//! `main.rs` is the `noreboot` command line over it; the logic here is
//! unit-tested without a kernel where it needs none.

pub mod audit;
pub mod client;
pub mod config;
pub mod engine;
pub mod journal;
pub mod lock;
pub mod state;
pub mod update;
pub mod vex;
