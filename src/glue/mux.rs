//! The router's side of protocol v2 sockets (`GET /api/ws`, `src/rooms/multiplex.rs`):
//! negotiating the encoding, authenticating once for every room the socket will enter, and
//! handing the socket to a gateway shard.

use worker::{Env, Request, Response};

use crate::config::Config;
use crate::http::error::ApiError;
use crate::internal::{Binding, Op};
use crate::obs;
use crate::rooms::multiplex::{
    self, MuxAdmission, MUX_ADMISSION_HEADER, MUX_SUBPROTOCOL_HEADER, NATIVE_APP,
};
use crate::rooms::session::Perms;

use super::admission::{identify, token_perms, Identity};
use super::http::{internal, owned};
use super::pusher::{APP_HEADER, SHARD_HEADER};
use super::rooms::encoding_offer;
use super::stub::{stub, Call};

/// `GET /api/ws` (the router has checked the origin and the upgrade): negotiates the
/// encoding, authenticates once for every room the socket will enter, and hands the socket
/// to a gateway shard picked at random (`WS_GATEWAY_SHARDS`), whose 101 goes back as is.
pub(crate) async fn mux_socket(
    req: Request,
    env: &Env,
    config: &Config,
    request_id: &str,
) -> Result<Response, ApiError> {
    let (offered, query_enc) = encoding_offer(&req)?;
    let (enc, subprotocol) = multiplex::negotiate(offered.as_deref(), query_enc.as_deref())
        .map_err(|e| ApiError::bad_request("unsupported_encoding", e))?;
    let admission = match identify(&req, env, config)? {
        Identity::Anonymous(user) => MuxAdmission {
            user,
            anonymous: true,
            name: None,
            perms: Perms::ALL,
            rooms: None,
            ops: false,
            expires_ms: None,
            enc,
        },
        Identity::Token(claims) => MuxAdmission {
            user: claims.sub.clone(),
            anonymous: false,
            name: claims.name.clone(),
            perms: token_perms(&claims),
            rooms: Some(claims.rooms.clone()),
            ops: claims.ops,
            expires_ms: Some(claims.expires_at_ms()),
            enc,
        },
    };
    let n = config.ws_shards.max(1);
    let pick = (js_sys::Math::random() * f64::from(n)) as u32 % n;
    let name = format!("{NATIVE_APP}:{pick}");
    let internal_header = |k: &str| {
        [
            SHARD_HEADER,
            APP_HEADER,
            MUX_ADMISSION_HEADER,
            MUX_SUBPROTOCOL_HEADER,
        ]
        .iter()
        .any(|h| k.eq_ignore_ascii_case(h))
    };
    let mut call = Call::new(Op::GatewaySocket)
        .headers_from(req.headers(), |k| !internal_header(k))?
        .header(SHARD_HEADER, &name)?
        .header(APP_HEADER, NATIVE_APP)?
        .header(
            MUX_ADMISSION_HEADER,
            &serde_json::to_string(&admission).map_err(internal)?,
        )?
        .header(obs::REQUEST_ID_HEADER, request_id)?;
    if let Some(p) = subprotocol {
        call = call.header(MUX_SUBPROTOCOL_HEADER, p)?;
    }
    let response = call
        .send(&stub(env, Binding::Gateway, &name)?)
        .await
        .map_err(internal)?;
    owned(response).await
}
