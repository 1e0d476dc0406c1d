//! The `[cluster.health]` (active probes) and `[cluster.outlier]` (passive ejection)
//! sections.

use super::values::{hex, nonzero_duration, Invalid};
use serde::Deserialize;
use std::time::Duration;
use switchyard_core::settings::OutlierSettings;

/// `[cluster.health]`: active probes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    send: Option<String>,
    send_hex: Option<String>,
    expect: Option<String>,
    expect_hex: Option<String>,
    expect_regex: Option<String>,
}

/// `[cluster.outlier]`: passive ejection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutlier {
    consecutive_failures: Option<u32>,
    base_ejection: Option<String>,
    max_ejection: Option<String>,
    max_ejected_percent: Option<u32>,
}

/// How a health probe judges an answer.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The answer starts with these bytes.
    Prefix(Vec<u8>),
    /// The answer (as lossy UTF-8) matches this regular expression.
    Regex(regex_lite::Regex),
}

/// `[cluster.health]`: active probes, HAProxy's meanings.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Time a probe may take (connect, send, and read the expected answer).
    pub timeout: Duration,
    /// Consecutive passes that bring a failed backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    /// Bytes sent after connecting; `None` for a plain TCP connect check.
    pub send: Option<Vec<u8>>,
    /// What the answer must look like; `None` accepts any connect.
    pub expect: Option<Expect>,
}

pub(crate) fn validate_health(
    key: &dyn Fn(&str) -> String,
    h: RawHealth,
) -> Result<HealthConfig, Invalid> {
    let one_of = |names: [(&str, bool); 3]| -> Result<(), Invalid> {
        let set: Vec<&str> = names.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
        if set.len() > 1 {
            return Err((
                key(&format!("health.{}", set[1])),
                format!("conflicts with health.{}", set[0]),
            ));
        }
        Ok(())
    };
    one_of([
        ("send", h.send.is_some()),
        ("send_hex", h.send_hex.is_some()),
        ("", false),
    ])?;
    one_of([
        ("expect", h.expect.is_some()),
        ("expect_hex", h.expect_hex.is_some()),
        ("expect_regex", h.expect_regex.is_some()),
    ])?;
    let send = match (h.send, h.send_hex) {
        (Some(t), _) => Some(t.into_bytes()),
        (_, Some(x)) => Some(hex(&key("health.send_hex"), &x)?),
        _ => None,
    };
    let expect = match (h.expect, h.expect_hex, h.expect_regex) {
        (Some(t), _, _) => Some(Expect::Prefix(t.into_bytes())),
        (_, Some(x), _) => Some(Expect::Prefix(hex(&key("health.expect_hex"), &x)?)),
        (_, _, Some(r)) => Some(Expect::Regex(regex_lite::Regex::new(&r).map_err(|e| {
            (
                key("health.expect_regex"),
                format!("not a valid regular expression: {e}"),
            )
        })?)),
        _ => None,
    };
    let count = |name: &str, v: Option<u32>, default: u32| -> Result<u32, Invalid> {
        match v.unwrap_or(default) {
            0 => Err((key(&format!("health.{name}")), "must be at least 1".into())),
            n => Ok(n),
        }
    };
    let interval = nonzero_duration(
        &key("health.interval"),
        h.interval.as_ref(),
        Duration::from_secs(2),
    )?;
    let timeout = nonzero_duration(
        &key("health.timeout"),
        h.timeout.as_ref(),
        Duration::from_secs(1),
    )?;
    Ok(HealthConfig {
        interval,
        timeout,
        rise: count("rise", h.rise, 2)?,
        fall: count("fall", h.fall, 3)?,
        send,
        expect,
    })
}

pub(crate) fn validate_outlier(
    key: &dyn Fn(&str) -> String,
    o: RawOutlier,
) -> Result<OutlierSettings, Invalid> {
    let consecutive_failures = o.consecutive_failures.unwrap_or(5);
    if consecutive_failures == 0 {
        return Err((
            key("outlier.consecutive_failures"),
            "must be at least 1".into(),
        ));
    }
    let max_ejected_percent = o.max_ejected_percent.unwrap_or(50);
    if max_ejected_percent > 100 {
        return Err((
            key("outlier.max_ejected_percent"),
            format!("must be 0 to 100, got {max_ejected_percent}"),
        ));
    }
    let base_ejection = nonzero_duration(
        &key("outlier.base_ejection"),
        o.base_ejection.as_ref(),
        Duration::from_secs(10),
    )?;
    let max_ejection = nonzero_duration(
        &key("outlier.max_ejection"),
        o.max_ejection.as_ref(),
        Duration::from_secs(300),
    )?;
    if max_ejection < base_ejection {
        return Err((
            key("outlier.max_ejection"),
            "must not be shorter than base_ejection".into(),
        ));
    }
    Ok(OutlierSettings {
        consecutive_failures,
        base_ejection,
        max_ejection,
        max_ejected_percent,
    })
}
