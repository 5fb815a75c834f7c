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
    /// The printable compliance report could not be rendered (its fonts
    /// missing, or the PDF writer failing).
    #[error("rendering the compliance report: {0}")]
    Render(String),
}

/// Whose fault an [`Error`] is and of what kind: the one classification
/// the HTTP status ([`crate::api::error::ApiError`]) and the command
/// line's exit status are both derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is not acceptable (400; exit 4).
    Invalid,
    /// What was named does not exist (404; exit 3).
    NotFound,
    /// It contradicts what exists (409; exit 4).
    Conflict,
    /// A bundle failed its checks (422; exit 4).
    Refused,
    /// No valid credentials (401; exit 4).
    Unauthorized,
    /// Credentials without the right (403; exit 4).
    Forbidden,
    /// The server's own fault: database, store, task (500; exit 1).
    Internal,
}

impl Error {
    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::BundleRefused(_) => ErrorKind::Refused,
            Error::Unauthorized(_) => ErrorKind::Unauthorized,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::Connect { .. }
            | Error::Db { .. }
            | Error::Sqlite { .. }
            | Error::Migrate(_)
            | Error::Blob(_)
            | Error::Task(_)
            | Error::Render(_) => ErrorKind::Internal,
        }
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
