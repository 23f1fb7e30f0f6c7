//! [`SETTINGS`]: every setting of the service, once — its name, whether it is a secret, its
//! default and a one-line meaning — in the README's order; the README's configuration table is
//! [`readme_row`] of each (checked by a unit test of [`super`]).

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
        "LLM_TURN_URL",
        "none (the VAD alone ends turns)",
        "end-of-turn endpoint for voice sessions: the utterance's WAV in, \
         `{\"is_complete\", \"probability\"}` out ([docs/SESSIONS.md](docs/SESSIONS.md#turn-detection))",
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
        "AI_TURN_MODEL",
        "`@cf/pipecat-ai/smart-turn-v2`",
        "end-of-turn model of the Workers AI binding (production only; `none`: the VAD alone \
         ends turns)",
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
        "VOICE_TURN_HOLD_MS",
        "1500",
        "how long a turn the turn model calls unfinished waits for more speech before it is \
         answered anyway, 0–10000 ms",
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

/// The README's row for a setting.
pub fn readme_row(s: &Setting) -> String {
    let secret = if s.secret { " (secret)" } else { "" };
    format!("| `{}`{secret} | {} | {} |", s.name, s.default, s.doc)
}
