//! What the host agent needs to know about a Linux kernel: its release
//! string and its GNU build-id, which is the only reliable way to tell two
//! builds of the same release apart. Knows nothing of packages, compilers or
//! HTTP; the kernel workspaces of `kernel-tree` reuse the note parser to read
//! the same build-id out of a kernel image. Loaded modules are told apart
//! the same way, by their notes rather than their names ([`module_id`]).
//!
//! ```
//! // The bytes of /sys/kernel/notes (or of a vmlinux `.notes` section).
//! let mut notes = Vec::new();
//! notes.extend_from_slice(&4u32.to_le_bytes()); // namesz
//! notes.extend_from_slice(&4u32.to_le_bytes()); // descsz
//! notes.extend_from_slice(&3u32.to_le_bytes()); // NT_GNU_BUILD_ID
//! notes.extend_from_slice(b"GNU\0");
//! notes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
//! let id = kernel::notes::build_id(&notes).unwrap();
//! assert_eq!(id.to_string(), "deadbeef");
//! ```

pub mod identity;
pub mod kallsyms;
pub mod livepatch;
pub mod module_id;
pub mod notes;

pub use identity::{Identity, IdentityError};
pub use notes::{BuildId, NoteError};
