//! The `[admin]` section: the admin listener (metrics, the JSON API, the status page), its
//! bearer token, the twemproxy-compatible stats port, and the sampled access log.

use super::values::{resolve, Invalid};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the admin listener binds unless `listen` says otherwise: loopback.
const DEFAULT_LISTEN: &str = "127.0.0.1:9901";

/// `[admin]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<String>,
    token: Option<String>,
    token_env: Option<String>,
    twemproxy_stats: Option<String>,
    twemproxy_stats_public: Option<bool>,
    access_log: Option<RawAccessLog>,
}

/// `[admin.access_log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: String,
    sample: Option<f64>,
}

/// The validated `[admin]` section.
#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    /// Where the admin HTTP listener binds.
    pub listen: SocketAddr,
    /// The bearer token every request but the status page itself must carry, if set.
    pub token: Option<String>,
    /// Where nutcracker's JSON stats are served (one document per connection), if set.
    pub twemproxy_stats: Option<SocketAddr>,
    /// The sampled access log, if set.
    pub access_log: Option<AccessLogConfig>,
}

/// The sampled access log: one JSON line per sampled request.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// The file lines are appended to (`-` for standard output).
    pub path: PathBuf,
    /// The share of requests logged, in (0, 1].
    pub sample: f64,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("twemproxy_stats", &self.twemproxy_stats)
            .field("access_log", &self.access_log)
            .finish()
    }
}

/// Validates `[admin]`; relative paths are resolved against `base`. A listener on an
/// address other than loopback needs a token, from `token` or the variable `token_env`
/// names.
pub(super) fn validate(raw: RawAdmin, base: &std::path::Path) -> Result<AdminConfig, Invalid> {
    let listen = resolve(raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN))
        .map_err(|e| ("admin.listen".to_string(), e))?;
    let token_key = if raw.token_env.is_some() {
        "admin.token_env"
    } else {
        "admin.token"
    };
    let token = match (raw.token, raw.token_env) {
        (Some(_), Some(_)) => {
            return Err((
                "admin.token_env".into(),
                "set token or token_env, not both".into(),
            ))
        }
        (Some(t), None) => Some(t),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(t) => Some(t),
            Err(_) => {
                return Err((
                    "admin.token_env".into(),
                    format!("the environment variable {var} is not set"),
                ))
            }
        },
        (None, None) => None,
    };
    if let Some(t) = &token {
        if t.len() < 16 || t.chars().any(|c| !c.is_ascii_graphic()) {
            return Err((
                token_key.into(),
                "the token must be at least 16 printable ASCII characters, without spaces".into(),
            ));
        }
    }
    if token.is_none() && !listen.ip().is_loopback() {
        return Err((
            "admin.listen".into(),
            format!(
                "{listen} is not a loopback address: set admin.token (or admin.token_env) so \
                 that only holders of the token can read and change the balancer"
            ),
        ));
    }
    let twemproxy_stats = raw
        .twemproxy_stats
        .map(|a| resolve(&a).map_err(|e| ("admin.twemproxy_stats".to_string(), e)))
        .transpose()?;
    if twemproxy_stats.is_some_and(|a| !a.ip().is_loopback())
        && raw.twemproxy_stats_public != Some(true)
    {
        return Err((
            "admin.twemproxy_stats".into(),
            "is not a loopback address, and the stats port cannot ask for a token: anyone who \
             reaches it reads every listener and backend; set twemproxy_stats_public = true to \
             serve it there anyway"
                .into(),
        ));
    }
    if twemproxy_stats.is_some_and(|a| a == listen && a.port() != 0) {
        return Err((
            "admin.twemproxy_stats".into(),
            "must differ from admin.listen".into(),
        ));
    }
    let access_log = raw
        .access_log
        .map(|a| {
            let sample = a.sample.unwrap_or(0.01);
            if !(sample > 0.0 && sample <= 1.0) {
                return Err((
                    "admin.access_log.sample".to_string(),
                    format!("must be in (0, 1], got {sample}"),
                ));
            }
            let path = PathBuf::from(&a.path);
            let path = if a.path == "-" || path.is_absolute() {
                path
            } else {
                base.join(path)
            };
            Ok(AccessLogConfig { path, sample })
        })
        .transpose()?;
    Ok(AdminConfig {
        listen,
        token,
        twemproxy_stats,
        access_log,
    })
}
