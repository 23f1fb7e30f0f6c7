//! The gateway's user side: `pusher:signin` (user authentication), closing a user's sockets
//! (`terminate_connections`) and the shard's share of an app's channel list.

use serde::Deserialize;
use worker::{Request, Response, WebSocket};

use crate::glue::http::{json, read_json};
use crate::http::error::ApiError;
use crate::objects::pusher::gateway::{Attachment, Gateway};
use crate::pusher::authorize;
use crate::pusher::wire::{self, close};
use crate::pusher::Limits;

/// `GatewayTerminate`'s body.
#[derive(Deserialize)]
struct Terminate {
    user_id: String,
}

impl Gateway {
    /// `pusher:signin`: a valid signature over `socket_id::user::user_data` makes the socket
    /// that user's (kept in its attachment); pusher-js then subscribes `#server-to-user-{id}`.
    /// A bad one is a `pusher:error` with 4009 and the socket stays as it was.
    pub(super) fn signin(
        &self,
        ws: &WebSocket,
        a: &Attachment,
        auth: &str,
        user_data: &str,
        limits: &Limits,
    ) -> worker::Result<()> {
        let app = self.app(&a.app_id)?;
        match authorize::signin(&app.key, &app.secret, &a.socket_id, auth, user_data, limits) {
            Ok(user) => {
                let mut signed = a.clone();
                signed.user = Some((user.id, user.user_info));
                ws.serialize_attachment(&signed)?;
                let _ = ws.send_with_str(wire::signin_success_frame(user_data));
            }
            Err(e) => {
                let _ =
                    ws.send_with_str(wire::error_frame(Some(close::UNAUTHORIZED), &e.to_string()));
            }
        }
        Ok(())
    }

    /// `GatewayTerminate`: closes this shard's sockets signed in as the user, with 4009.
    pub(super) async fn terminate(&self, mut req: Request) -> Result<Response, ApiError> {
        let t: Terminate = read_json(&mut req).await?;
        let mut closed = 0;
        let sockets: Vec<WebSocket> = self.sockets.borrow().values().cloned().collect();
        for ws in sockets {
            let Ok(Some(a)) = ws.deserialize_attachment::<Attachment>() else {
                continue;
            };
            if a.user.as_ref().is_some_and(|(id, _)| *id == t.user_id) {
                let _ = ws.close(Some(close::UNAUTHORIZED), Some("terminated"));
                closed += 1;
            }
        }
        json(200, &serde_json::json!({ "closed": closed }))
    }

    /// `GatewayReconnect`: closes every socket of this shard with 4200 (reconnect now):
    /// pusher-js reconnects at once, to a shard picked afresh, and resubscribes. The close
    /// events that follow forget the sockets' subscriptions as for any close.
    pub(super) fn reconnect_all(&self) -> Result<Response, ApiError> {
        let sockets: Vec<WebSocket> = self.sockets.borrow().values().cloned().collect();
        for ws in &sockets {
            let _ = ws.close(Some(close::RECONNECT_NOW), Some("reconnect"));
        }
        json(200, &serde_json::json!({ "closed": sockets.len() }))
    }

    /// `GatewayChannels`: the channels this shard's sockets subscribe to, each with its
    /// subscriptions here and (presence) its distinct users here.
    pub(super) fn channels(&self) -> Result<Response, ApiError> {
        let occupied = self.with_shard(|s| s.occupied());
        let list: Vec<serde_json::Value> = occupied
            .into_iter()
            .map(|(name, subs, users)| serde_json::json!({"name": name, "subscriptions": subs, "users": users}))
            .collect();
        json(200, &serde_json::json!({ "channels": list }))
    }
}
