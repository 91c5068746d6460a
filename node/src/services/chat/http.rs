//! Chat's endpoints: `GET /v1/chat/ws` (the WebSocket, [`super::session`]),
//! `POST /v1/chat/messages`, `GET /v1/chat/conversations`,
//! `GET /v1/chat/conversations/{peer}/messages` and `POST /v1/chat/conversations/{peer}/read`.
//! Every one takes a user's bearer token (the admin token has no conversations).

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ChatError, MessageRec, Summary};
use crate::services::Ctx;
use crate::services::api::{ApiError, ErrorBody, call_error};
use crate::services::users::Caller;
use crate::services::users::http::identify;

/// Read buffer of a WebSocket session (tungstenite's default is 128 KiB).
const WS_READ_BUFFER: usize = 8 * 1024;
/// Longest `client_msg_id`, in bytes.
const MAX_CLIENT_MSG_ID: usize = 128;
/// History page size without `limit`.
const DEFAULT_PAGE: u32 = 50;
/// Longest user id accepted in a path or body (ids are `u` and 16 hex digits).
const MAX_USER_ID: usize = 64;

/// `POST /v1/chat/messages` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMessage {
    /// The recipient's user id: an existing user other than the caller.
    #[schema(example = "u0123456789abcdef")]
    pub(crate) to: String,
    /// The caller's id for this message, 1 to 128 printable ASCII characters: a resend with the
    /// same id within 24 h gets the first send's answer and stores nothing.
    #[schema(min_length = 1, max_length = 128, pattern = "^[\\x20-\\x7e]{1,128}$", example = "c-42")]
    pub(crate) client_msg_id: String,
    /// The text: 1 to `chat.max_body_bytes` (default 4,096) bytes of UTF-8.
    #[schema(min_length = 1, example = "hello")]
    pub(crate) body: String,
}

/// A message's place in its conversation.
#[derive(Serialize, ToSchema)]
struct SentMessage {
    client_msg_id: String,
    /// The sorted pair of user ids, joined by `:`.
    #[schema(example = "u0123456789abcdef:ufedcba9876543210")]
    conversation_id: String,
    /// Position in the conversation, dense from 1.
    seq: u64,
    /// When the node that took the message stamped it (RFC 3339, milliseconds, UTC).
    #[schema(format = DateTime, example = "2030-01-31T12:00:00.123Z")]
    sent_at: String,
}

/// One message.
#[derive(Serialize, ToSchema)]
pub(crate) struct Message {
    seq: u64,
    /// The sender's user id.
    from: String,
    body: String,
    #[schema(format = DateTime, example = "2030-01-31T12:00:00.123Z")]
    sent_at: String,
}

/// One conversation of the caller.
#[derive(Serialize, ToSchema)]
pub(crate) struct Conversation {
    conversation_id: String,
    /// The other member's user id.
    peer: String,
    last_message: Message,
    /// Messages from the peer after the caller's read cursor.
    unread: u64,
    /// The caller's delivered cursor: every message up to it was acknowledged (`ack`) on one
    /// of the caller's WebSocket sessions; a new session starts after it.
    delivered_seq: u64,
}

/// The caller's conversations, newest message first.
#[derive(Serialize, ToSchema)]
pub(crate) struct Conversations {
    conversations: Vec<Conversation>,
}

/// A page of history.
#[derive(Serialize, ToSchema)]
pub(crate) struct History {
    /// Newest first.
    messages: Vec<Message>,
    /// Present when older messages exist: pass it as `before_seq` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    next_before_seq: Option<u64>,
}

/// `POST /v1/chat/conversations/{peer}/read` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    /// The last seq the caller has read; at most the conversation's last seq.
    seq: u64,
}

/// The caller's read cursor.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadCursor {
    conversation_id: String,
    /// Last seq read (unchanged when the request's was behind it).
    read_seq: u64,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

pub(crate) fn chat_error(e: ChatError) -> ApiError {
    match e {
        e @ ChatError::UnknownUser(_) => ApiError::new(StatusCode::NOT_FOUND, "user_not_found", e.to_string()),
        e @ ChatError::SameUser => bad("invalid_to", format!("to: {e}; you cannot chat with yourself")),
        e @ ChatError::BeyondLast { .. } => bad("invalid_seq", format!("seq: {e}")),
        ChatError::Cluster(e) => call_error(e),
        ChatError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        ChatError::Unavailable(m) => ApiError::unavailable("no_leader", m, 1),
    }
}

pub(crate) fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn message(m: MessageRec) -> Message {
    Message { seq: m.seq, from: m.from, body: m.body, sent_at: rfc3339_ms(m.sent_at) }
}

/// The caller's user id; the admin token has no conversations.
fn user_of(caller: &Caller) -> Result<&str, ApiError> {
    match caller {
        Caller::User(u) => Ok(&u.id),
        Caller::Admin => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user_required",
            "chat is between users; the admin token has no conversations",
        )),
    }
}

/// Whether `id` could be a user id (so it is safe in a key); existence is checked later.
fn user_id_shaped(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A `{peer}` path segment: another user's id (existence is checked by the service).
fn check_peer(user: &str, peer: &str) -> Result<(), ApiError> {
    if !user_id_shaped(peer) {
        Err(ApiError::new(StatusCode::NOT_FOUND, "user_not_found", format!("no user has the id `{peer}`")))
    } else if peer == user {
        Err(bad("invalid_peer", "peer: a conversation needs two different users; this is your own id"))
    } else {
        Ok(())
    }
}

/// The fields of a send, checked; the first bad field names the error.
pub(crate) fn check_message(m: &NewMessage, max_body: usize) -> Result<(), ApiError> {
    if !user_id_shaped(&m.to) {
        return Err(bad("invalid_to", "to must be a user id (letters and digits, at most 64)"));
    }
    let id = &m.client_msg_id;
    if id.is_empty() || id.len() > MAX_CLIENT_MSG_ID || !id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(bad(
            "invalid_client_msg_id",
            format!("client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} printable ASCII characters"),
        ));
    }
    if m.body.is_empty() || m.body.len() > max_body {
        return Err(bad(
            "invalid_message_body",
            format!("body must be 1 to {max_body} bytes of UTF-8 (it is {} bytes)", m.body.len()),
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/chat/messages",
    operation_id = "send_chat_message",
    tag = "chat",
    request_body(content = NewMessage, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored, after commit", body = SentMessage),
        (status = 200, description = "A resend of a `client_msg_id` stored in the last 24 h: the first send's \
                                      answer; nothing stored", body = SentMessage),
        (status = 400, description = "`invalid_body` (not the JSON above), `invalid_to` (not a user id, or the \
                                      caller), `invalid_client_msg_id` or `invalid_message_body`", body = ErrorBody),
        (status = 403, description = "`user_required`: the admin token has no conversations", body = ErrorBody),
        (status = 404, description = "`user_not_found`: no user has the id `to`", body = ErrorBody),
        (status = 503, description = "`no_leader` (not stored; retry), `partition_unavailable` (outcome unknown: \
                                      resend with the same client_msg_id) or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn send(State(ctx): State<Ctx>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let outcome = send_message(&ctx, &caller, &body).await;
    let label = match &outcome {
        Ok((status, _)) if *status == StatusCode::CREATED => "sent",
        Ok(_) => "duplicate",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    ctx.chat.metrics().messages.with_label_values(&[label]).inc();
    outcome.map(|(status, body)| (status, Json(body)).into_response())
}

async fn send_message(ctx: &Ctx, caller: &Caller, body: &[u8]) -> Result<(StatusCode, SentMessage), ApiError> {
    let from = user_of(caller)?;
    let new: NewMessage = serde_json::from_slice(body).map_err(|e| {
        bad("invalid_body", format!("expected {{\"to\": \"...\", \"client_msg_id\": \"...\", \"body\": \"...\"}}: {e}"))
    })?;
    check_message(&new, ctx.chat.config().max_body_bytes)?;
    let sent = ctx.chat.send(from, &new.to, &new.client_msg_id, &new.body).await.map_err(chat_error)?;
    let status = if sent.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    let answer = SentMessage {
        client_msg_id: new.client_msg_id,
        conversation_id: sent.conversation_id,
        seq: sent.seq,
        sent_at: rfc3339_ms(sent.sent_at),
    };
    Ok((status, answer))
}

#[utoipa::path(
    get,
    path = "/v1/chat/conversations",
    operation_id = "list_chat_conversations",
    tag = "chat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's conversations, newest message first (linearizable; one read \
                                      of every partition)", body = Conversations),
        (status = 403, description = "`user_required`: the admin token has no conversations", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`: some partition could \
                                      not answer", body = ErrorBody),
    )
)]
pub(crate) async fn conversations(State(ctx): State<Ctx>, caller: Caller) -> Result<Json<Conversations>, ApiError> {
    let user = user_of(&caller)?;
    let all: Vec<Summary> = ctx.chat.conversations(user).await.map_err(chat_error)?;
    let conversations = all
        .into_iter()
        .map(|s| Conversation {
            conversation_id: s.conversation_id,
            peer: s.peer,
            last_message: message(s.last_message),
            unread: s.unread,
            delivered_seq: s.delivered_seq,
        })
        .collect();
    Ok(Json(Conversations { conversations }))
}

/// `before_seq` and `limit` of a history request.
fn page_params(query: Option<&str>) -> Result<(Option<u64>, u32), ApiError> {
    let (mut before, mut limit) = (None, DEFAULT_PAGE);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "before_seq" => {
                let seq = value.parse::<u64>().ok().filter(|s| *s >= 1);
                before = Some(seq.ok_or_else(|| bad("invalid_before_seq", "before_seq must be an integer ≥ 1"))?);
            }
            "limit" => {
                let n = value.parse::<u32>().ok().filter(|n| (1..=super::state::MAX_PAGE).contains(n));
                limit = n.ok_or_else(|| {
                    bad("invalid_limit", format!("limit must be an integer from 1 to {}", super::state::MAX_PAGE))
                })?;
            }
            _ => {}
        }
    }
    Ok((before, limit))
}

#[utoipa::path(
    get,
    path = "/v1/chat/conversations/{peer}/messages",
    operation_id = "chat_history",
    tag = "chat",
    params(
        ("peer" = String, Path, description = "The other member's user id"),
        ("before_seq" = Option<u64>, Query, minimum = 1, description = "Only messages with a smaller seq; \
                                                                        default: from the newest"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, default 50"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Newest first (linearizable); empty when the two never wrote",
         body = History),
        (status = 400, description = "`invalid_before_seq`, `invalid_limit`, or `invalid_peer` (the peer is the \
                                      caller)", body = ErrorBody),
        (status = 403, description = "`user_required`: the admin token has no conversations", body = ErrorBody),
        (status = 404, description = "`user_not_found`: no user has the id `peer`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn history(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(peer): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<History>, ApiError> {
    let user = user_of(&caller)?;
    check_peer(user, &peer)?;
    let (before_seq, limit) = page_params(query.as_deref())?;
    let page = ctx.chat.history(user, &peer, before_seq, limit).await.map_err(chat_error)?;
    Ok(Json(History {
        messages: page.messages.into_iter().map(message).collect(),
        next_before_seq: page.next_before_seq,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/chat/conversations/{peer}/read",
    operation_id = "mark_chat_read",
    tag = "chat",
    params(("peer" = String, Path, description = "The other member's user id")),
    request_body(content = ReadBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's read cursor, after commit (it never moves back)",
         body = ReadCursor),
        (status = 400, description = "`invalid_body`, `invalid_seq` (beyond the last message), or `invalid_peer` \
                                      (the peer is the caller)", body = ErrorBody),
        (status = 403, description = "`user_required`: the admin token has no conversations", body = ErrorBody),
        (status = 404, description = "`user_not_found`: no user has the id `peer`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn read(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(peer): Path<String>,
    body: Bytes,
) -> Result<Json<ReadCursor>, ApiError> {
    let user = user_of(&caller)?;
    check_peer(user, &peer)?;
    let read: ReadBody = serde_json::from_slice(&body)
        .map_err(|e| bad("invalid_body", format!("expected {{\"seq\": <integer ≥ 0>}}: {e}")))?;
    let read_seq = ctx.chat.read(user, &peer, read.seq).await.map_err(chat_error)?;
    Ok(Json(ReadCursor { conversation_id: super::state::conversation_id(user, &peer), read_seq }))
}

/// The token of a WebSocket request: `?token=` (browsers cannot set headers on a WebSocket)
/// as an `Authorization` header, else the request's own.
fn ws_headers(headers: &HeaderMap, query: Option<&str>) -> Result<HeaderMap, ApiError> {
    let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token else { return Ok(headers.clone()) };
    let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "token: not a token (it has characters no token has)")
    })?;
    let mut headers = headers.clone();
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

#[utoipa::path(
    get,
    path = "/v1/chat/ws",
    operation_id = "chat_websocket",
    tag = "chat",
    params(("token" = Option<String>, Query, description = "The user's token, for clients that cannot set \
                                                            `Authorization` on a WebSocket")),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol: JSON text frames as described in \
                                      docs/api.md (`send`, `ack`, `read`, `ping` in; `sent`, `message`, `receipt`, \
                                      `error`, `pong` out)"),
        (status = 401, description = "`missing_token` or `invalid_token`", body = ErrorBody),
        (status = 403, description = "`user_required`: the admin token has no conversations", body = ErrorBody),
        (status = 426, description = "`upgrade_required`: not a WebSocket handshake", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`: the token could not \
                                      be checked", body = ErrorBody),
    )
)]
pub(crate) async fn websocket(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let caller = identify(&ctx, &ws_headers(&headers, query.as_deref())?).await?;
    let user = user_of(&caller)?.to_string();
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("this endpoint speaks WebSocket only (GET with Connection: Upgrade, Upgrade: websocket): {e}"),
        )
    })?;
    let max_frame = ctx.chat.config().max_frame_bytes;
    let chat = std::sync::Arc::clone(&ctx.chat);
    // The WebSocket layer refuses frames far over the limit itself; the session closes with
    // 1009 on anything over it.
    let layer_limit = max_frame.saturating_mul(4).max(64 * 1024);
    // tungstenite zero-fills the free part of its read buffer before every read: a small buffer
    // keeps that (and each idle session's memory) small.
    let mut response = upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(layer_limit)
        .max_frame_size(layer_limit)
        .on_upgrade(move |socket| super::session::run(chat, user, socket));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A user's presence.
#[derive(Serialize, ToSchema)]
pub(crate) struct PresenceBody {
    user: String,
    /// Whether the user has a live session (heard from within `chat.offline_after`).
    online: bool,
    /// When the user was last live (now, when online); absent when not seen since the node
    /// keeping the user's presence took over.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, required = false, example = "2030-01-31T12:00:00.123Z")]
    last_seen: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/presence/{user}",
    operation_id = "get_presence",
    tag = "chat",
    params(("user" = String, Path, description = "A user id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Online or not, and when last seen (soft state: kept by the node leading the \
                                      user's partition, rebuilt from heartbeats after a failover)", body = PresenceBody),
        (status = 401, description = "`missing_token` or `invalid_token`", body = ErrorBody),
        (status = 404, description = "`user_not_found`: no user has this id", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn presence(
    State(ctx): State<Ctx>,
    _caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<PresenceBody>, ApiError> {
    if !user_id_shaped(&user) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "user_not_found", format!("no user has the id `{user}`")));
    }
    ctx.chat.check_user(&user).await.map_err(chat_error)?;
    let status = ctx.chat.presence().of(&user).await.map_err(chat_error)?;
    Ok(Json(PresenceBody { user, online: status.online, last_seen: status.last_seen.map(rfc3339_ms) }))
}

/// Chat's routes.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(websocket))
        .routes(routes!(presence))
        .routes(routes!(send))
        .routes(routes!(conversations))
        .routes(routes!(history))
        .routes(routes!(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(to: &str, id: &str, body: &str) -> NewMessage {
        NewMessage { to: to.into(), client_msg_id: id.into(), body: body.into() }
    }

    #[test]
    fn a_bad_field_is_named_by_the_error_code() {
        let code = |m: NewMessage| check_message(&m, 8).err().map(|e| e.code);
        assert_eq!(code(new("u1", "c1", "hi")), None);
        assert_eq!(code(new("", "c1", "hi")), Some("invalid_to"));
        assert_eq!(code(new("u/1", "c1", "hi")), Some("invalid_to"));
        assert_eq!(code(new("u1", "", "hi")), Some("invalid_client_msg_id"));
        assert_eq!(code(new("u1", &"c".repeat(129), "hi")), Some("invalid_client_msg_id"));
        assert_eq!(code(new("u1", &"c".repeat(128), "hi")), None);
        assert_eq!(code(new("u1", "tab\there", "hi")), Some("invalid_client_msg_id"));
        assert_eq!(code(new("u1", "é", "hi")), Some("invalid_client_msg_id"));
        assert_eq!(code(new("u1", "c1", "")), Some("invalid_message_body"));
        assert_eq!(code(new("u1", "c1", "12345678")), None);
        assert_eq!(code(new("u1", "c1", "123456789")), Some("invalid_message_body"));
        // Bytes, not characters: four 2-byte characters fit, five do not.
        assert_eq!(code(new("u1", "c1", "éééé")), None);
        assert_eq!(code(new("u1", "c1", "ééééé")), Some("invalid_message_body"));
    }

    #[test]
    fn page_parameters_default_and_are_bounded() {
        assert_eq!(page_params(None).ok(), Some((None, DEFAULT_PAGE)));
        assert_eq!(page_params(Some("before_seq=7&limit=200")).ok(), Some((Some(7), 200)));
        let code = |q: &str| page_params(Some(q)).err().map(|e| e.code);
        assert_eq!(code("limit=0"), Some("invalid_limit"));
        assert_eq!(code("limit=201"), Some("invalid_limit"));
        assert_eq!(code("limit=x"), Some("invalid_limit"));
        assert_eq!(code("before_seq=0"), Some("invalid_before_seq"));
        assert_eq!(code("before_seq=-1"), Some("invalid_before_seq"));
    }
}
