//! Lanes: one long-lived bidirectional stream per connection that carries many calls at once.
//!
//! Opening a QUIC stream per call costs about twice the CPU of writing to one that is already
//! open (stream state on both ends, a FIN, flow-control credit), and a small call written on
//! its own costs a packet and a syscall. A lane opens one stream per connection and keeps it:
//! the caller's side tags each request frame with an id, a writer task sends everything queued
//! meanwhile in one write, and a reader task hands each tagged response to its caller. The
//! callee serves a lane's requests concurrently (up to `peer.max_in_flight_per_peer`) and
//! answers them in completion order, batched the same way.
//!
//! On the wire, after a first ordinary frame holding [`Request::OpenLane`], each message is
//! `[length: u32 BE][id: u64 BE][frame]` where `frame` is a whole ordinary frame (header with
//! its version, rkyv payload) and `length` counts the id and the frame. Frames larger than
//! [`LANE_MAX_FRAME`] go on a stream of their own instead, so a snapshot chunk never holds up a
//! heartbeat behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::util::lock;

use super::frame::{self, FrameError};

/// Request frames up to this size travel on the lane; larger ones get a stream of their own.
pub const LANE_MAX_FRAME: usize = 256 * 1024;
/// Bytes before a lane message's frame: its length and its id.
const TAG_LEN: usize = 12;
/// A writer stops gathering queued messages into one write at about this many bytes.
const BATCH_BYTES: usize = 256 * 1024;

/// Callers waiting for their response, by id.
type Pending = Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>;

/// The caller's end of a lane.
pub(super) struct Lane {
    /// The connection it runs on (`quinn::Connection::stable_id`).
    pub(super) conn_id: usize,
    out: mpsc::Sender<(u64, Vec<u8>)>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

/// What a lane's caller and its tasks share.
struct Shared {
    pending: Pending,
    /// Set (before `pending` is drained) once the stream failed or ended.
    dead: AtomicBool,
    /// Why it died, for the callers it fails.
    reason: Mutex<String>,
}

impl Shared {
    /// Marks the lane dead and fails every caller still waiting (dropping its sender).
    fn fail(&self, reason: String) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            *lock(&self.reason) = reason;
        }
        lock(&self.pending).clear();
    }

    fn reason(&self) -> String {
        lock(&self.reason).clone()
    }
}

/// Removes a caller's entry when its call ends, answered or not (e.g. it timed out).
struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

impl Lane {
    /// Starts a lane on a stream already opened and announced with [`Request::OpenLane`]:
    /// spawns its writer and reader tasks.
    ///
    /// [`Request::OpenLane`]: super::proto::Request::OpenLane
    pub(super) fn start(
        conn_id: usize,
        send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        capacity: usize,
        max_frame: u32,
    ) -> Self {
        let (out, rx) = mpsc::channel(capacity.max(1));
        let shared =
            Arc::new(Shared { pending: Mutex::default(), dead: AtomicBool::new(false), reason: Mutex::default() });
        let writer_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(reason) = write_loop(send, rx).await {
                writer_shared.fail(reason);
            }
        });
        let reader_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let reason = loop {
                match read_message(&mut recv, max_frame).await {
                    Ok(Some((id, response))) => {
                        let waiter = lock(&reader_shared.pending).remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(response);
                        }
                    }
                    Ok(None) => break "the peer closed the lane".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            reader_shared.fail(reason);
        });
        Self { conn_id, out, shared, next_id: AtomicU64::new(0) }
    }

    /// Whether the lane can still carry calls.
    pub(super) fn is_alive(&self) -> bool {
        !self.shared.dead.load(Ordering::SeqCst)
    }

    /// Callers waiting for a response.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    /// Sends one request frame and waits for the response frame; `Err` says why the lane
    /// failed (the caller's deadline is the caller's to enforce).
    pub(super) async fn call(&self, request: Vec<u8>) -> Result<Vec<u8>, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        let _forget = Forget { shared: &self.shared, id };
        // Checked after inserting: a lane that died before the insert has already drained
        // `pending` and would never answer.
        if !self.is_alive() {
            return Err(self.shared.reason());
        }
        self.out.send((id, request)).await.map_err(|_| self.shared.reason())?;
        rx.await.map_err(|_| self.shared.reason())
    }
}

/// Writes queued `(id, frame)` messages, everything queued at the time in one write, until the
/// queue closes (then finishes the stream) or the stream fails.
pub(super) async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<(u64, Vec<u8>)>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let the tasks that are ready run first: what they queue for this peer meanwhile (other
        // groups' appends, heartbeats, answers) goes out in the same write, so in fewer packets.
        tokio::task::yield_now().await;
        buf.clear();
        push_message(&mut buf, first.0, &first.1)?;
        while buf.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok((id, frame)) => push_message(&mut buf, id, &frame)?,
                Err(_) => break,
            }
        }
        send.write_all(&buf).await.map_err(|e| e.to_string())?;
    }
    let _ = send.finish();
    Ok(())
}

/// Appends one tagged message to `buf`.
fn push_message(buf: &mut Vec<u8>, id: u64, frame: &[u8]) -> Result<(), String> {
    let len = u32::try_from(8 + frame.len()).map_err(|_| format!("lane message of {} bytes", frame.len()))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(frame);
    Ok(())
}

/// Reads one tagged message: `None` at a clean end of the stream. The frame inside is checked
/// against `max_frame` before anything is allocated for it, and returned whole (header
/// included) for [`frame::decode`].
pub(super) async fn read_message(
    recv: &mut quinn::RecvStream,
    max_frame: u32,
) -> Result<Option<(u64, Vec<u8>)>, FrameError> {
    let mut tag = [0u8; TAG_LEN];
    match recv.read_exact(&mut tag).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(FrameError::Stream { reason: e.to_string() }),
    }
    let len = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]);
    let id = u64::from_be_bytes([tag[4], tag[5], tag[6], tag[7], tag[8], tag[9], tag[10], tag[11]]);
    let frame_len = len.checked_sub(8).ok_or(FrameError::Empty)?;
    // The frame's own header must fit too.
    if frame_len > max_frame.saturating_add(frame::HEADER_LEN as u32) {
        return Err(FrameError::TooLarge { len: frame_len, max: max_frame });
    }
    let mut frame = vec![0u8; frame_len as usize];
    recv.read_exact(&mut frame).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Stream { reason: e.to_string() },
    })?;
    Ok(Some((id, frame)))
}

/// The callee's bound on one lane's requests in service at once.
pub(super) fn server_permits(max_in_flight: u32) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max_in_flight.max(1) as usize))
}
