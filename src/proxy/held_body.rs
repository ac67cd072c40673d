//! Step 7a's held bodies (docs/reference.md#openapi): on an operation with a JSON request
//! body schema the whole body is read before anything reaches the upstream (pingora would
//! send the request head upstream before reading a body), checked, and then forwarded byte
//! for byte.
//!
//! The bytes reach the upstream through pingora's retry buffer: pingora keeps what a filter
//! read of the body and sends it before reading more, but keeps at most 64 KiB. So a held
//! body is at most `min(max_body_bytes, held_body_max)`, and `held_body_max` at most 64 KiB
//! (`check` refuses more). Over it, `enforce` answers 413; `report` forwards the body
//! unchecked: the part already read goes first (from the retry buffer, or, when pingora had
//! to drop it, prepended to the next piece the body stream brings), the rest streams.
//! Every other body streams as before.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::policy::denial::Denial;

/// The largest body pingora 0.9 forwards after a filter read it (its retry buffer).
pub(crate) const HOLD_LIMIT: u64 = 64 * 1024;

/// What arrived of a body read to be held.
pub(crate) enum Held {
    /// The whole body, at most the limit.
    Whole(Bytes),
    /// More than the limit arrived: what was read so far (the body goes on in the session,
    /// unless it ended in that read).
    Over(Bytes),
}

/// Reads the whole request body, at most `limit` bytes, keeping it in pingora's retry buffer
/// for the upstream; by `deadline` (`[server] body_timeout` after the head), else 408.
pub(crate) async fn read_whole(session: &mut Session, limit: u64, deadline: Instant) -> Result<Held, Denial> {
    tokio::time::timeout_at(deadline.into(), read_all(session, limit))
        .await
        .unwrap_or(Err(Denial::RequestTimeout))
}

async fn read_all(session: &mut Session, limit: u64) -> Result<Held, Denial> {
    let limit = limit.min(HOLD_LIMIT);
    session.enable_retry_buffering();
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > limit {
                    return Ok(Held::Over(body.freeze()));
                }
            }
            Ok(None) => return Ok(Held::Whole(body.freeze())),
            Err(e) if matches!(e.etype(), pingora::ErrorType::ReadTimedout) => return Err(Denial::RequestTimeout),
            Err(_) => return Err(Denial::BadRequest),
        }
    }
}
