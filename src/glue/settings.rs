//! Settings access for all glue (a leaf): the parsed [`Config`], once per isolate, and the
//! secrets, each parsed where it is used with its name in the error.

use std::cell::RefCell;
use std::rc::Rc;

use worker::Env;

use crate::auth::{self, ApiKeys};
use crate::config::{Config, ConfigError};
use crate::http::error::ApiError;
use crate::services::notify::Destinations;

thread_local! {
    /// The isolate's settings: `[vars]` and secrets are fixed for an isolate's lifetime.
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

/// A setting from `[vars]` or a secret, whichever defines it.
pub(crate) fn setting(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
}

/// The service's settings, parsed on first use in this isolate. A malformed one is an
/// [`ApiError::Config`] naming it (never cached, so a fixed deployment recovers).
pub(crate) fn config(env: &Env) -> Result<Rc<Config>, ApiError> {
    if let Some(c) = CONFIG.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    let parsed = Rc::new(Config::from_lookup(|k| setting(env, k)).map_err(config_error)?);
    CONFIG.with(|c| *c.borrow_mut() = Some(parsed.clone()));
    Ok(parsed)
}

/// A [`ConfigError`] as the edge reports it.
pub(crate) fn config_error(e: ConfigError) -> ApiError {
    ApiError::Config {
        message: e.to_string(),
    }
}

thread_local! {
    /// `API_KEYS` and `AUTH_SECRET`, checked once per isolate like [`CONFIG`] (secrets are
    /// fixed for an isolate's lifetime): an authenticated request neither reads nor parses
    /// them again.
    static API_KEYS: RefCell<Option<Rc<ApiKeys>>> = const { RefCell::new(None) };
    static AUTH_SECRET: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
}

/// `API_KEYS` (secret), parsed on first use in this isolate (an error is never cached).
pub(crate) fn api_keys(env: &Env) -> Result<Rc<ApiKeys>, ApiError> {
    if let Some(k) = API_KEYS.with(|k| k.borrow().clone()) {
        return Ok(k);
    }
    let raw = setting(env, "API_KEYS").ok_or_else(|| ApiError::Config {
        message: "API_KEYS is not set".into(),
    })?;
    let keys = Rc::new(ApiKeys::parse(&raw).map_err(|e| ApiError::Config {
        message: format!("API_KEYS: {e}"),
    })?);
    API_KEYS.with(|k| *k.borrow_mut() = Some(keys.clone()));
    Ok(keys)
}

/// `AUTH_SECRET` (secret), checked for length on first use in this isolate.
pub(crate) fn auth_secret(env: &Env) -> Result<Rc<str>, ApiError> {
    if let Some(s) = AUTH_SECRET.with(|s| s.borrow().clone()) {
        return Ok(s);
    }
    let secret = setting(env, "AUTH_SECRET").ok_or_else(|| ApiError::Config {
        message: "AUTH_SECRET is not set".into(),
    })?;
    auth::check_secret(&secret).map_err(|e| ApiError::Config {
        message: format!("AUTH_SECRET: {e}"),
    })?;
    let secret: Rc<str> = secret.into();
    AUTH_SECRET.with(|s| *s.borrow_mut() = Some(secret.clone()));
    Ok(secret)
}

/// `NOTIFY_DESTINATIONS` (secret), parsed; unset means no destinations (deliveries are
/// recorded as skipped).
pub(crate) fn notify_destinations(env: &Env) -> Result<Destinations, ApiError> {
    Destinations::parse(
        setting(env, "NOTIFY_DESTINATIONS")
            .as_deref()
            .unwrap_or("{}"),
    )
    .map_err(|e| ApiError::Config {
        message: format!("NOTIFY_DESTINATIONS: {e}"),
    })
}

/// `WEBHOOK_SECRETS` (secret): the HMAC secret of each inbound webhook source.
pub(crate) fn webhook_secrets(
    env: &Env,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match setting(env, "WEBHOOK_SECRETS") {
        Some(s) => serde_json::from_str(&s).map_err(|_| ApiError::Config {
            message: "WEBHOOK_SECRETS is not a JSON object".into(),
        }),
        None => Ok(serde_json::Map::new()),
    }
}
