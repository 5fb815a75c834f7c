//! Admin actions, shared by the CLI and the admin API, one module per
//! resource as in [`crate::api::admin`]: publishing, feeds, what feeds
//! serve (`releases`), kernels, levels, registration keys, API tokens,
//! hosts, host reports, agent packages and the audit trail. Every change runs in an
//! [`audit::AuditedTx`], whose commit writes the change's audit entry in
//! the same transaction, so there is no action without a record and no
//! record without an action.

pub mod audit;
pub mod feeds;
pub mod hosts;
pub mod kernels;
pub mod keys;
pub mod levels;
pub mod packages;
pub mod publish;
pub mod releases;
pub mod reports;
pub mod tokens;

pub use feeds::FeedState;
pub use hosts::{Moved, Retired, RetiredHost, Tagged};
pub use kernels::Coverage;
pub use keys::NewKey;
pub use publish::{Checked, Published};
pub use releases::{Promoted, Rollback};
pub(crate) use tokens::token_actor;
pub use tokens::{Actor, NewToken};
