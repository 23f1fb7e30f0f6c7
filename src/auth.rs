//! Authentication: connection tokens (JWT HS256) for WebSocket clients and API keys for the
//! HTTP API.
//!
//! Two kinds of caller need two kinds of credential. A browser joining a room cannot hold a
//! long-lived secret, so the customer's own backend mints it a short-lived, signed
//! [`Claims`] token naming who it is, which rooms it may enter and what it may do there. A
//! server calling the HTTP API holds a long-lived key from the `API_KEYS` secret. Both are
//! checked here, as pure functions, so every refusal is unit-tested natively and the glue only
//! maps an [`AuthError`] to a response.
//!
//! Tokens use the JWT compact form (RFC 7519) with HMAC-SHA256 only, so any JWT library can
//! mint them. Accepting exactly one algorithm is deliberate: letting the token's own header
//! pick the algorithm is how `alg: none` and algorithm-confusion forgeries happen.
//!
//! Secrets never leave this module in any form a log could show: errors describe what is wrong
//! without quoting the token, a key or a secret, and [`ApiKeys`] keeps only SHA-256 digests of
//! the keys. Every comparison against secret material is constant-time. Nothing here reads a
//! clock: the current time comes in as `now_s`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Longest accepted token, in bytes, checked before anything else so that a hostile caller
/// cannot make the service decode or hash an arbitrarily large input.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Seconds a token stays valid after its `exp`, to absorb clock skew between the issuer and
/// Cloudflare: a token is refused from `exp + CLOCK_LEEWAY_S` on.
pub const CLOCK_LEEWAY_S: u64 = 30;

/// Longest accepted `sub`, in bytes (its charset is printable ASCII without spaces).
pub const MAX_SUB_LEN: usize = 128;

/// Longest accepted `name`, in characters; the same order as the rooms' display-name limit.
pub const MAX_NAME_CHARS: usize = 64;

/// Most entries a token's `rooms` list may hold.
pub const MAX_ROOMS: usize = 64;

/// Shortest accepted token-signing secret, in bytes. HMAC with a short key is brute-forceable
/// offline from any single token, so a short secret is refused as a configuration error.
pub const MIN_SECRET_LEN: usize = 16;

/// Shortest accepted API key, in bytes, for the same reason as [`MIN_SECRET_LEN`].
pub const MIN_API_KEY_LEN: usize = 16;

/// Longest accepted API key name (the `name` of a `name:key` entry), in bytes.
pub const MAX_API_KEY_NAME_LEN: usize = 32;

/// The only header this module mints or accepts, base64url-encoded:
/// `{"alg":"HS256","typ":"JWT"}`.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Why a credential or a secret was refused.
///
/// Messages are safe to log and to return to the caller: none quotes a token, key or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is longer than [`MAX_TOKEN_LEN`]; nothing else was looked at.
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The token is not three base64url segments of the expected JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("unsupported token algorithm; only HS256 is accepted")]
    UnsupportedAlg,
    /// The signature does not match the header and claims under the configured secret.
    #[error("token signature does not match")]
    BadSignature,
    /// The token was valid but its `exp` (plus [`CLOCK_LEEWAY_S`]) has passed.
    #[error("token expired at {expired_at_s} (seconds since the Unix epoch)")]
    Expired {
        /// The token's `exp` claim.
        expired_at_s: u64,
    },
    /// The token was valid but its `nbf` (less [`CLOCK_LEEWAY_S`]) is still ahead.
    #[error("token not valid before {nbf_s} (seconds since the Unix epoch)")]
    NotYetValid {
        /// The token's `nbf` claim.
        nbf_s: u64,
    },
    /// The token lives longer than the service accepts (`TOKEN_MAX_TTL_S`): `exp` is more than
    /// that far from `iat`, or from now.
    #[error("token lifetime exceeds the maximum of {max_s} s")]
    LifetimeTooLong {
        /// The maximum, `TOKEN_MAX_TTL_S`.
        max_s: u64,
    },
    /// The signature is good but a claim is missing, mistyped or out of bounds.
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    /// A token-signing secret is shorter than [`MIN_SECRET_LEN`].
    #[error("token secret must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
    /// The `API_KEYS` setting cannot be parsed; the detail names entries by position or name.
    #[error("invalid API_KEYS: {0}")]
    InvalidApiKeysConfig(String),
    /// An API route was called without an `Authorization` header.
    #[error("missing API key; send Authorization: Bearer <key>")]
    MissingApiKey,
    /// The `Authorization` header is not a bearer key, or not a configured one.
    #[error("invalid API key: {0}")]
    InvalidApiKey(&'static str),
    /// The key is valid but does not hold the scope this route needs.
    #[error("this API key lacks the {0} scope")]
    MissingScope(&'static str),
}

impl AuthError {
    /// The stable machine-readable code. Every token problem a client cannot fix by refreshing
    /// shares `invalid_token` (the message keeps the detail), so codes stay few and stable.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong
            | Self::Malformed(_)
            | Self::UnsupportedAlg
            | Self::BadSignature
            | Self::InvalidClaims(_)
            | Self::LifetimeTooLong { .. } => "invalid_token",
            Self::Expired { .. } => "token_expired",
            Self::NotYetValid { .. } => "token_not_yet_valid",
            Self::WeakSecret => "weak_secret",
            Self::InvalidApiKeysConfig(_) => "invalid_api_keys_config",
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey(_) => "invalid_api_key",
            Self::MissingScope(_) => "insufficient_scope",
        }
    }
}

/// Something a token may allow its holder to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perm {
    /// Send messages to the room.
    Publish,
    /// Receive the room's messages.
    Subscribe,
    /// Appear in, and see, the room's member list.
    Presence,
}

impl Perm {
    /// Every permission; what a token without a `perms` claim gets.
    pub const ALL: [Perm; 3] = [Perm::Publish, Perm::Subscribe, Perm::Presence];

    /// The permission's wire name, as in the `perms` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Presence => "presence",
        }
    }
}

fn all_perms() -> Vec<Perm> {
    Perm::ALL.to_vec()
}

/// The claims of a connection token.
///
/// Defaults are chosen so that a token must say where it may go but not, in the common case,
/// what it may do there: an absent `rooms` means no room at all (a token never opens every room
/// by omission), an absent `perms` means all of [`Perm::ALL`]. An explicit empty `perms` list
/// grants nothing. Unknown claims (`iss`, `aud`, …) are ignored; an unknown permission
/// name is refused, so a typo fails loudly instead of silently granting less.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the caller's stable user id, 1–[`MAX_SUB_LEN`] bytes of printable ASCII
    /// without spaces.
    pub sub: String,
    /// Optional display name, 1–[`MAX_NAME_CHARS`] characters without control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Rooms the token opens, at most [`MAX_ROOMS`], none empty. An entry ending in `*` is a
    /// prefix (`team-*` opens every room whose name starts with `team-`); `*` alone opens
    /// every room. Matching is case-sensitive. Absent means none.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// What the holder may do in those rooms. Absent means all of [`Perm::ALL`].
    #[serde(default = "all_perms")]
    pub perms: Vec<Perm>,
    /// Expiry, in seconds since the Unix epoch (required).
    pub exp: u64,
    /// Issue time, in seconds since the Unix epoch. With a maximum lifetime
    /// ([`TokenRules::max_ttl_s`]), `exp - iat` may not exceed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, in seconds since the Unix epoch: the token is refused
    /// (`token_not_yet_valid`) until then, less [`CLOCK_LEEWAY_S`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// An operator credential: the holder may read the service's reserved rooms (the `ops`
    /// feed), never publish there. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ops: bool,
}

/// What the service demands of a token beyond its signature and claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRules {
    /// Longest lifetime accepted, seconds (`TOKEN_MAX_TTL_S`): `exp` may be at most this far
    /// from `iat`, and from now.
    pub max_ttl_s: u64,
}

impl TokenRules {
    /// No lifetime bound (only for tools and tests; the service uses its setting).
    pub const UNBOUNDED: Self = Self {
        max_ttl_s: u64::MAX,
    };
}

/// Default of `TOKEN_MAX_TTL_S`: one day.
pub const DEFAULT_TOKEN_MAX_TTL_S: u64 = 86_400;

impl Claims {
    /// Whether the token opens `room` (see [`Claims::rooms`] for the pattern rules).
    pub fn allows_room(&self, room: &str) -> bool {
        self.rooms
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => pattern == room,
            })
    }

    /// Whether the token grants `perm`.
    pub fn can(&self, perm: Perm) -> bool {
        self.perms.contains(&perm)
    }

    /// The first millisecond at which [`verify`] refuses this token, leeway included, so a
    /// connection admitted near expiry is never scheduled to close in the past.
    pub fn expires_at_ms(&self) -> u64 {
        self.refused_from_s().saturating_mul(1000)
    }

    /// The first second at which [`verify`] refuses this token.
    fn refused_from_s(&self) -> u64 {
        self.exp.saturating_add(CLOCK_LEEWAY_S)
    }

    /// Checks the bounds the type cannot express; the detail names the claim, never its value.
    fn validate(&self) -> Result<(), AuthError> {
        let bad = |why: String| Err(AuthError::InvalidClaims(why));
        if self.sub.is_empty() || self.sub.len() > MAX_SUB_LEN {
            return bad(format!("sub must be 1-{MAX_SUB_LEN} bytes"));
        }
        if !self.sub.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("sub must be printable ASCII without spaces".to_string());
        }
        if let Some(name) = &self.name {
            let chars = name.chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return bad(format!(
                    "name must be 1-{MAX_NAME_CHARS} characters without control characters"
                ));
            }
        }
        if self.rooms.len() > MAX_ROOMS {
            return bad(format!("rooms must list at most {MAX_ROOMS} entries"));
        }
        if self.rooms.iter().any(String::is_empty) {
            return bad("rooms entries must not be empty".to_string());
        }
        Ok(())
    }
}

/// The decoded JOSE header; only the fields this module acts on.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    /// RFC 7515 requires refusing a token whose `crit` names extensions we do not implement,
    /// and we implement none.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// HMAC-SHA256 of a JWS signing input (`base64url(header).base64url(claims)`).
fn sign(signing_input: &[u8], secret: &[u8]) -> [u8; 32] {
    mac(signing_input, secret).finalize().into_bytes().into()
}

fn mac(signing_input: &[u8], secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input);
    mac
}

/// Signs `claims` into a compact HS256 token. Used by the dev-only token endpoint and tests;
/// production tokens come from the customer's backend, usually through a JWT library.
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    // Strings, vectors, unit enums and integers always serialize.
    let payload = serde_json::to_vec(claims).expect("Claims always serializes to JSON");
    let signing_input = format!("{HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = URL_SAFE_NO_PAD.encode(sign(signing_input.as_bytes(), secret));
    format!("{signing_input}.{signature}")
}

/// Verifies a compact HS256 token and returns its claims.
///
/// Checks run cheapest and least trusting first: length ([`MAX_TOKEN_LEN`]), shape, header
/// (`alg` must be `HS256`; `typ`, if present, `JWT`), signature (constant-time), then the
/// claims' bounds, then expiry. Claims are checked before expiry so that `token_expired` always
/// means "this token was good; fetch a fresh one". The token is refused from
/// `exp + CLOCK_LEEWAY_S` on, and before `nbf - CLOCK_LEEWAY_S`. `secret` should have passed
/// [`check_secret`] at startup. No lifetime bound: see [`verify_with`].
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Claims, AuthError> {
    verify_with(token, secret, now_s, TokenRules::UNBOUNDED)
}

/// [`verify`], then the service's [`TokenRules`]: a token that lives longer than
/// `max_ttl_s` (from `iat`, or from now) is refused.
pub fn verify_with(
    token: &str,
    secret: &[u8],
    now_s: u64,
    rules: TokenRules,
) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "expected three dot-separated segments",
        ));
    };

    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| AuthError::Malformed("header is not unpadded base64url"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with an alg"))?;
    if header.alg != "HS256" {
        return Err(AuthError::UnsupportedAlg);
    }
    if header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
        return Err(AuthError::Malformed("header typ must be JWT"));
    }
    if header.crit.is_some() {
        return Err(AuthError::Malformed(
            "header crit extensions are not supported",
        ));
    }

    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| AuthError::Malformed("signature is not unpadded base64url"))?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    mac(signing_input.as_bytes(), secret)
        .verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;

    let claims = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| AuthError::Malformed("claims are not unpadded base64url"))?;
    // The issuer signed these bytes, so serde's message (which may quote a claim) is safe.
    let claims: Claims =
        serde_json::from_slice(&claims).map_err(|e| AuthError::InvalidClaims(e.to_string()))?;
    claims.validate()?;
    if now_s >= claims.refused_from_s() {
        return Err(AuthError::Expired {
            expired_at_s: claims.exp,
        });
    }
    if let Some(nbf) = claims.nbf {
        if now_s.saturating_add(CLOCK_LEEWAY_S) < nbf {
            return Err(AuthError::NotYetValid { nbf_s: nbf });
        }
    }
    let from = claims.iat.map_or(now_s, |iat| iat.min(now_s));
    if claims.exp.saturating_sub(from) > rules.max_ttl_s {
        return Err(AuthError::LifetimeTooLong {
            max_s: rules.max_ttl_s,
        });
    }
    Ok(claims)
}

/// Checks that a token-signing secret is long enough ([`MIN_SECRET_LEN`] bytes). Call at
/// startup and report failure as a configuration error.
pub fn check_secret(secret: &str) -> Result<(), AuthError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::WeakSecret);
    }
    Ok(())
}

/// The credential of an `Authorization: Bearer <credential>` header, if that is its form.
///
/// The scheme is case-insensitive (RFC 9110); surrounding whitespace is ignored. `None` for an
/// absent header, another scheme, an empty credential or one containing whitespace.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, rest) = header?.trim().split_once([' ', '\t'])?;
    let credential = rest.trim();
    let valid = scheme.eq_ignore_ascii_case("bearer")
        && !credential.is_empty()
        && !credential.contains(|c: char| c.is_ascii_whitespace());
    valid.then_some(credential)
}

/// What an API key may do. A key lists its scopes in `API_KEYS` (`name[read+publish]:key`);
/// a key that lists none gets [`Scope::DEFAULT`], the least that a backend publishing into
/// rooms needs. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Publish into rooms over HTTP (`/api/rooms/:room/broadcast`, `/api/broadcast`).
    Publish,
    /// Read rooms' summaries and history, and the metrics.
    Read,
    /// Rate-limit checks and locks (`/api/limits/…`, `/api/locks/…`).
    Coordination,
    /// The services' data: leads (list, export, read, update), notifications, sales import.
    Services,
    /// The admin endpoints (close rooms and connections, lock override, audit); implies all.
    Admin,
}

impl Scope {
    /// Every scope, in the order `API_KEYS` documents them.
    pub const ALL: [Scope; 5] = [
        Scope::Publish,
        Scope::Read,
        Scope::Coordination,
        Scope::Services,
        Scope::Admin,
    ];

    /// The scopes of a key that lists none.
    pub const DEFAULT: [Scope; 2] = [Scope::Publish, Scope::Read];

    /// The scope's name in `API_KEYS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Coordination => "coordination",
            Scope::Services => "services",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scopes(u8);

impl Scopes {
    fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().fold(0, |acc, s| acc | s.bit()))
    }

    fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }
}

/// The configured API keys, parsed from the `API_KEYS` secret.
///
/// Only SHA-256 digests of the keys are kept, and `Debug` shows names only, so a stray log line
/// cannot print a key.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32], Scopes)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl ApiKeys {
    /// Parses a comma-separated list of keys, each either bare, `name:key` or
    /// `name[scope+scope]:key` (scopes: [`Scope::ALL`]; none listed means
    /// [`Scope::DEFAULT`]; a bare key has the default scopes too).
    ///
    /// A name is 1–[`MAX_API_KEY_NAME_LEN`] bytes of `[A-Za-z0-9_-]` and labels the key in
    /// logs and metrics; a bare key is named `key<N>` by its 1-based position among the
    /// non-empty entries. Everything after
    /// the first `:` is the key, so only a named key may contain `:`. Keys are at least
    /// [`MIN_API_KEY_LEN`] bytes of printable ASCII without spaces or commas. Whitespace
    /// around entries and empty entries are ignored; no keys at all, duplicate names and
    /// duplicate keys are errors. Errors name entries by position or name, never by key.
    pub fn parse(setting: &str) -> Result<Self, AuthError> {
        let bad = |why: String| Err(AuthError::InvalidApiKeysConfig(why));
        let mut keys: Vec<(String, [u8; 32], Scopes)> = Vec::new();
        let entries = setting.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let position = i + 1;
            let (label, key) = match entry.split_once(':') {
                Some((label, key)) => (label.to_string(), key),
                None => (format!("key{position}"), entry),
            };
            let (name, scopes) = match label.split_once('[') {
                None => (label, Scopes::of(Scope::DEFAULT)),
                Some((name, rest)) => {
                    let Some(list) = rest.strip_suffix(']') else {
                        return bad(format!("entry {position} has an unclosed scope list"));
                    };
                    let mut scopes = Vec::new();
                    for s in list.split('+') {
                        match Scope::parse(s.trim()) {
                            Some(scope) => scopes.push(scope),
                            None => {
                                return bad(format!(
                                    "entry {position} names an unknown scope; scopes are \
                                     publish, read, coordination, services and admin"
                                ))
                            }
                        }
                    }
                    (name.to_string(), Scopes::of(scopes))
                }
            };
            let name_ok = !name.is_empty()
                && name.len() <= MAX_API_KEY_NAME_LEN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return bad(format!(
                    "entry {position} has an invalid name; names are \
                     1-{MAX_API_KEY_NAME_LEN} characters of [A-Za-z0-9_-]"
                ));
            }
            if key.len() < MIN_API_KEY_LEN {
                return bad(format!(
                    "key {name} is shorter than {MIN_API_KEY_LEN} bytes"
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(format!("key {name} must be printable ASCII without spaces"));
            }
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            if let Some((other, _, _)) = keys.iter().find(|(n, d, _)| *n == name || *d == digest) {
                return bad(if *other == name {
                    format!("name {name} is used twice")
                } else {
                    format!("keys {other} and {name} are the same")
                });
            }
            keys.push((name, digest, scopes));
        }
        if keys.is_empty() {
            return bad("no keys configured".to_string());
        }
        Ok(Self { keys })
    }

    /// The configured keys' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(name, _, _)| name.as_str())
    }

    /// Checks an `Authorization` header and returns the matching key's name.
    ///
    /// The presented key is hashed and its digest compared with every configured digest in
    /// constant time, without stopping at a match: comparing fixed-length digests means neither
    /// a key's length nor its matching prefix, nor which entry matched, shows in the timing.
    pub fn check(&self, authorization_header: Option<&str>) -> Result<&str, AuthError> {
        let header = authorization_header.filter(|h| !h.trim().is_empty());
        let Some(header) = header else {
            return Err(AuthError::MissingApiKey);
        };
        let presented = bearer(Some(header)).ok_or(AuthError::InvalidApiKey(
            "expected Authorization: Bearer <key>",
        ))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (_, configured, _)) in self.keys.iter().enumerate() {
            let equal = configured.ct_eq(&digest);
            // At most a handful of keys: the index always fits.
            index.conditional_assign(&(i as u32), equal);
            found |= equal;
        }
        if bool::from(found) {
            Ok(&self.keys[index as usize].0)
        } else {
            Err(AuthError::InvalidApiKey("not a configured key"))
        }
    }

    /// [`ApiKeys::check`], then whether the key holds `scope`: its name, or
    /// [`AuthError::MissingScope`] (403 `insufficient_scope`).
    pub fn authorize(
        &self,
        authorization_header: Option<&str>,
        scope: Scope,
    ) -> Result<&str, AuthError> {
        let name = self.check(authorization_header)?;
        let (_, _, scopes) = self
            .keys
            .iter()
            .find(|(n, _, _)| n == name)
            .expect("check answers a configured name");
        if scopes.allows(scope) {
            Ok(name)
        } else {
            Err(AuthError::MissingScope(scope.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-test-secret";
    const NOW: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "user-42".to_string(),
            name: Some("Ann".to_string()),
            rooms: vec!["lobby".to_string(), "team-*".to_string()],
            perms: vec![Perm::Subscribe, Perm::Presence],
            exp: NOW + 600,
            iat: Some(NOW),
            nbf: None,
            ops: false,
        }
    }

    /// Signs arbitrary header and claims JSON, independently of [`mint`].
    fn forge(header_json: &str, claims_json: &str, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(claims_json)
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{input}.{sig}")
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn verify_claims_json(claims_json: &str) -> Result<Claims, AuthError> {
        verify(&forge(HS256, claims_json, SECRET), SECRET, NOW)
    }

    #[test]
    fn header_constant_is_the_hs256_header() {
        assert_eq!(URL_SAFE_NO_PAD.encode(HS256), HEADER_B64);
    }

    #[test]
    fn round_trip() {
        let c = claims();
        let token = mint(&c, SECRET);
        assert!(token.starts_with(HEADER_B64));
        assert!(!token.contains('='));
        assert_eq!(verify(&token, SECRET, NOW), Ok(c));
    }

    #[test]
    fn round_trip_without_optional_claims() {
        let c = Claims {
            name: None,
            iat: None,
            ..claims()
        };
        assert_eq!(verify(&mint(&c, SECRET), SECRET, NOW), Ok(c));
    }

    #[test]
    fn known_answer_jwt_io_signature() {
        let input = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ";
        let sig = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert_eq!(
            URL_SAFE_NO_PAD.encode(sign(input.as_bytes(), b"your-256-bit-secret")),
            sig
        );
        // The whole token passes header and signature checks, then fails only for lack of exp.
        let token = format!("{input}.{sig}");
        let err = verify(&token, b"your-256-bit-secret", NOW).unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidClaims(m) if m.contains("exp")),
            "{err}"
        );
        assert_eq!(
            verify(&token, b"not-the-256-bit-secret", NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn known_answer_rfc7515_a1() {
        // RFC 7515 appendix A.1: header with CRLF whitespace and `typ` first, a JWK key.
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
                     eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
                     dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let key = URL_SAFE_NO_PAD
            .decode(
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
            )
            .unwrap();
        let err = verify(token, &key, 1_300_819_000).unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidClaims(m) if m.contains("sub")),
            "{err}"
        );
        assert_eq!(verify(token, SECRET, 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn independently_signed_token_verifies_with_defaults() {
        let got = verify_claims_json(r#"{"sub":"alice","rooms":["lobby"],"exp":2000000000}"#);
        assert_eq!(
            got,
            Ok(Claims {
                sub: "alice".to_string(),
                name: None,
                rooms: vec!["lobby".to_string()],
                perms: Perm::ALL.to_vec(),
                exp: 2_000_000_000,
                iat: None,
                nbf: None,
                ops: false,
            })
        );
    }

    #[test]
    fn perms_default_to_all_but_explicit_empty_grants_nothing() {
        let all = verify_claims_json(r#"{"sub":"a","exp":2000000000}"#).unwrap();
        assert!(Perm::ALL.iter().all(|&p| all.can(p)));
        assert!(all.rooms.is_empty());
        assert!(!all.allows_room("lobby"));

        let none = verify_claims_json(r#"{"sub":"a","perms":[],"exp":2000000000}"#).unwrap();
        assert!(Perm::ALL.iter().all(|&p| !none.can(p)));

        let some =
            verify_claims_json(r#"{"sub":"a","perms":["publish"],"exp":2000000000}"#).unwrap();
        assert!(some.can(Perm::Publish));
        assert!(!some.can(Perm::Subscribe));
        assert!(!some.can(Perm::Presence));
    }

    #[test]
    fn perm_names_match_serde() {
        for p in Perm::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }

    #[test]
    fn unknown_perm_and_unknown_claims() {
        let err = verify_claims_json(r#"{"sub":"a","perms":["admin"],"exp":2000000000}"#);
        assert!(matches!(err, Err(AuthError::InvalidClaims(_))));
        // Registered claims this module does not use are ignored.
        let ok = verify_claims_json(r#"{"sub":"a","iss":"x","aud":"y","exp":2000000000}"#);
        assert!(ok.is_ok());
    }

    #[test]
    fn mistyped_claims_are_invalid() {
        for json in [
            r#"{"sub":"a","exp":"2000000000"}"#,
            r#"{"sub":"a","exp":-1}"#,
            r#"{"sub":"a","exp":2e9}"#,
            r#"{"sub":5,"exp":2000000000}"#,
            r#"{"sub":"a","rooms":"lobby","exp":2000000000}"#,
            r#"{"sub":"a","exp":2000000000,"exp":2000000001}"#,
            r#"["a"]"#,
            "not json",
        ] {
            let err = verify_claims_json(json).unwrap_err();
            assert!(matches!(err, AuthError::InvalidClaims(_)), "{json}: {err}");
            assert_eq!(err.code(), "invalid_token");
        }
    }

    #[test]
    fn expiry_boundary_includes_leeway() {
        let c = Claims {
            exp: NOW,
            ..claims()
        };
        let token = mint(&c, SECRET);
        assert!(verify(&token, SECRET, NOW + CLOCK_LEEWAY_S - 1).is_ok());
        let err = verify(&token, SECRET, NOW + CLOCK_LEEWAY_S).unwrap_err();
        assert_eq!(err, AuthError::Expired { expired_at_s: NOW });
        assert_eq!(err.code(), "token_expired");
        assert_eq!(c.expires_at_ms(), (NOW + CLOCK_LEEWAY_S) * 1000);
    }

    #[test]
    fn expiry_does_not_overflow() {
        let c = Claims {
            exp: u64::MAX,
            ..claims()
        };
        assert!(verify(&mint(&c, SECRET), SECRET, u64::MAX - 1).is_ok());
        assert_eq!(c.expires_at_ms(), u64::MAX);
        let zero = Claims { exp: 0, ..claims() };
        assert!(matches!(
            verify(&mint(&zero, SECRET), SECRET, NOW),
            Err(AuthError::Expired { expired_at_s: 0 })
        ));
    }

    #[test]
    fn invalid_claims_win_over_expiry() {
        let c = Claims {
            sub: String::new(),
            exp: 0,
            ..claims()
        };
        assert!(matches!(
            verify(&mint(&c, SECRET), SECRET, NOW),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn wrong_secret() {
        let token = mint(&claims(), SECRET);
        let err = verify(&token, b"another-secret-of-16+", NOW).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.code(), "invalid_token");
    }

    #[test]
    fn tampered_payload_is_refused() {
        let token = mint(&claims(), SECRET);
        let parts: Vec<&str> = token.split('.').collect();
        let evil = Claims {
            rooms: vec!["*".to_string()],
            ..claims()
        };
        let evil_token = mint(&evil, b"attacker-secret-123");
        let evil_payload = evil_token.split('.').nth(1).unwrap();
        let spliced = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(verify(&spliced, SECRET, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_signature_is_refused() {
        let token = mint(&claims(), SECRET);
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[0] ^= 1;
        let flipped = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(verify(&flipped, SECRET, NOW), Err(AuthError::BadSignature));
        let truncated = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw[..31]));
        assert_eq!(
            verify(&truncated, SECRET, NOW),
            Err(AuthError::BadSignature)
        );
        let empty = format!("{input}.");
        assert_eq!(verify(&empty, SECRET, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_header_is_refused() {
        let token = mint(&claims(), SECRET);
        let (_, rest) = token.split_once('.').unwrap();
        // Same alg, different bytes: the signature covers the header as sent.
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"HS256"}"#);
        assert_eq!(
            verify(&format!("{header}.{rest}"), SECRET, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let c = r#"{"sub":"a","rooms":["*"],"exp":2000000000}"#;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{header}.{}.", URL_SAFE_NO_PAD.encode(c));
        assert_eq!(
            verify(&unsigned, SECRET, NOW),
            Err(AuthError::UnsupportedAlg)
        );
        // Even correctly HMAC-signed, a `none` header is refused.
        let signed = forge(r#"{"alg":"none","typ":"JWT"}"#, c, SECRET);
        assert_eq!(verify(&signed, SECRET, NOW), Err(AuthError::UnsupportedAlg));
        let lower = forge(r#"{"alg":"hs256","typ":"JWT"}"#, c, SECRET);
        assert_eq!(verify(&lower, SECRET, NOW), Err(AuthError::UnsupportedAlg));
    }

    #[test]
    fn other_algs_are_refused() {
        let c = r#"{"sub":"a","exp":2000000000}"#;
        for alg in ["HS512", "HS384", "RS256", "ES256", ""] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let err = verify(&forge(&header, c, SECRET), SECRET, NOW).unwrap_err();
            assert_eq!(err, AuthError::UnsupportedAlg, "{alg}");
            assert_eq!(err.code(), "invalid_token");
        }
    }

    #[test]
    fn header_shape_is_checked() {
        let c = r#"{"sub":"a","exp":2000000000}"#;
        for header in [
            r#"{"typ":"JWT"}"#,
            r#"{"alg":256}"#,
            r#"{"alg":"HS256","typ":"JWE"}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["b64"]}"#,
            "[]",
        ] {
            let err = verify(&forge(header, c, SECRET), SECRET, NOW).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{header}: {err}");
        }
        // `typ` is optional and extra fields such as `kid` are ignored.
        for header in [r#"{"alg":"HS256"}"#, r#"{"alg":"HS256","kid":"k1"}"#] {
            assert!(
                verify(&forge(header, c, SECRET), SECRET, NOW).is_ok(),
                "{header}"
            );
        }
    }

    #[test]
    fn structure_is_checked() {
        let token = mint(&claims(), SECRET);
        let (h, rest) = token.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for bad in [
            String::new(),
            "abc".to_string(),
            format!("{h}.{p}"),
            format!("{token}.{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.+{}", &s[1..]),
            format!("{h}.{p}.!{s}"),
            format!("@{h}.{p}.{s}"),
        ] {
            let err = verify(&bad, SECRET, NOW).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{bad}: {err}");
            assert_eq!(err.code(), "invalid_token");
        }
        // Non-canonical base64 (nonzero unused bits in the last character) would make signatures
        // malleable; it is refused.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = ALPHABET
            .iter()
            .position(|&c| c == *s.as_bytes().last().unwrap());
        let twin = ALPHABET[last.unwrap() ^ 1] as char;
        let twin = format!("{h}.{p}.{}{twin}", &s[..s.len() - 1]);
        assert_eq!(
            verify(&twin, SECRET, NOW),
            Err(AuthError::Malformed("signature is not unpadded base64url"))
        );
        // A claims segment that is not base64url is caught after the signature, which covers it.
        let input = format!("{h}.{p}!");
        let sig = URL_SAFE_NO_PAD.encode(sign(input.as_bytes(), SECRET));
        assert_eq!(
            verify(&format!("{input}.{sig}"), SECRET, NOW),
            Err(AuthError::Malformed("claims are not unpadded base64url"))
        );
    }

    #[test]
    fn token_length_bound() {
        // Grow one room entry until the token is exactly MAX_TOKEN_LEN bytes.
        let mut c = claims();
        let mut exact = None;
        for pad in 0..MAX_TOKEN_LEN {
            c.rooms = vec!["r".repeat(pad + 1)];
            let token = mint(&c, SECRET);
            if token.len() == MAX_TOKEN_LEN {
                exact = Some(token);
                break;
            }
        }
        let exact = exact.expect("some padding yields an exactly maximal token");
        assert!(verify(&exact, SECRET, NOW).is_ok());
        let longer = mint(
            &Claims {
                rooms: vec![format!("{}r", c.rooms[0])],
                ..c
            },
            SECRET,
        );
        assert!(longer.len() > MAX_TOKEN_LEN);
        assert_eq!(verify(&longer, SECRET, NOW), Err(AuthError::TooLong));
        // The length check comes first: even garbage is refused as too long.
        let junk = "x".repeat(MAX_TOKEN_LEN + 1);
        let err = verify(&junk, SECRET, NOW).unwrap_err();
        assert_eq!(err, AuthError::TooLong);
        assert_eq!(err.code(), "invalid_token");
    }

    #[test]
    fn sub_bounds() {
        let with_sub = |sub: &str| {
            let c = Claims {
                sub: sub.to_string(),
                ..claims()
            };
            verify(&mint(&c, SECRET), SECRET, NOW)
        };
        assert!(with_sub("a").is_ok());
        assert!(with_sub(&"a".repeat(MAX_SUB_LEN)).is_ok());
        assert!(with_sub("user@example.com|42~!").is_ok());
        for bad in [
            String::new(),
            "a".repeat(MAX_SUB_LEN + 1),
            "a b".to_string(),
            "tab\there".to_string(),
            "nul\0".to_string(),
            "del\x7f".to_string(),
            "é".to_string(),
        ] {
            assert!(
                matches!(with_sub(&bad), Err(AuthError::InvalidClaims(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn name_bounds() {
        let with_name = |name: &str| {
            let c = Claims {
                name: Some(name.to_string()),
                ..claims()
            };
            verify(&mint(&c, SECRET), SECRET, NOW)
        };
        // Bounded in characters, not bytes.
        assert!(with_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(with_name("Ann Lee").is_ok());
        for bad in [
            String::new(),
            "é".repeat(MAX_NAME_CHARS + 1),
            "line\nbreak".to_string(),
        ] {
            assert!(
                matches!(with_name(&bad), Err(AuthError::InvalidClaims(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rooms_bounds() {
        let with_rooms = |rooms: Vec<String>| {
            let c = Claims { rooms, ..claims() };
            verify(&mint(&c, SECRET), SECRET, NOW)
        };
        let many = |n: usize| (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>();
        assert!(with_rooms(many(MAX_ROOMS)).is_ok());
        assert!(matches!(
            with_rooms(many(MAX_ROOMS + 1)),
            Err(AuthError::InvalidClaims(_))
        ));
        assert!(matches!(
            with_rooms(vec!["lobby".to_string(), String::new()]),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn room_matching() {
        let with = |rooms: &[&str]| Claims {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            ..claims()
        };
        let c = with(&["lobby", "team-*"]);
        assert!(c.allows_room("lobby"));
        assert!(!c.allows_room("lobby2"));
        assert!(!c.allows_room("Lobby"));
        assert!(!c.allows_room("lob"));
        assert!(c.allows_room("team-a"));
        assert!(c.allows_room("team-"));
        assert!(!c.allows_room("teams"));
        assert!(!c.allows_room("team"));
        assert!(!c.allows_room("a-team-a"));

        let all = with(&["*"]);
        assert!(all.allows_room("anything"));
        assert!(all.allows_room("team-a"));

        // Only a trailing `*` is special.
        let mid = with(&["a*b"]);
        assert!(mid.allows_room("a*b"));
        assert!(!mid.allows_room("axb"));

        assert!(!with(&[]).allows_room("lobby"));
    }

    #[test]
    fn errors_never_quote_the_token_or_secret() {
        let secret = b"super-secret-value-0001";
        let c = Claims {
            sub: "bad sub".to_string(),
            ..claims()
        };
        let token = mint(&c, secret);
        let sig = token.rsplit('.').next().unwrap();
        for err in [
            verify(&token, secret, NOW).unwrap_err(),
            verify(&token, b"other-secret-value-0001", NOW).unwrap_err(),
            verify(&format!("{token}x"), secret, NOW).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(!msg.contains(sig) && !msg.contains("super-secret"), "{msg}");
            assert!(!msg.contains(&token[..20]), "{msg}");
        }
    }

    #[test]
    fn secret_length() {
        assert_eq!(check_secret(""), Err(AuthError::WeakSecret));
        assert_eq!(
            check_secret(&"s".repeat(MIN_SECRET_LEN - 1)),
            Err(AuthError::WeakSecret)
        );
        assert_eq!(check_secret(&"s".repeat(MIN_SECRET_LEN)), Ok(()));
        assert_eq!(AuthError::WeakSecret.code(), "weak_secret");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("BEARER\tabc")), Some("abc"));
        assert_eq!(bearer(Some("  Bearer   abc  ")), Some("abc"));
        assert_eq!(bearer(None), None);
        assert_eq!(bearer(Some("")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearerabc")), None);
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer a b")), None);
        assert_eq!(bearer(Some("abc")), None);
    }

    const K1: &str = "0123456789abcdef";
    const K2: &str = "fedcba9876543210-ops";

    #[test]
    fn api_keys_parse_and_name() {
        let keys = ApiKeys::parse(&format!(" {K1} , ops:{K2},,ci:{K1}:x ,")).unwrap();
        assert_eq!(keys.names().collect::<Vec<_>>(), ["key1", "ops", "ci"]);
        assert_eq!(keys.check(Some(&format!("Bearer {K1}"))), Ok("key1"));
        assert_eq!(keys.check(Some(&format!("bearer {K2}"))), Ok("ops"));
        // Everything after the first `:` is the key.
        assert_eq!(keys.check(Some(&format!("Bearer {K1}:x"))), Ok("ci"));
    }

    #[test]
    fn api_keys_debug_hides_keys() {
        let keys = ApiKeys::parse(&format!("ops:{K2}")).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("ops"));
        assert!(!debug.contains(K2));
    }

    #[test]
    fn api_keys_config_errors() {
        let short = "s".repeat(MIN_API_KEY_LEN - 1);
        for setting in [
            String::new(),
            " , ,".to_string(),
            short.clone(),
            format!("ops:{short}"),
            format!("{K1},ops:{K2},ci:{short}"),
            format!(":{K1}"),
            format!("bad name:{K1}"),
            format!("{}:{K1}", "n".repeat(MAX_API_KEY_NAME_LEN + 1)),
            format!("ops:{K1} x"),
            format!("ops:{K1},ops:{K2}"),
            format!("a:{K1},b:{K1}"),
            format!("key2:{K1},{K2}"),
        ] {
            let err = ApiKeys::parse(&setting).unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidApiKeysConfig(_)),
                "{setting}: {err}"
            );
            assert_eq!(err.code(), "invalid_api_keys_config");
            let msg = err.to_string();
            assert!(
                !msg.contains(K1) && !msg.contains(K2) && !msg.contains(&short),
                "{msg}"
            );
        }
        assert!(ApiKeys::parse(&"k".repeat(MIN_API_KEY_LEN)).is_ok());
        let longest = "n".repeat(MAX_API_KEY_NAME_LEN);
        assert!(ApiKeys::parse(&format!("{longest}:{K1}")).is_ok());
    }

    #[test]
    fn api_key_check_errors() {
        let keys = ApiKeys::parse(&format!("{K1},ops:{K2}")).unwrap();
        for header in [None, Some(""), Some("   ")] {
            let err = keys.check(header).unwrap_err();
            assert_eq!(err, AuthError::MissingApiKey);
            assert_eq!(err.code(), "missing_api_key");
        }
        for header in [
            format!("Basic {K1}"),
            K1.to_string(),
            "Bearer".to_string(),
            format!("Bearer {K1}x"),
            format!("Bearer {}", &K1[..15]),
            format!("Bearer {}", K1.to_uppercase()),
            format!("Bearer ops:{K2}"),
        ] {
            let err = keys.check(Some(&header)).unwrap_err();
            assert!(matches!(err, AuthError::InvalidApiKey(_)), "{header}");
            assert_eq!(err.code(), "invalid_api_key");
            assert!(!err.to_string().contains(K1));
        }
    }

    #[test]
    fn not_before_is_honoured_with_the_leeway() {
        let c = Claims {
            nbf: Some(NOW + 100),
            ..claims()
        };
        let t = mint(&c, SECRET);
        assert_eq!(
            verify(&t, SECRET, NOW),
            Err(AuthError::NotYetValid { nbf_s: NOW + 100 })
        );
        assert_eq!(
            verify(&t, SECRET, NOW).unwrap_err().code(),
            "token_not_yet_valid"
        );
        // Within the clock leeway it is accepted, and after it of course.
        assert!(verify(&t, SECRET, NOW + 100 - CLOCK_LEEWAY_S).is_ok());
        assert!(verify(&t, SECRET, NOW + 101).is_ok());
    }

    #[test]
    fn lifetimes_over_the_maximum_are_refused() {
        let rules = TokenRules { max_ttl_s: 600 };
        // exp - iat = 600: at the maximum.
        assert!(verify_with(&mint(&claims(), SECRET), SECRET, NOW, rules).is_ok());
        let long = Claims {
            exp: NOW + 601,
            ..claims()
        };
        let e = verify_with(&mint(&long, SECRET), SECRET, NOW, rules).unwrap_err();
        assert_eq!(e, AuthError::LifetimeTooLong { max_s: 600 });
        assert_eq!(e.code(), "invalid_token");
        // Without iat, the lifetime counts from now.
        let no_iat = Claims {
            iat: None,
            exp: NOW + 601,
            ..claims()
        };
        assert!(verify_with(&mint(&no_iat, SECRET), SECRET, NOW, rules).is_err());
        assert!(verify_with(&mint(&no_iat, SECRET), SECRET, NOW + 1, rules).is_ok());
        // A backdated iat does not hide a long life.
        let backdated = Claims {
            iat: Some(NOW - 10_000),
            exp: NOW + 60,
            ..claims()
        };
        assert!(verify_with(&mint(&backdated, SECRET), SECRET, NOW, rules).is_err());
        // Unbounded, as `verify` is, accepts all of them.
        assert!(verify(&mint(&long, SECRET), SECRET, NOW).is_ok());
    }

    #[test]
    fn api_keys_carry_scopes_with_least_privilege_by_default() {
        let keys = ApiKeys::parse(
            "pub:publisher-key-0123456789,ops[admin]:operator-key-0123456789,\
             svc[services+coordination]:services-key-0123456789,bare-key-0123456789abc",
        )
        .unwrap();
        let bearer = |k: &str| format!("Bearer {k}");
        let pub_key = bearer("publisher-key-0123456789");
        assert_eq!(keys.authorize(Some(&pub_key), Scope::Publish), Ok("pub"));
        assert_eq!(keys.authorize(Some(&pub_key), Scope::Read), Ok("pub"));
        let refused = keys.authorize(Some(&pub_key), Scope::Admin).unwrap_err();
        assert_eq!(refused, AuthError::MissingScope("admin"));
        assert_eq!(refused.code(), "insufficient_scope");
        assert!(keys.authorize(Some(&pub_key), Scope::Services).is_err());
        // admin implies every scope.
        let ops = bearer("operator-key-0123456789");
        for scope in Scope::ALL {
            assert_eq!(keys.authorize(Some(&ops), scope), Ok("ops"));
        }
        let svc = bearer("services-key-0123456789");
        assert!(keys.authorize(Some(&svc), Scope::Services).is_ok());
        assert!(keys.authorize(Some(&svc), Scope::Coordination).is_ok());
        assert!(keys.authorize(Some(&svc), Scope::Publish).is_err());
        // A bare key has the default scopes.
        let bare = bearer("bare-key-0123456789abc");
        assert_eq!(keys.authorize(Some(&bare), Scope::Publish), Ok("key4"));
        assert!(keys.authorize(Some(&bare), Scope::Admin).is_err());
        // A wrong key is still a 401-kind error, not a scope error.
        assert_eq!(
            keys.authorize(Some("Bearer nope-nope-nope-nope"), Scope::Read)
                .unwrap_err()
                .code(),
            "invalid_api_key"
        );
    }

    #[test]
    fn scope_lists_are_checked() {
        for bad in [
            "a[root]:0123456789abcdef",
            "a[admin:0123456789abcdef",
            "a[]:0123456789abcdef",
        ] {
            assert!(
                matches!(ApiKeys::parse(bad), Err(AuthError::InvalidApiKeysConfig(_))),
                "{bad}"
            );
        }
        assert!(ApiKeys::parse("a[read+publish]:0123456789abcdef").is_ok());
    }
}
