//! Build script: tells cargo to rebuild when a migration changes.
// The migrations are embedded by `sqlx::migrate!`; rebuild when one changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
