//! Helpers the tests of several crates share, so that none travels by
//! `#[path]`: C test sources compiled the way the kernel's build shapes
//! objects ([`gcc`]), the real-fix selections the differ's and the
//! factory's kernel tests read ([`fixes`]), an OpenVEX schema check
//! ([`openvex`]), and the server's private
//! PostgreSQL (`pg`, feature `pg`). A dev-dependency only.

pub mod fixes;
pub mod gcc;
pub mod openvex;
#[cfg(feature = "pg")]
pub mod pg;
