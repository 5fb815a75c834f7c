//! The `admin` subcommand of `noreboot-server`: its arguments
//! ([`admin::AdminCommand`]), the dispatch that runs each as one
//! [`server::Context`] action, and how each action's result is printed
//! ([`render`]: a table or lines, or with `--json` the result itself).
//! Part of the binary, not of the `server` library.

pub mod admin;
pub mod render;
