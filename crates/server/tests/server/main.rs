//! noreboot-server's integration tests, one binary: each test starts a
//! real server on 127.0.0.1 port 0 (in process, with a clock it controls,
//! or the `noreboot-server` binary itself in `cli`) and talks to it over
//! HTTP. Bundles are made and signed with the `bundle` crate. Each runs on
//! SQLite, or with `NOREBOOT_TEST_DB=postgres` on PostgreSQL (`common`).

mod alerts;
mod apt;
mod checkin;
mod cli;
mod common;
mod compliance_report;
mod connections;
mod counts;
mod dashboard;
mod dashboard_sessions;
mod feeds;
mod flow;
mod hosts;
mod metrics;
mod multi;
mod openapi;
mod pages;
mod publish;
mod reports;
mod security;
mod transfer;
mod uncovered;
mod vex;
mod webhooks;

use test_support::pg;
