//! `GET /v1/stream`, the WebSocket: on-demand checks and live outcomes on
//! one socket, within the same limits as the HTTP API. The socket holds one
//! of its token's `max_in_flight` slots for its whole life; each check sent
//! on it counts against the token's `requests_per_minute`, and at most
//! `max_in_flight` of them wait at once; a message is at most
//! `max_body_bytes`; a socket subscribes to at most `max_subscriptions`
//! sites; it is pinged every 20 s, and closed when it has had nothing to do
//! (no subscription, no check waiting, no message) for the listener's
//! `idle_timeout`.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::guard::Caller;
use super::public::{queue, PublicApi};
use crate::model::Origin;

/// How often the server pings: a live client's pong keeps the socket's
/// connection from being closed as idle.
const PING_EVERY: Duration = Duration::from_secs(20);

/// `GET /v1/stream` (WebSocket). The client sends `{"check": {...}}` (an
/// on-demand check as for `POST /v1/checks`) and gets `{"queued": {...}}`
/// then `{"outcome": {...}}`; or `{"subscribe": {"sites": [...]}}` and gets
/// `{"subscribed": [the sites added], "count": n}`, then every outcome of
/// those sites as it happens. A check whose socket closed is still checked
/// and persisted: fetch it by id. Refusals come as `{"error": ...}`
/// (`{"rejected": ...}` for an invalid check), and the socket stays open.
pub async fn stream(
    State(api): State<PublicApi>,
    Extension(caller): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> Response {
    let limit = api.settings.api.max_body_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve_stream(api, caller, socket))
}

async fn serve_stream(api: PublicApi, caller: Caller, mut socket: WebSocket) {
    let mut outcomes = api.outcomes.subscribe();
    let mut sites: HashSet<String> = HashSet::new();
    let mut waiting: HashSet<uuid::Uuid> = HashSet::new();
    let max_sites = api.settings.api.max_subscriptions;
    let idle_after = api.settings.api.connections.idle_timeout;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let reply = tokio::select! {
            _ = ping.tick() => {
                if sites.is_empty() && waiting.is_empty() && last_heard.elapsed() >= idle_after {
                    let _ = socket.send(WsMessage::Close(None)).await;
                    return;
                }
                if socket.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
                continue;
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                last_heard = Instant::now();
                let request: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                if let Some(spec) = request.get("check") {
                    if waiting.len() >= caller.in_flight_limit() {
                        json!({ "error": "too many checks in progress on this socket (max_in_flight)" })
                    } else if let Err(retry_after) = caller.take() {
                        json!({ "error": "rate limit reached for this token", "retry_after": retry_after })
                    } else {
                        match queue(&api, spec, &caller).await {
                            Ok(req) => {
                                waiting.insert(req.check_id);
                                json!({ "queued": { "check_id": req.check_id } })
                            }
                            Err(r) => json!({ "rejected": r.to_json() }),
                        }
                    }
                } else if let Some(list) = request.pointer("/subscribe/sites").and_then(Value::as_array) {
                    subscribe(&mut sites, list, max_sites)
                } else {
                    json!({ "error": "send {\"check\": {...}} or {\"subscribe\": {\"sites\": [...]}}" })
                }
            }
            o = outcomes.recv() => match o {
                Ok(o) if waiting.remove(&o.check_id) || (o.origin == Origin::Scheduled && sites.contains(&o.site)) => {
                    json!({ "outcome": &*o })
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => json!({ "missed": n }),
                Err(_) => return,
            },
        };
        if socket
            .send(WsMessage::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Adds the site names of `list` to `sites`, up to `max` in all. The reply
/// names only the sites this message added (not the whole set again) and
/// the count; past the cap it is an error and nothing is added.
fn subscribe(sites: &mut HashSet<String>, list: &[Value], max: usize) -> Value {
    let new: HashSet<&str> = list
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| !sites.contains(*s))
        .collect();
    if sites.len() + new.len() > max {
        return json!({
            "error": format!("at most {max} subscriptions per socket (max_subscriptions)"),
            "count": sites.len(),
        });
    }
    let added: Vec<&str> = new.into_iter().collect();
    sites.extend(added.iter().map(|s| (*s).to_owned()));
    json!({ "subscribed": added, "count": sites.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_capped_and_replies_incremental() {
        let mut sites = HashSet::new();
        let r = subscribe(&mut sites, &[json!("a"), json!("b")], 3);
        assert_eq!(r["count"], 2);
        assert_eq!(r["subscribed"].as_array().unwrap().len(), 2);
        // Only what is new is named.
        let r = subscribe(&mut sites, &[json!("a"), json!("c")], 3);
        assert_eq!(r["subscribed"], json!(["c"]));
        assert_eq!(r["count"], 3);
        // Past the cap: refused whole.
        let r = subscribe(&mut sites, &[json!("d")], 3);
        assert!(r["error"].as_str().unwrap().contains("at most 3"), "{r}");
        assert_eq!(sites.len(), 3);
    }
}
