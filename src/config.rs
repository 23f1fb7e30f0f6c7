//! Every setting of the service in one table, and their parsing.
//!
//! [`SETTINGS`] lists each setting once: its name, whether it is a secret, its default and a
//! one-line meaning. The README's configuration table is checked against it (a unit test
//! below), so the two cannot drift. [`Config::from_lookup`] parses every `[vars]` setting in
//! one pass, and the glue calls it once per isolate; the secrets are parsed where they are
//! used (a missing `API_KEYS` must not take `/health` down), by the functions named here.
//!
//! Parsing is pure: `from_lookup` takes a function that returns a setting by name, so tests
//! feed it a map and the glue feeds it `env.var`. A malformed setting is a [`ConfigError`]
//! naming it (never its value, which may be a secret), which the edge answers as
//! `config_error`: nothing falls back to a default silently, and nothing panics.

use crate::auth::{TokenRules, DEFAULT_TOKEN_MAX_TTL_S};
use crate::coordination::limiter::Policies;
use crate::http::cors::AllowList;
use crate::obs::Level;
use crate::rooms::limits::RoomLimits;
use crate::services::leads::Country;
use crate::services::notify::DeliveryPolicy;
use crate::sessions::providers::{
    Backend, DEFAULT_AI_CHAT_MODEL, DEFAULT_AI_STT_MODEL, DEFAULT_AI_TTS_MODEL,
    DEFAULT_AI_TURN_MODEL,
};
use crate::sessions::voice::VoiceLimits;

mod settings;

pub use settings::{readme_row, Setting, SETTINGS};

/// The `PUSHER_*` limits over [`crate::pusher::Limits`]'s defaults (Pusher's published ones).
fn pusher_limits(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crate::pusher::Limits, ConfigError> {
    let d = crate::pusher::Limits::default();
    let data = number(
        lookup,
        "PUSHER_MAX_EVENT_DATA_BYTES",
        d.max_event_data_bytes as u64,
        1,
        1024 * 1024,
    )? as usize;
    Ok(crate::pusher::Limits {
        max_event_data_bytes: data,
        // Room for a client event's data sent as an escaped string, plus the envelope.
        max_frame_bytes: 2 * data + 4096,
        max_channels_per_socket: number(
            lookup,
            "PUSHER_MAX_CHANNELS_PER_SOCKET",
            d.max_channels_per_socket as u64,
            1,
            10_000,
        )? as usize,
        max_presence_members: number(
            lookup,
            "PUSHER_PRESENCE_MAX_MEMBERS",
            d.max_presence_members as u64,
            1,
            100_000,
        )? as usize,
        client_events_per_second: number(
            lookup,
            "PUSHER_CLIENT_EVENTS_PER_SECOND",
            u64::from(d.client_events_per_second),
            1,
            10_000,
        )? as u32,
        ..d
    })
}

/// The service's settings (every `[vars]` setting, parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `ENVIRONMENT`: `local`, `staging` or `production` (shown by `/health`; default
    /// `production`; only `local` enables the dev token endpoint and the bench routes).
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
    /// `TOKEN_MAX_TTL_S`: what connection tokens must satisfy beyond their signature.
    pub tokens: TokenRules,
    /// `BENCH_ROUTES`: serve the bench routes outside `ENVIRONMENT=local`.
    pub bench_routes: bool,
    /// `REFUSAL_ALERT_THRESHOLD`: refusals per minute per isolate that raise an alert.
    pub refusal_alert_threshold: u64,
    /// `LEADS_DEFAULT_COUNTRY`: the country of national phone numbers.
    pub leads_country: &'static Country,
    /// `NOTIFY_*`: webhook delivery retries.
    pub delivery: DeliveryPolicy,
    /// `LLM_*` (and `AI_*` once the `AI` binding is known): the AI provider; see
    /// [`Config::backend`].
    pub provider: Backend,
    /// `AI_CHAT_MODEL`, `AI_STT_MODEL`: the models of the Workers AI binding.
    pub ai_models: (String, String, Option<String>, Option<String>),
    /// `VOICE_*`: voice session and per-user caps.
    pub voice: VoiceLimits,
    /// `PUSHER_GATEWAY_SHARDS`: gateway objects per Pusher app.
    pub pusher_shards: u32,
    /// `WS_GATEWAY_SHARDS`: gateway objects of protocol v2 sockets.
    pub ws_shards: u32,
    /// `WS_MAX_ROOMS_PER_SOCKET`: rooms one protocol v2 socket may be in.
    pub ws_max_rooms: usize,
    /// `PUSHER_GATEWAY_SWEEP_SECONDS`: how often a gateway with subscriptions sweeps those
    /// of sockets it no longer holds.
    pub pusher_sweep_s: u64,
    /// `PUSHER_WEBHOOK_DEAD_LETTERS`: dead webhooks kept per app.
    pub pusher_dead_letters: u64,
    /// `PUSHER_MAX_SOCKETS_PER_SHARD`: sockets one gateway shard holds.
    pub pusher_shard_capacity: u64,
    /// `PUSHER_*` limits of the Pusher protocol (event data, channels per socket, presence
    /// members, client event rate); the rest of [`crate::pusher::Limits`] at its defaults.
    pub pusher: crate::pusher::Limits,
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
    "ROOM_PUBLISH_USER_RATE",
    "ROOM_PUBLISH_USER_BURST",
    "ROOM_PUBLISH_ROOM_RATE",
    "ROOM_PUBLISH_ROOM_BURST",
    "ROOM_MAX_LAG_MESSAGES",
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
        let leads_country = Country::from_iso(
            lookup("LEADS_DEFAULT_COUNTRY").as_deref().unwrap_or("US"),
        )
        .map_err(|e| ConfigError {
            name: "LEADS_DEFAULT_COUNTRY",
            why: e.to_string(),
        })?;
        let d = DeliveryPolicy::DEFAULT;
        let delivery = DeliveryPolicy {
            base_ms: number(&lookup, "NOTIFY_BACKOFF_BASE_MS", d.base_ms, 1, 3_600_000)?,
            max_ms: number(&lookup, "NOTIFY_BACKOFF_MAX_MS", d.max_ms, 1, 86_400_000)?,
            max_attempts: number(
                &lookup,
                "NOTIFY_MAX_ATTEMPTS",
                u64::from(d.max_attempts),
                1,
                50,
            )? as u32,
        };
        let provider = Backend::select(&lookup, false).map_err(|why| ConfigError {
            name: if why.starts_with("LLM_TIMEOUT_MS") {
                "LLM_TIMEOUT_MS"
            } else {
                "LLM_BASE_URL"
            },
            why,
        })?;
        let model = |name: &str, default: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let v = VoiceLimits::default();
        let voice = VoiceLimits {
            session_audio_ms: number(
                &lookup,
                "VOICE_SESSION_AUDIO_MS",
                v.session_audio_ms,
                0,
                u64::MAX,
            )?,
            session_tokens: number(
                &lookup,
                "VOICE_SESSION_TOKENS",
                v.session_tokens,
                0,
                u64::MAX,
            )?,
            user_daily_audio_ms: number(
                &lookup,
                "VOICE_USER_DAILY_AUDIO_MS",
                v.user_daily_audio_ms,
                0,
                u64::MAX,
            )?,
            user_daily_tokens: number(
                &lookup,
                "VOICE_USER_DAILY_TOKENS",
                v.user_daily_tokens,
                0,
                u64::MAX,
            )?,
            turn_hold_ms: number(&lookup, "VOICE_TURN_HOLD_MS", v.turn_hold_ms, 0, 10_000)?,
            session_speech_chars: number(
                &lookup,
                "VOICE_SESSION_SPEECH_CHARS",
                v.session_speech_chars,
                0,
                u64::MAX,
            )?,
            user_daily_speech_chars: number(
                &lookup,
                "VOICE_USER_DAILY_SPEECH_CHARS",
                v.user_daily_speech_chars,
                0,
                u64::MAX,
            )?,
            max_reply_tokens: number(
                &lookup,
                "VOICE_MAX_REPLY_TOKENS",
                u64::from(v.max_reply_tokens),
                1,
                u64::from(u32::MAX),
            )? as u32,
            ..v
        };
        Ok(Self {
            // Unset means production: local conveniences need `ENVIRONMENT=local` said.
            environment: lookup("ENVIRONMENT")
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "production".into()),
            cors,
            allow_anonymous: flag(&lookup, "ALLOW_ANONYMOUS")?,
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
            tokens: TokenRules {
                max_ttl_s: number(
                    &lookup,
                    "TOKEN_MAX_TTL_S",
                    DEFAULT_TOKEN_MAX_TTL_S,
                    60,
                    30 * 86_400,
                )?,
            },
            bench_routes: flag(&lookup, "BENCH_ROUTES")?,
            refusal_alert_threshold: number(
                &lookup,
                "REFUSAL_ALERT_THRESHOLD",
                crate::metrics::REFUSAL_ALERT_THRESHOLD,
                1,
                1_000_000_000,
            )?,
            leads_country,
            delivery,
            provider,
            ai_models: (
                model("AI_CHAT_MODEL", DEFAULT_AI_CHAT_MODEL),
                model("AI_STT_MODEL", DEFAULT_AI_STT_MODEL),
                Some(model("AI_TTS_MODEL", DEFAULT_AI_TTS_MODEL)).filter(|m| m != "none"),
                Some(model("AI_TURN_MODEL", DEFAULT_AI_TURN_MODEL)).filter(|m| m != "none"),
            ),
            voice,
            pusher_shards: number(&lookup, "PUSHER_GATEWAY_SHARDS", 4, 1, 1024)? as u32,
            ws_shards: number(&lookup, "WS_GATEWAY_SHARDS", 4, 1, 1024)? as u32,
            ws_max_rooms: number(&lookup, "WS_MAX_ROOMS_PER_SOCKET", 100, 1, 1000)? as usize,
            pusher_sweep_s: number(&lookup, "PUSHER_GATEWAY_SWEEP_SECONDS", 300, 1, 86_400)?,
            pusher_dead_letters: number(&lookup, "PUSHER_WEBHOOK_DEAD_LETTERS", 1000, 1, 100_000)?,
            pusher_shard_capacity: number(
                &lookup,
                "PUSHER_MAX_SOCKETS_PER_SHARD",
                30_000,
                1,
                32_768,
            )?,
            pusher: pusher_limits(&lookup)?,
        })
    }

    /// Whether this is the local environment (`ENVIRONMENT=local`, set explicitly): the dev
    /// token endpoint and the bench routes exist only there.
    pub fn is_local(&self) -> bool {
        self.environment == "local"
    }

    /// The AI provider, given whether the `AI` binding exists: `LLM_BASE_URL` first, then
    /// the binding, else built-in ([`Backend::select`]'s order).
    pub fn backend(&self, has_ai_binding: bool) -> Backend {
        match &self.provider {
            Backend::Builtin if has_ai_binding => Backend::WorkersAi {
                chat_model: self.ai_models.0.clone(),
                stt_model: self.ai_models.1.clone(),
                tts_model: self.ai_models.2.clone(),
                turn_model: self.ai_models.3.clone(),
            },
            b => b.clone(),
        }
    }
}

fn flag(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match lookup(name).as_deref().map(str::trim) {
        None | Some("false") | Some("0") | Some("") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ConfigError {
            name,
            why: "expected true or false".into(),
        }),
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
        u64::from(d.publish_user_rate),
        u64::from(d.publish_user_burst),
        u64::from(d.publish_room_rate),
        u64::from(d.publish_room_burst),
        d.max_lag_messages,
        u64::from(d.max_strikes),
        d.batch_window_ms,
        d.batch_max_messages as u64,
    ];
    let bounds: [(u64, u64); 19] = [
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
        (0, 100_000),
        (1, 100_000),
        (0, 1_000_000),
        (1, 1_000_000),
        (0, 1_000_000),
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
        publish_user_rate: n[11] as u32,
        publish_user_burst: n[12] as u32,
        publish_room_rate: n[13] as u32,
        publish_room_burst: n[14] as u32,
        max_lag_messages: n[15],
        max_strikes: n[16] as u32,
        batch_window_ms: n[17],
        batch_max_messages: n[18] as usize,
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
        // Unset is production: no dev tokens, no bench routes.
        assert_eq!(c.environment, "production");
        assert!(!c.is_local());
        assert!(cfg(&[("ENVIRONMENT", "local")]).unwrap().is_local());
        assert!(!cfg(&[("ENVIRONMENT", "")]).unwrap().is_local());
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
        let c = cfg(&[
            ("ROOM_PUBLISH_USER_RATE", "0"),
            ("ROOM_PUBLISH_USER_BURST", "5"),
            ("ROOM_PUBLISH_ROOM_RATE", "300"),
            ("ROOM_PUBLISH_ROOM_BURST", "600"),
            ("ROOM_MAX_LAG_MESSAGES", "50"),
        ])
        .unwrap();
        let r = c.room;
        assert_eq!(
            (
                r.publish_user_rate,
                r.publish_user_burst,
                r.publish_room_rate,
                r.publish_room_burst,
                r.max_lag_messages
            ),
            (0, 5, 300, 600, 50)
        );
        for (name, bad) in [
            ("ROOM_PUBLISH_USER_RATE", "fast"),
            ("ROOM_PUBLISH_USER_BURST", "0"),
            ("ROOM_PUBLISH_ROOM_RATE", "2000000"),
            ("ROOM_PUBLISH_ROOM_BURST", "0"),
            ("ROOM_MAX_LAG_MESSAGES", "-1"),
        ] {
            assert_eq!(cfg(&[(name, bad)]).unwrap_err().name, name, "{name}={bad}");
        }
    }

    #[test]
    fn every_other_setting_is_checked_and_named() {
        let c = cfg(&[]).unwrap();
        assert!(!c.bench_routes);
        assert_eq!(
            c.refusal_alert_threshold,
            crate::metrics::REFUSAL_ALERT_THRESHOLD
        );
        assert_eq!(c.leads_country.iso, "US");
        assert_eq!(c.delivery, DeliveryPolicy::DEFAULT);
        assert_eq!(c.voice, VoiceLimits::default());
        assert_eq!(c.backend(false), Backend::Builtin);
        assert_eq!(c.backend(true).name(), "workers-ai");
        for (name, bad) in [
            ("BENCH_ROUTES", "yes"),
            ("TOKEN_MAX_TTL_S", "59"),
            ("REFUSAL_ALERT_THRESHOLD", "0"),
            ("LEADS_DEFAULT_COUNTRY", "ZZ"),
            ("NOTIFY_BACKOFF_BASE_MS", "soon"),
            ("NOTIFY_BACKOFF_MAX_MS", "-1"),
            ("NOTIFY_MAX_ATTEMPTS", "51"),
            ("LLM_BASE_URL", "ftp://x"),
            ("VOICE_SESSION_AUDIO_MS", "1e6"),
            ("VOICE_SESSION_TOKENS", "many"),
            ("VOICE_MAX_REPLY_TOKENS", "0"),
            ("VOICE_USER_DAILY_AUDIO_MS", "x"),
            ("VOICE_USER_DAILY_TOKENS", "-5"),
            ("ALLOW_ANONYMOUS", "maybe"),
        ] {
            assert_eq!(cfg(&[(name, bad)]).unwrap_err().name, name, "{name}={bad}");
        }
        let c = cfg(&[
            ("NOTIFY_MAX_ATTEMPTS", "3"),
            ("VOICE_SESSION_TOKENS", "7"),
            ("LEADS_DEFAULT_COUNTRY", "ca"),
        ])
        .unwrap();
        assert_eq!(c.delivery.max_attempts, 3);
        assert_eq!(c.voice.session_tokens, 7);
        assert_eq!(c.leads_country.iso, "CA");
    }

    #[test]
    fn parsing_reads_only_listed_settings() {
        let asked = std::cell::RefCell::new(Vec::new());
        Config::from_lookup(|k| {
            asked.borrow_mut().push(k.to_string());
            // With a backend configured, its other settings are read too.
            (k == "LLM_BASE_URL").then(|| "http://127.0.0.1:9".to_string())
        })
        .unwrap();
        let listed: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        for name in asked.borrow().iter() {
            assert!(
                listed.contains(&name.as_str()),
                "{name} is read but not in SETTINGS"
            );
        }
        // Every listed `[vars]` setting is parsed here; secrets are parsed where used.
        for s in SETTINGS.iter().filter(|s| !s.secret) {
            assert!(
                asked.borrow().iter().any(|a| a == s.name),
                "{} is never read",
                s.name
            );
        }
    }

    #[test]
    fn readme_configuration_table_matches_settings() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("| setting | default | meaning |")
            .expect("README has a configuration table");
        let rows: Vec<&str> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let expected: Vec<String> = SETTINGS.iter().map(readme_row).collect();
        assert_eq!(
            rows,
            expected,
            "README's configuration table differs from config::SETTINGS; it should read:\n{}",
            expected.join("\n")
        );
    }
}
