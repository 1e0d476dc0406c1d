//! Configuration: one TOML file, read as raw serde structs ([`file`]) that reject unknown
//! keys, then validated into the immutable model ([`model`]) the workers run from. Every
//! error names the file, the key and what is wrong.

pub mod file;
pub mod model;

pub use model::{
    BackendConfig, ClientLimits, ClusterConfig, Config, Correlation, Expect, HealthConfig,
    ListenerConfig, OnBackendDown, OutlierConfig, Persistence, PolicyKind, PoolConfig,
};

use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (the message names the key).
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A value is present but wrong.
    #[error("{file}: {key}: {problem}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the offending key, e.g. `listener.orders.codec.length_width`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config `text`; `path` is used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: file::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n    "),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    model::validate(raw, base).map_err(|(key, problem)| ConfigError::Invalid {
        file: path.to_path_buf(),
        key,
        problem,
    })
}
