//! A chat client over a real WebSocket library (tokio-tungstenite), for tests and `shoal-bench
//! chat`: connect with a token, send JSON frames, read frames with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

/// What a socket read gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON text frame.
    Frame(Value),
    /// The server closed the connection, with this close code when it gave one.
    Closed(Option<u16>),
}

/// One WebSocket session of a user.
pub struct ChatSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl std::fmt::Debug for ChatSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSocket").finish_non_exhaustive()
    }
}

/// How a handshake failed: the HTTP status and JSON body the server answered instead of 101.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The error body.
    pub body: Value,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handshake refused with {}: {}", self.status, self.body)
    }
}

impl std::error::Error for Refused {}

impl ChatSocket {
    /// Connects to `/v1/chat/ws` on `http` with `token` in the `Authorization` header (or as
    /// `?token=` when `in_query`). A refused handshake is a [`Refused`] error.
    pub async fn connect(http: SocketAddr, token: Option<&str>, in_query: bool) -> Result<Self> {
        let url = match (token, in_query) {
            (Some(t), true) => format!("ws://{http}/v1/chat/ws?token={t}"),
            _ => format!("ws://{http}/v1/chat/ws"),
        };
        let mut request = url.into_client_request().context("request")?;
        if let (Some(t), false) = (token, in_query) {
            request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}"))?);
        }
        // Small frames both ways: no Nagle; tungstenite zero-fills its read buffer before every
        // read, so a small one.
        let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
        match connect_async_with_config(request, Some(config), true).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let body =
                    response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
                Err(Refused { status, body }.into())
            }
            Err(e) => Err(anyhow!("websocket connect to {http}: {e}")),
        }
    }

    /// Sends one text frame as it is.
    pub async fn send_text(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::text(text)).await.context("websocket send")
    }

    /// Sends `frame` as JSON text.
    pub async fn send_json(&mut self, frame: &Value) -> Result<()> {
        self.send_text(frame.to_string()).await
    }

    /// Sends a `send` frame.
    pub async fn send_message(&mut self, to: &str, client_msg_id: &str, body: &str) -> Result<()> {
        self.send_json(&json!({"type": "send", "to": to, "client_msg_id": client_msg_id, "body": body})).await
    }

    /// Sends an `ack` frame.
    pub async fn ack(&mut self, conversation_id: &str, seq: u64) -> Result<()> {
        self.send_json(&json!({"type": "ack", "conversation_id": conversation_id, "seq": seq})).await
    }

    /// The next frame, or the close; fails when nothing comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Incoming> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let read = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {within:?}"))?;
            match read {
                Some(Ok(Message::Text(text))) => {
                    let v = serde_json::from_str(text.as_str()).with_context(|| format!("not JSON: {text}"))?;
                    return Ok(Incoming::Frame(v));
                }
                Some(Ok(Message::Close(frame))) => return Ok(Incoming::Closed(frame.map(|f| u16::from(f.code)))),
                Some(Ok(Message::Binary(_))) => bail!("a binary frame from the server"),
                Some(Ok(_)) => continue,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) | None => {
                    return Ok(Incoming::Closed(None));
                }
                Some(Err(e)) => return Err(anyhow!("websocket read: {e}")),
            }
        }
    }

    /// The next frame; fails on a close or when nothing comes within `within`.
    pub async fn frame(&mut self, within: Duration) -> Result<Value> {
        match self.next(within).await? {
            Incoming::Frame(v) => Ok(v),
            Incoming::Closed(code) => bail!("the server closed the connection (code {code:?})"),
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
