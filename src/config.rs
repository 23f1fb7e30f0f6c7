//! Configuration read from Worker variables and secrets.
//!
//! Parsing is pure: [`Config::from_lookup`] takes a function that returns a setting by name,
//! so tests feed it a map and the glue feeds it `env.var`. A malformed setting is reported by
//! name (never by value, which may be a secret) instead of panicking.

use crate::coordination::limiter::Policies;
use crate::http::cors::AllowList;
use crate::obs::Level;
use crate::rooms::room::RoomLimits;

/// The service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `ENVIRONMENT`: `local`, `staging` or `production` (shown by `/health`; `local` enables
    /// the dev token endpoint).
    pub environment: String,
    /// `CORS_ORIGINS`: allowed browser origins besides the Worker's own.
    pub cors: AllowList,
    /// `ALLOW_ANONYMOUS`: whether sockets may connect without a token. Default off.
    pub allow_anonymous: bool,
    /// Room limits, from the `ROOM_*` settings.
    pub room: RoomLimits,
    /// `LIMIT_POLICIES`: named rate-limit policies (JSON laid over the defaults).
    pub policies: Policies,
    /// `LOG_LEVEL`: `debug`, `info` (default), `warn` or `error`.
    pub log_level: Level,
}

/// A setting that is present but malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name} is invalid: {why}")]
pub struct ConfigError {
    /// The setting's name.
    pub name: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// Every numeric `ROOM_*` setting, in the order `room_limits` reads them.
pub const ROOM_SETTINGS: &[&str] = &[
    "ROOM_MAX_FRAME_BYTES",
    "ROOM_MAX_BODY_BYTES",
    "ROOM_MAX_NAME_CHARS",
    "ROOM_MAX_META_BYTES",
    "ROOM_MAX_MEMBERS",
    "ROOM_MAX_CONNECTIONS",
    "ROOM_HISTORY_MAX_MESSAGES",
    "ROOM_HISTORY_MAX_AGE_MS",
    "ROOM_DEDUPE_WINDOW_MS",
    "ROOM_PUBLISH_RATE",
    "ROOM_PUBLISH_BURST",
    "ROOM_MAX_STRIKES",
    "ROOM_BATCH_WINDOW_MS",
    "ROOM_BATCH_MAX_MESSAGES",
];

impl Config {
    /// Reads every setting through `lookup`, applying defaults for absent ones.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let cors = match lookup("CORS_ORIGINS") {
            Some(s) => AllowList::parse(&s).map_err(|why| ConfigError {
                name: "CORS_ORIGINS",
                why,
            })?,
            None => AllowList::Origins(Vec::new()),
        };
        let allow_anonymous = match lookup("ALLOW_ANONYMOUS").as_deref().map(str::trim) {
            None | Some("false") | Some("0") | Some("") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                return Err(ConfigError {
                    name: "ALLOW_ANONYMOUS",
                    why: "expected true or false".into(),
                })
            }
        };
        Ok(Self {
            environment: lookup("ENVIRONMENT").unwrap_or_else(|| "local".into()),
            cors,
            allow_anonymous,
            room: room_limits(&lookup)?,
            log_level: match lookup("LOG_LEVEL") {
                Some(l) => Level::parse(&l).ok_or(ConfigError {
                    name: "LOG_LEVEL",
                    why: "expected debug, info, warn or error".into(),
                })?,
                None => Level::Info,
            },
            policies: match lookup("LIMIT_POLICIES") {
                Some(json) => Policies::from_json(&json).map_err(|e| ConfigError {
                    name: "LIMIT_POLICIES",
                    why: e.to_string(),
                })?,
                None => Policies::default(),
            },
        })
    }
}

fn room_limits(lookup: &impl Fn(&str) -> Option<String>) -> Result<RoomLimits, ConfigError> {
    let d = RoomLimits::default();
    let mut n = [
        d.max_frame_bytes as u64,
        d.max_body_bytes as u64,
        d.max_name_chars as u64,
        d.max_meta_bytes as u64,
        d.max_members as u64,
        d.max_connections as u64,
        d.history_max_messages,
        d.history_max_age_ms,
        d.dedupe_window_ms,
        u64::from(d.publish_rate),
        u64::from(d.publish_burst),
        u64::from(d.max_strikes),
        d.batch_window_ms,
        d.batch_max_messages as u64,
    ];
    let bounds: [(u64, u64); 14] = [
        (64, 1 << 20),
        (16, 1 << 20),
        (1, 256),
        (2, 2048),
        (1, 100_000),
        (1, 100_000),
        (1, 1_000_000),
        (1000, 365 * 24 * 3600 * 1000),
        (1000, 7 * 24 * 3600 * 1000),
        (1, 10_000),
        (1, 100_000),
        (1, 10_000),
        (0, 1000),
        (1, 1000),
    ];
    for (i, name) in ROOM_SETTINGS.iter().enumerate() {
        n[i] = number(lookup, name, n[i], bounds[i].0, bounds[i].1)?;
    }
    Ok(RoomLimits {
        max_frame_bytes: n[0] as usize,
        max_body_bytes: n[1] as usize,
        max_name_chars: n[2] as usize,
        max_meta_bytes: n[3] as usize,
        max_members: n[4] as usize,
        max_connections: n[5] as usize,
        history_max_messages: n[6],
        history_max_age_ms: n[7],
        dedupe_window_ms: n[8],
        publish_rate: n[9] as u32,
        publish_burst: n[10] as u32,
        max_strikes: n[11] as u32,
        batch_window_ms: n[12],
        batch_max_messages: n[13] as usize,
    })
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = lookup(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError {
            name,
            why: format!("expected a whole number from {min} to {max}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.environment, "local");
        assert_eq!(c.room, RoomLimits::default());
        assert!(!c.allow_anonymous);
    }

    #[test]
    fn overrides_and_errors_name_the_setting() {
        let c = cfg(&[("ROOM_MAX_BODY_BYTES", "100"), ("CORS_ORIGINS", "*")]).unwrap();
        assert_eq!(c.room.max_body_bytes, 100);
        assert_eq!(c.cors, AllowList::Any);
        assert_eq!(
            cfg(&[("ROOM_MAX_BODY_BYTES", "lots")]).unwrap_err().name,
            "ROOM_MAX_BODY_BYTES"
        );
        assert_eq!(
            cfg(&[("ROOM_MAX_NAME_CHARS", "0")]).unwrap_err().name,
            "ROOM_MAX_NAME_CHARS"
        );
        assert_eq!(
            cfg(&[("CORS_ORIGINS", "nope")]).unwrap_err().name,
            "CORS_ORIGINS"
        );
        let c = cfg(&[
            ("ROOM_BATCH_WINDOW_MS", "20"),
            ("ROOM_BATCH_MAX_MESSAGES", "8"),
        ])
        .unwrap();
        assert_eq!((c.room.batch_window_ms, c.room.batch_max_messages), (20, 8));
        assert_eq!(
            cfg(&[("ROOM_BATCH_WINDOW_MS", "5000")]).unwrap_err().name,
            "ROOM_BATCH_WINDOW_MS"
        );
    }
}
