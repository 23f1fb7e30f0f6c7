//! The router's side of `GET /api/voice/:session/ws` and `GET /api/chat/:session/ws`: admits
//! the user and forwards to the session's object (`objects/sessions/`). The router has
//! checked the origin and the upgrade before anything was charged.
//!
//! One object per user and session id (`<user>:<session>`), so two users with the same session
//! id never share a conversation, and a user's own session survives reconnects. Anonymous
//! users get a fresh random id per connection, so an anonymous session is effectively per
//! connection (docs/SESSIONS.md). A session belongs to its user, so any valid token opens the
//! user's own sessions (room scopes do not apply).

use worker::{Env, Request, Response};

use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::route::Route;
use crate::internal::{Binding, Op};
use crate::obs;
use crate::sessions::admission::{SessionAdmission, SESSION_HEADER};

use super::admission::{identify, Identity};
use super::http::{internal, owned};
use super::stub::{stub, Call};

/// Forwards a session socket to its object, whose 101 goes back as is.
pub(crate) async fn socket(
    req: Request,
    env: &Env,
    config: &Config,
    route: &Route,
    request_id: &str,
) -> Result<Response, ApiError> {
    let (binding, session) = match route {
        Route::VoiceSocket(s) => (Binding::Voice, s),
        Route::ChatSocket(s) => (Binding::Chat, s),
        _ => return Err(internal("not a session route")),
    };
    let (user, anonymous) = match identify(&req, env, config)? {
        Identity::Token(claims) => (claims.sub, false),
        Identity::Anonymous(user) => (user, true),
    };
    let admission = SessionAdmission {
        user,
        anonymous,
        session: session.clone(),
        conn: String::new(),
        format: None,
    };
    let response = Call::new(Op::SessionSocket)
        .headers_from(req.headers(), |k| !k.eq_ignore_ascii_case(SESSION_HEADER))?
        .header(
            SESSION_HEADER,
            &serde_json::to_string(&admission).map_err(internal)?,
        )?
        .header(obs::REQUEST_ID_HEADER, request_id)?
        .send(&stub(env, binding, &admission.object_name())?)
        .await
        .map_err(internal)?;
    owned(response).await
}
