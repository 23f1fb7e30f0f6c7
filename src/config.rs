//! Configuration read from Worker variables and secrets.
//!
//! Parsing is pure: [`Config::from_lookup`] takes a function that returns a setting by name,
//! so tests feed it a map and the glue feeds it `env.var`. A malformed setting is reported by
//! name (never by value, which may be a secret) instead of panicking.

use crate::cors::AllowList;
use crate::room::RoomLimits;

/// The service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `ENVIRONMENT`: `local`, `staging` or `production` (informational, shown by `/health`).
    pub environment: String,
    /// `CORS_ORIGINS`: allowed browser origins besides the Worker's own.
    pub cors: AllowList,
    /// `ROOM_MAX_FRAME_BYTES`, `ROOM_MAX_BODY_BYTES`, `ROOM_MAX_NAME_CHARS`.
    pub room: RoomLimits,
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

impl Config {
    /// Reads every setting through `lookup`, applying defaults for absent ones.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = RoomLimits::default();
        let cors = match lookup("CORS_ORIGINS") {
            Some(s) => AllowList::parse(&s).map_err(|why| ConfigError {
                name: "CORS_ORIGINS",
                why,
            })?,
            None => AllowList::Origins(Vec::new()),
        };
        Ok(Self {
            environment: lookup("ENVIRONMENT").unwrap_or_else(|| "local".into()),
            cors,
            room: RoomLimits {
                max_frame_bytes: number(
                    &lookup,
                    "ROOM_MAX_FRAME_BYTES",
                    defaults.max_frame_bytes,
                    64,
                    1 << 20,
                )?,
                max_body_bytes: number(
                    &lookup,
                    "ROOM_MAX_BODY_BYTES",
                    defaults.max_body_bytes,
                    16,
                    1 << 20,
                )?,
                max_name_chars: number(
                    &lookup,
                    "ROOM_MAX_NAME_CHARS",
                    defaults.max_name_chars,
                    1,
                    256,
                )?,
            },
        })
    }
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(raw) = lookup(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<usize>() {
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
    }
}
