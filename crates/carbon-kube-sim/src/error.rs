//! The simulator's errors. Input errors name the file, the line and the field.

use std::path::PathBuf;

/// What went wrong while loading inputs or running a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file or folder could not be read or written.
    #[error("reading {}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A row or field of an input file is wrong.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// The column or key that is wrong.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file is structurally wrong (no header, missing column, no rows).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The inputs do not fit together (traces that do not overlap, a zone with no trace).
    #[error("{0}")]
    Inconsistent(String),
    /// The LP oracle failed.
    #[error("oracle: {0}")]
    Oracle(String),
}

impl SimError {
    /// A field error.
    pub fn field(
        path: impl Into<PathBuf>,
        line: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Field {
            path: path.into(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A whole-file error.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The simulator's result type.
pub type Result<T, E = SimError> = std::result::Result<T, E>;
