//! Who is connecting (a leaf of the glue): a verified connection token, or an anonymous user
//! where `ALLOW_ANONYMOUS` is on. Rooms and sessions admit the same way; what each then makes
//! of the identity (room scopes, permissions) is theirs.

use worker::{Env, Request};

use crate::auth::{self, AuthError, Claims, Perm};
use crate::config::Config;
use crate::http::error::ApiError;
use crate::rooms::session::Perms;

use super::http::{internal, now_ms};
use super::settings::auth_secret;

/// A verified connection.
pub(crate) enum Identity {
    /// A token's claims.
    Token(Claims),
    /// No token, and anonymous access is on: a fresh `anon-…` id.
    Anonymous(String),
}

/// A refused token or API key as the edge reports it: 401 with the error's code, or 403
/// `insufficient_scope` for a valid key without the route's scope.
pub(crate) fn unauthorized(e: AuthError) -> ApiError {
    match e {
        AuthError::MissingScope(_) => ApiError::forbidden(e.code(), e.to_string()),
        e => ApiError::unauthorized(e.code(), e.to_string()),
    }
}

/// Reads the token from `Authorization: Bearer` or `?token=` and verifies it; without one,
/// admits an anonymous user if the settings allow it.
pub(crate) fn identify(req: &Request, env: &Env, config: &Config) -> Result<Identity, ApiError> {
    let header = req.headers().get("Authorization").map_err(internal)?;
    let url = req.url().map_err(internal)?;
    let token = auth::bearer(header.as_deref())
        .map(str::to_string)
        .or_else(|| {
            url.query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
    let Some(token) = token else {
        if config.allow_anonymous {
            let id = uuid::Uuid::new_v4().simple().to_string();
            return Ok(Identity::Anonymous(format!("anon-{}", &id[..12])));
        }
        return Err(ApiError::unauthorized(
            "token_required",
            "this service needs a connection token (Authorization: Bearer or ?token=)",
        ));
    };
    let secret = auth_secret(env)?;
    let claims = auth::verify_with(&token, secret.as_bytes(), now_ms() / 1000, config.tokens)
        .map_err(unauthorized)?;
    Ok(Identity::Token(claims))
}

/// The permissions a token grants in every room it opens.
pub(crate) fn token_perms(claims: &Claims) -> Perms {
    Perms {
        publish: claims.can(Perm::Publish),
        subscribe: claims.can(Perm::Subscribe),
        presence: claims.can(Perm::Presence),
    }
}
