//! The wire frame: `[length: u32 big-endian][version: u8][rkyv payload]`.
//!
//! `length` counts the version byte and the payload. It is checked against the configured cap
//! before anything is allocated, and the payload is only read through rkyv's validation.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// The frame format version this build speaks.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the payload: length prefix and version.
pub const HEADER_LEN: usize = 5;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the cap; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The cap.
        max: u32,
    },
    /// The length prefix is zero, so there is not even a version byte.
    #[error("empty frame")]
    Empty,
    /// The version byte names a format this build does not speak.
    #[error("unsupported frame version {got} (this node speaks {FRAME_VERSION})")]
    UnsupportedVersion {
        /// The version received.
        got: u8,
    },
    /// The stream ended before the announced length was read.
    #[error("frame truncated: stream ended early")]
    Truncated,
    /// The payload failed validation or does not decode to the expected type.
    #[error("malformed frame payload")]
    Malformed,
    /// The stream failed while reading or writing.
    #[error("stream error: {reason}")]
    Stream {
        /// What the stream reported.
        reason: String,
    },
}

impl FrameError {
    /// A label for metrics (small fixed set).
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "too_large",
            FrameError::Empty => "empty",
            FrameError::UnsupportedVersion { .. } => "bad_version",
            FrameError::Truncated => "truncated",
            FrameError::Malformed => "malformed",
            FrameError::Stream { .. } => "stream",
        }
    }
}

/// Serialises `value` into a complete frame.
pub fn encode<T>(value: &T) -> Result<Vec<u8>, FrameError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let payload = rkyv::to_bytes::<rancor::Error>(value).map_err(|_| FrameError::Malformed)?;
    let len = u32::try_from(payload.len() + 1).map_err(|_| FrameError::TooLarge { len: u32::MAX, max: u32::MAX })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(FRAME_VERSION);
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Checks a header and returns the payload length that follows it.
pub fn parse_header(header: [u8; HEADER_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if header[4] != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion { got: header[4] });
    }
    Ok(len as usize - 1)
}

/// Decodes a payload (the bytes after the header) through rkyv validation.
pub fn decode_payload<T>(payload: &[u8]) -> Result<T, FrameError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    // rkyv needs aligned input; a frame read into a plain buffer is copied once.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|_| FrameError::Malformed)
}

/// Decodes one whole frame held in memory (header included).
pub fn decode<T>(frame: &[u8], max: u32) -> Result<T, FrameError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    let header: [u8; HEADER_LEN] =
        frame.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(FrameError::Truncated)?;
    let len = parse_header(header, max)?;
    let payload = &frame[HEADER_LEN..];
    if payload.len() < len {
        return Err(FrameError::Truncated);
    }
    if payload.len() > len {
        return Err(FrameError::Malformed);
    }
    decode_payload(payload)
}

/// Reads one frame from a QUIC stream: header first, then exactly the announced payload.
pub async fn read_frame(recv: &mut quinn::RecvStream, max: u32) -> Result<AlignedVec, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(read_error)?;
    let len = parse_header(header, max)?;
    let mut payload = AlignedVec::<16>::with_capacity(len);
    payload.resize(len, 0);
    recv.read_exact(&mut payload).await.map_err(read_error)?;
    Ok(payload)
}

fn read_error(e: quinn::ReadExactError) -> FrameError {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Stream { reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::proto::{Echo, Request, Response};
    use rand::{Rng, RngCore, SeedableRng};

    const MAX: u32 = 1024 * 1024;

    #[test]
    fn round_trip() {
        let req = Request::Echo(Echo { payload: b"hello".to_vec() });
        let frame = encode(&req).expect("encode");
        assert_eq!(frame[4], FRAME_VERSION);
        assert_eq!(decode::<Request>(&frame, MAX).expect("decode"), req);
    }

    #[test]
    fn oversize_length_is_refused_from_the_header_alone() {
        let header = [0xff, 0xff, 0xff, 0xff, FRAME_VERSION];
        assert_eq!(parse_header(header, MAX), Err(FrameError::TooLarge { len: u32::MAX, max: MAX }));
        let mut frame = header.to_vec();
        frame.extend_from_slice(&[0; 16]);
        assert!(matches!(decode::<Request>(&frame, MAX), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn wrong_version_and_empty_frames_are_refused() {
        let mut frame = encode(&Request::Echo(Echo { payload: vec![1] })).expect("encode");
        frame[4] = 9;
        assert_eq!(decode::<Request>(&frame, MAX), Err(FrameError::UnsupportedVersion { got: 9 }));
        assert_eq!(parse_header([0, 0, 0, 0, 1], MAX), Err(FrameError::Empty));
    }

    #[test]
    fn truncated_and_trailing_bytes_are_refused() {
        let frame = encode(&Request::Echo(Echo { payload: vec![7; 100] })).expect("encode");
        assert_eq!(decode::<Request>(&frame[..frame.len() - 1], MAX), Err(FrameError::Truncated));
        assert_eq!(decode::<Request>(&frame[..3], MAX), Err(FrameError::Truncated));
        let mut long = frame.clone();
        long.push(0);
        assert_eq!(decode::<Request>(&long, MAX), Err(FrameError::Malformed));
    }

    #[test]
    fn random_bytes_never_panic_and_never_decode_as_garbage() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            if rng.random_bool(0.5) && len >= HEADER_LEN {
                // A plausible header makes the payload reach the validator.
                let body = (len - 4) as u32;
                bytes[..4].copy_from_slice(&body.to_be_bytes());
                bytes[4] = FRAME_VERSION;
            }
            let _ = decode::<Request>(&bytes, MAX);
            let _ = decode::<Response>(&bytes, MAX);
        }
    }

    #[test]
    fn corrupted_payloads_are_rejected_or_decode_to_a_valid_value() {
        let frame = encode(&Request::Echo(Echo { payload: vec![3; 40] })).expect("encode");
        for i in HEADER_LEN..frame.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut f = frame.clone();
                f[i] ^= flip;
                // Either an error or a structurally valid request; never a panic or UB.
                if let Ok(Request::Echo(e)) = decode::<Request>(&f, MAX) {
                    assert!(e.payload.len() <= 40 + 256);
                }
            }
        }
    }
}
