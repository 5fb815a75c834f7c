//! Rebuilds the server when a migration changes: `sqlx::migrate!` embeds
//! the `migrations/` directory at compile time, which cargo does not watch.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
