//! How the log fails, in terms an operator can act on (a full disk, a database from a
//! newer vigia, a version conflict the caller can handle).

use std::path::{Path, PathBuf};

use crate::events::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path} is not a vigia database, or it is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the database {path} was written by a newer vigia (schema {found}, this build knows up to {known}); upgrade vigia to open it")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("the database {database} was written by a newer vigia (schema {found}, this build knows up to {known}); upgrade vigia to open it")]
    TooNewPostgres {
        database: String,
        found: i64,
        known: usize,
    },
    #[error("cannot connect to PostgreSQL at {server} (sslmode={tls}): {reason}")]
    PgConnect {
        server: String,
        tls: &'static str,
        reason: String,
    },
    #[error(
        "version conflict on stream {stream:?}: expected {expected}, the stream is at {actual}"
    )]
    Conflict {
        stream: String,
        expected: String,
        actual: u64,
    },
    #[error("the disk is full (or the database reached its size cap); nothing of this write was recorded")]
    DiskFull,
    #[error("the database is read-only; nothing of this write was recorded: {0}")]
    ReadOnly(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("cannot encode an event payload: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("stored event {seq}: {source}")]
    Decode {
        seq: u64,
        #[source]
        source: DecodeError,
    },
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("the write was not recorded: {0}")]
    Write(String),
    /// A projection's column read back holds what its reader does not take (a text
    /// where a number belongs, a number out of range, bytes that are not UTF-8).
    #[error("a stored value cannot be read: {0}")]
    Column(String),
    #[error("a store task stopped before it finished: {0}")]
    Panicked(String),
}

impl StoreError {
    /// The same failure, for each caller whose events shared a transaction that failed.
    pub(crate) fn for_another_caller(&self) -> StoreError {
        match self {
            StoreError::DiskFull => StoreError::DiskFull,
            StoreError::ReadOnly(m) => StoreError::ReadOnly(m.clone()),
            StoreError::Corrupt { path, reason } => StoreError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
            other => StoreError::Write(other.to_string()),
        }
    }

    /// Maps SQLite's error codes onto what an operator needs to know.
    pub(crate) fn from_sqlite(err: rusqlite::Error, path: &Path) -> StoreError {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull,
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(err.to_string()),
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt {
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                }
            }
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => StoreError::Open {
                path: path.to_path_buf(),
                reason: err.to_string(),
            },
            _ => StoreError::Sqlite(err),
        }
    }
}
