//! The Pusher apps of `PUSHER_APPS`, parsed once per isolate.

use std::cell::RefCell;
use std::rc::Rc;

use worker::Env;

use crate::glue::settings::setting;
use crate::http::error::ApiError;
use crate::pusher::apps::Apps;

thread_local! {
    /// The isolate's apps: secrets are fixed for an isolate's lifetime, so `PUSHER_APPS` is
    /// parsed once, not on every socket, subscription, client event and REST call.
    static APPS: RefCell<Option<Rc<Apps>>> = const { RefCell::new(None) };
}

/// The apps (`PUSHER_APPS`, a JSON array); none when unset. A malformed value is a
/// `config_error` naming it (never cached, so a fixed deployment recovers).
pub(crate) fn apps(env: &Env) -> Result<Rc<Apps>, ApiError> {
    if let Some(a) = APPS.with(|a| a.borrow().clone()) {
        return Ok(a);
    }
    let parsed = match setting(env, "PUSHER_APPS") {
        None => Apps::new(Vec::new()),
        Some(raw) => Apps::parse(&raw),
    }
    .map_err(|e| ApiError::Config {
        message: format!("PUSHER_APPS: {e}"),
    })?;
    let parsed = Rc::new(parsed);
    APPS.with(|a| *a.borrow_mut() = Some(parsed.clone()));
    Ok(parsed)
}
