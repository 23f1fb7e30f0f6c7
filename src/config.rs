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
};
use crate::sessions::voice::VoiceLimits;

/// One setting: what the README's configuration table says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The `[vars]` or secret name.
    pub name: &'static str,
    /// Whether it belongs in a secret (`wrangler secret put`) rather than `[vars]`.
    pub secret: bool,
    /// The default as documented (what an unset setting means).
    pub default: &'static str,
    /// What it does, in one line (Markdown).
    pub doc: &'static str,
}

const fn var(name: &'static str, default: &'static str, doc: &'static str) -> Setting {
    Setting {
        name,
        secret: false,
        default,
        doc,
    }
}

const fn secret(name: &'static str, default: &'static str, doc: &'static str) -> Setting {
    Setting {
        name,
        secret: true,
        default,
        doc,
    }
}

/// Every setting the service reads, in the README's order.
pub const SETTINGS: &[Setting] = &[
    var(
        "ENVIRONMENT",
        "`production`",
        "shown by `/health`; only an explicit `local` (the top level of `wrangler.toml`) \
         enables `POST /api/dev/token` and the bench routes",
    ),
    var("LOG_LEVEL", "`info`", "`debug`, `info`, `warn` or `error`"),
    var(
        "CORS_ORIGINS",
        "local: `http://localhost:8787,http://127.0.0.1:8787`",
        "browser origins allowed besides the Worker's own; comma-separated, or `*`",
    ),
    var(
        "ALLOW_ANONYMOUS",
        "`false` (local: `true`)",
        "whether sockets may connect without a token",
    ),
    secret(
        "AUTH_SECRET",
        "local: a dev value in `[vars]`",
        "HS256 key for connection tokens, ≥ 16 bytes",
    ),
    var(
        "TOKEN_MAX_TTL_S",
        "86400",
        "longest connection-token lifetime accepted (`exp` minus `iat`, or minus now), \
         60–2592000 s; longer tokens are refused `invalid_token`",
    ),
    secret(
        "API_KEYS",
        "local: `dev:roomkeeper-local-dev-api-key`",
        "comma-separated `name:key` (or bare keys), each key ≥ 16 bytes",
    ),
    var(
        "ROOM_MAX_FRAME_BYTES",
        "16384",
        "largest accepted WebSocket frame (checked before parsing)",
    ),
    var(
        "ROOM_MAX_BODY_BYTES",
        "8192",
        "largest message body, as compact JSON",
    ),
    var("ROOM_MAX_NAME_CHARS", "32", "longest display name"),
    var(
        "ROOM_MAX_META_BYTES",
        "256",
        "largest member metadata, as compact JSON",
    ),
    var("ROOM_MAX_MEMBERS", "1000", "distinct users per room"),
    var("ROOM_MAX_CONNECTIONS", "2000", "open connections per room"),
    var(
        "ROOM_HISTORY_MAX_MESSAGES",
        "1000",
        "history kept, by count (storage deletes what falls out in batches of 64, which are never read)",
    ),
    var(
        "ROOM_HISTORY_MAX_AGE_MS",
        "86400000",
        "history kept, by age",
    ),
    var(
        "ROOM_DEDUPE_WINDOW_MS",
        "600000",
        "how long publish ids / idempotency keys are remembered at least (and while their message is in history)",
    ),
    var(
        "ROOM_PUBLISH_RATE",
        "20",
        "publishes per second per connection (sustained)",
    ),
    var(
        "ROOM_PUBLISH_BURST",
        "40",
        "publishes at once per connection",
    ),
    var(
        "ROOM_PUBLISH_USER_RATE",
        "40",
        "publishes per second across all of one user's connections (sustained; 0: off); \
         each anonymous connection is its own user",
    ),
    var(
        "ROOM_PUBLISH_USER_BURST",
        "80",
        "publishes at once across one user's connections",
    ),
    var(
        "ROOM_PUBLISH_ROOM_RATE",
        "1000",
        "publishes per second into one room from everyone, sockets and HTTP broadcasts \
         together (sustained; 0: off)",
    ),
    var(
        "ROOM_PUBLISH_ROOM_BURST",
        "2000",
        "publishes at once into one room",
    ),
    var(
        "ROOM_MAX_LAG_MESSAGES",
        "1000",
        "messages a connection that reports `seen` may fall behind before close 4008 \
         (a v2 socket: summed over its rooms) ([protocol](docs/PROTOCOL.md#slow-readers); \
         0: off)",
    ),
    var(
        "ROOM_MAX_STRIKES",
        "20",
        "refused frames in a row before close 4500",
    ),
    var(
        "ROOM_BATCH_WINDOW_MS",
        "0 (off)",
        "batch window, 0–1000 ms: messages a v1 socket would receive within it arrive as \
         one `batch` frame; not used while v2 or Pusher subscribers are in the room \
         ([protocol](docs/PROTOCOL.md#batching))",
    ),
    var(
        "ROOM_BATCH_MAX_MESSAGES",
        "64",
        "most messages in one batch frame (1–1000); a full batch leaves at once",
    ),
    var(
        "BENCH_ROUTES",
        "`false`",
        "`true` serves the bench-only routes `/api/bench/raw/…` and `/api/bench/floor` (a minimal route, the router's baseline) outside `ENVIRONMENT=local` \
         (needs the `BENCH` binding, top level only)",
    ),
    var(
        "LIMIT_POLICIES",
        "built-in (`connect` 20/10 s, `api` 600/60 s, `publish`); local: generous",
        "JSON `{\"name\":{\"rate\",\"period_ms\",\"burst\"}}` laid over the defaults \
         ([docs/COORDINATION.md](docs/COORDINATION.md))",
    ),
    var(
        "REFUSAL_ALERT_THRESHOLD",
        "100",
        "rate-limit refusals within a minute (per router isolate) that raise one \
         `refusals_spiking` alert ([operations](docs/OPERATIONS.md#alerts))",
    ),
    var(
        "LEADS_DEFAULT_COUNTRY",
        "`US` (local: `CA`)",
        "country (ISO code) for national phone numbers",
    ),
    secret(
        "NOTIFY_DESTINATIONS",
        "none (notifications are `skipped`, ops room only)",
        "JSON `{\"hot-leads\": URL, \"leads-incoming\": URL, \"ops\": URL}`",
    ),
    var(
        "NOTIFY_BACKOFF_BASE_MS",
        "5000",
        "first retry delay of a webhook delivery, 1–3600000 ms",
    ),
    var(
        "NOTIFY_BACKOFF_MAX_MS",
        "600000",
        "longest retry delay of a webhook delivery, 1–86400000 ms",
    ),
    var(
        "NOTIFY_MAX_ATTEMPTS",
        "10",
        "delivery attempts before a notification is dead-lettered, 1–50",
    ),
    secret(
        "WEBHOOK_SECRETS",
        "local: `{\"payments\": \"roomkeeper-local-webhook-secret\"}`",
        "HMAC secret per inbound webhook source",
    ),
    var(
        "LLM_BASE_URL",
        "none (built-in provider)",
        "OpenAI-compatible backend for voice and chat sessions \
         ([docs/SESSIONS.md](docs/SESSIONS.md))",
    ),
    secret(
        "LLM_API_KEY",
        "none",
        "bearer token for that backend, if it wants one",
    ),
    var("LLM_CHAT_MODEL", "`default`", "chat model of that backend"),
    var(
        "LLM_STT_MODEL",
        "`whisper-1`",
        "transcription model of that backend",
    ),
    var(
        "LLM_TTS_MODEL",
        "`tts-1`",
        "speech model of that backend (`POST /v1/audio/speech`); `none`: replies are not \
         spoken",
    ),
    var(
        "LLM_TTS_VOICE",
        "`alloy`",
        "voice of that backend's speech",
    ),
    var(
        "LLM_TIMEOUT_MS",
        "15000 (transcription, speech) / 20000 (generation)",
        "timeout of that backend, 100–600000 ms",
    ),
    var(
        "AI_CHAT_MODEL",
        "`@cf/meta/llama-3.1-8b-instruct`",
        "text model of the Workers AI binding (production only)",
    ),
    var(
        "AI_STT_MODEL",
        "`@cf/openai/whisper`",
        "speech-to-text model of the Workers AI binding (production only)",
    ),
    var(
        "AI_TTS_MODEL",
        "`@cf/deepgram/aura-1`",
        "text-to-speech model of the Workers AI binding (production only; `none`: replies \
         are not spoken)",
    ),
    var(
        "VOICE_SESSION_AUDIO_MS",
        "1800000",
        "audio one voice session may stream",
    ),
    var(
        "VOICE_SESSION_TOKENS",
        "20000",
        "reply tokens one voice session may generate",
    ),
    var(
        "VOICE_MAX_REPLY_TOKENS",
        "400",
        "most tokens one voice reply may use",
    ),
    var(
        "VOICE_USER_DAILY_AUDIO_MS",
        "7200000",
        "audio per user per UTC day across all of a user's voice sessions (kept in the \
         user's `Quota` object; anonymous users by address, IPv6 by its /64)",
    ),
    var(
        "VOICE_USER_DAILY_TOKENS",
        "100000",
        "reply tokens per user per UTC day across all of a user's voice sessions",
    ),
    var(
        "VOICE_SESSION_SPEECH_CHARS",
        "50000",
        "characters of reply text one voice session may have synthesized into speech",
    ),
    var(
        "VOICE_USER_DAILY_SPEECH_CHARS",
        "250000",
        "characters synthesized into speech per user per UTC day across all of a user's \
         voice sessions",
    ),
    secret(
        "PUSHER_APPS",
        "local: app `1`, key `roomkeeper-local-key` (none elsewhere)",
        "the Pusher apps, a JSON array of `{id, key, secret, enabled?, client_events?, \
         webhooks?}` ([docs/PUSHER.md](docs/PUSHER.md))",
    ),
    var(
        "WS_GATEWAY_SHARDS",
        "4",
        "gateway objects that share the protocol v2 sockets (`/api/ws`), 1–1024; they hold at \
         most `PUSHER_MAX_SOCKETS_PER_SHARD` sockets each and sweep every \
         `PUSHER_GATEWAY_SWEEP_SECONDS`, like the Pusher gateway's",
    ),
    var(
        "WS_MAX_ROOMS_PER_SOCKET",
        "100",
        "rooms one protocol v2 socket may be subscribed to at once (more: `too_many_rooms`), \
         1–1000",
    ),
    var(
        "PUSHER_GATEWAY_SHARDS",
        "4",
        "gateway objects per Pusher app that share its sockets, 1–1024",
    ),
    var(
        "PUSHER_GATEWAY_SWEEP_SECONDS",
        "300",
        "how often a gateway with subscriptions wakes to forget those of sockets a reset or \
         restart cut without a close event (their presence membership with them), 1–86400",
    ),
    var(
        "PUSHER_MAX_SOCKETS_PER_SHARD",
        "30000",
        "sockets one gateway shard holds (a Durable Object hibernates at most 32,768); past it a \
         socket is closed with 4100 and pusher-js reconnects after a delay, to a shard picked \
         afresh, 1–32768",
    ),
    var(
        "PUSHER_WEBHOOK_DEAD_LETTERS",
        "1000",
        "undeliverable Pusher webhooks kept per app in D1 (the newest), 1–100000",
    ),
    var(
        "PUSHER_MAX_EVENT_DATA_BYTES",
        "10240",
        "largest Pusher event `data` (REST or client event), 1–1048576 bytes",
    ),
    var(
        "PUSHER_MAX_CHANNELS_PER_SOCKET",
        "100",
        "channels one Pusher socket may subscribe to, 1–10000",
    ),
    var(
        "PUSHER_PRESENCE_MAX_MEMBERS",
        "100",
        "distinct users of one presence channel, 1–100000",
    ),
    var(
        "PUSHER_CLIENT_EVENTS_PER_SECOND",
        "10",
        "client events one Pusher socket may send per second (then 4301 errors, then a \
         4301 close), 1–10000",
    ),
];

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

/// The README's row for a setting.
pub fn readme_row(s: &Setting) -> String {
    let secret = if s.secret { " (secret)" } else { "" };
    format!("| `{}`{secret} | {} | {} |", s.name, s.default, s.doc)
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
    pub ai_models: (String, String, Option<String>),
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
