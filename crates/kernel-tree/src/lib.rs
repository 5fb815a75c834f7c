//! Debian kernel packages as cached, ready-to-use kernel workspaces.
//!
//! Given a release such as `6.1.0-47-cloud-amd64`, this crate finds the
//! matching image, headers, kbuild, source and debug-symbol packages in the
//! distribution archive (through apt, the distribution's own tools), checks
//! that their versions agree, downloads and unpacks them into a cache
//! directory without touching the host's `/boot` or `/usr/src`, reads the
//! kernel's identity out of the image, and builds external modules against
//! the headers with kbuild, always with the kernel's exact compiler: the
//! host's, or a build root's of the Debian release that ships it
//! ([`buildroot`]). Workspaces are evicted least recently used first when
//! the cache's cap (`NOREBOOT_CACHE_CAP`) requires room ([`evict`]). It
//! knows nothing of HTTP servers or databases.
//!
//! ```no_run
//! use kernel_tree::{AptArchive, Cache, Release, Workspace};
//! let cache = Cache::from_env()?;
//! let release: Release = "6.1.0-47-cloud-amd64".parse()?;
//! let ws = Workspace::fetch(&cache, &AptArchive::new(), &release)?;
//! println!("{} build-id {}", ws.release(), ws.identity().build_id);
//! # Ok::<(), kernel_tree::Error>(())
//! ```

pub mod archive;
pub mod buildroot;
pub mod cache;
pub mod discover;
pub mod error;
pub mod evict;
pub mod image;
pub mod index;
pub mod kbuild;
pub mod modules;
pub mod plan;
pub mod release;
pub mod size;
pub mod source;
pub mod symbols;
pub mod workspace;

pub use archive::{AptArchive, Archive, PackageInfo};
pub use buildroot::{BuildRoot, KernelTools, Toolchain};
pub use cache::Cache;
pub use discover::{all_available_releases, available_releases, select_release, Selection};
pub use error::Error;
pub use evict::{CacheStatus, Eviction, InUse};
pub use image::ImageIdentity;
pub use index::{BuildIndex, IndexedObject, Target};
pub use plan::{PackagePlan, PlannedPackage};
pub use release::Release;
pub use source::{Compiled, ScratchTree, SourceTree, DIFF_CFLAGS};
pub use symbols::SymbolTable;
pub use workspace::{Fetched, Workspace};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
