//! The store's errors: [`StoreError`] for a refused operation (its kind maps to an HTTP status
//! at the API edge) and [`OpenError`] for a store that cannot start.

use std::sync::Arc;

/// What kind of refusal a [`StoreError`] is. The API maps each kind to one HTTP status (in
/// `api::http_response`); nothing else looks at the message to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Bad input (400).
    BadRequest,
    /// No such queue, job, routing or failure (404).
    NotFound,
    /// A `uniq` key already queued (409).
    Conflict,
    /// The map or the disk is nearly full: new jobs are refused so acks keep committing (507).
    Full,
    /// A configured limit would be passed, such as `queue.max_queues` (422); the message
    /// names the setting.
    Limit,
    /// The store is stopping or a commit failed (503).
    Unavailable,
    /// An `Idempotency-Key` whose first request is still being committed (409, with
    /// `Retry-After: 1`): the client tries again once it is.
    InFlight,
    /// An `Idempotency-Key` sent again with another request (422).
    KeyReused,
}

/// Why a store operation was refused: a kind, what was being done (the message a client sees),
/// and the underlying error when there is one. Cheap to clone (the source is shared), because
/// every op of a batch whose commit failed gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}{}", .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
pub struct StoreError {
    kind: StoreErrorKind,
    context: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for StoreError {
    /// Same kind and message; the sources are not compared.
    fn eq(&self, other: &StoreError) -> bool {
        self.kind == other.kind && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

impl StoreError {
    /// A refusal of `kind`, described by `context`.
    pub fn new(kind: StoreErrorKind, context: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// The same refusal, caused by `source` (shown after the context).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What the API maps to a status; never decide by the message.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// 400.
    pub fn bad_request(context: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::BadRequest, context)
    }

    /// 404.
    pub fn not_found(context: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::NotFound, context)
    }

    /// 409.
    pub fn conflict(context: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Conflict, context)
    }

    /// 507.
    pub fn full(context: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Full, context)
    }

    /// 422.
    pub fn limit(context: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Limit, context)
    }

    /// 503.
    pub fn unavailable(context: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Unavailable, context)
    }
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// LMDB refused (permissions, a map smaller than the data, a corrupt file).
    #[error("cannot open the LMDB store at {path}: {source}")]
    Lmdb {
        /// Data directory.
        path: std::path::PathBuf,
        /// heed's error.
        source: heed::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// Data directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored record this version cannot read.
    #[error("store at {path} holds data reprow cannot read: {message}")]
    Corrupt {
        /// Data directory.
        path: std::path::PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A queue or routing from the config file was refused by the store.
    #[error("{what}: {source}")]
    Config {
        /// Which definition (`put queue mail`, ...).
        what: String,
        /// The store's refusal.
        source: StoreError,
    },
}
