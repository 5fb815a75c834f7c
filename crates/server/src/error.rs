//! The error policy. The library has one error type, [`Error`], whose
//! variants say how the caller went wrong (bad input, not found, conflict,
//! refused bundle, missing rights) or that the server failed (database,
//! blob store); the HTTP layer (`api::error`) maps each variant to one
//! status code and the binary (`main.rs`) to one exit code, so neither
//! has to inspect messages. Server failures carry the operation that
//! failed as context; their details go to the log, not to HTTP clients.

use crate::blobs::BlobError;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a value is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (a level not newer than
    /// the last, a name taken, nothing to roll back).
    #[error("{0}")]
    Conflict(String),
    /// A bundle failed verification at publication.
    #[error("bundle refused: {0}")]
    BundleRefused(String),
    /// No credentials, or credentials the server does not accept.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The database server could not be reached, or refused the
    /// connection.
    #[error("cannot connect to the database {url}: {cause}")]
    Connect {
        /// The database URL, without its password.
        url: String,
        /// Why (not a `source`: the message says it already, and error
        /// chains would say it again).
        cause: sqlx::Error,
    },
    /// A database operation failed.
    #[error("database: {context}: {source}")]
    Db {
        /// What the server was doing.
        context: &'static str,
        /// The cause.
        source: sqlx::Error,
    },
    /// The check-in writer's direct SQLite connection failed.
    #[error("database: {context}: {source}")]
    Sqlite {
        /// What the server was doing.
        context: &'static str,
        /// The cause.
        source: rusqlite::Error,
    },
    /// Running the schema migrations failed.
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The bundle store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    /// Whether the fault is the server's (5xx) rather than the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Db { .. }
                | Error::Sqlite { .. }
                | Error::Migrate(_)
                | Error::Blob(_)
                | Error::Task(_)
        )
    }
}

/// Adds the operation's name to a database error.
pub trait DbContext<T> {
    /// Wraps the error as [`Error::Db`] with `context`.
    fn ctx(self, context: &'static str) -> Result<T, Error>;
}

impl<T> DbContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Db { context, source })
    }
}

impl<T> DbContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Sqlite { context, source })
    }
}

/// Shorthand for [`Error::Invalid`].
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Shorthand for [`Error::NotFound`].
pub fn not_found(msg: impl Into<String>) -> Error {
    Error::NotFound(msg.into())
}

/// Shorthand for [`Error::Conflict`].
pub fn conflict(msg: impl Into<String>) -> Error {
    Error::Conflict(msg.into())
}
