//! `[server] max_head_bytes` on HTTP/1 (docs/reference.md#server): a request head larger
//! than the limit gets 431 and the connection is closed, before the rest of it is buffered.
//!
//! Why a stream wrapper. pingora 0.9's HTTP/1 session reads a head into a buffer that grows
//! up to its own 1 MiB bound, and no `ServerConf` or `HttpServerOptions` field lowers it:
//! 200 clients each sending a 1 MB unfinished head held 240 MB. [`HeadLimited`] sits between
//! pingora and the connection: while the current request's head is incomplete (the flag
//! [`super::head_deadline::HeadReceived`] clears), it hands pingora at most the bytes left
//! under the limit; when none are left, it writes the 431 itself and reports end of
//! stream, so pingora closes the connection. Body bytes and later reads pass untouched.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::{CloseReason, ConnectionsClosed, Listener};
use crate::policy::denial::{render, Denial};

/// The most bytes handed to pingora in one read while a head is incomplete.
const SCRATCH: usize = 16 * 1024;

/// One connection's head accounting, shared with the loop that serves its requests.
#[derive(Debug)]
pub(crate) struct HeadState {
    /// The current request's head is complete (set from `on_connection_reuse`).
    pub(crate) received: AtomicBool,
    /// Bytes read since the current request's head began.
    read: AtomicU64,
    max: u64,
}

impl HeadState {
    pub(crate) fn new(max: u64) -> Arc<HeadState> {
        Arc::new(HeadState {
            received: AtomicBool::new(false),
            read: AtomicU64::new(0),
            max,
        })
    }

    /// A new request head begins: nothing received, nothing counted.
    pub(crate) fn start_head(&self) {
        self.read.store(0, Ordering::Relaxed);
        self.received.store(false, Ordering::Release);
    }
}

/// The connection, read through the head limit.
#[derive(Debug)]
pub(crate) struct HeadLimited {
    inner: Stream,
    state: Arc<HeadState>,
    scratch: Vec<u8>,
    /// The 431 being written, and how much of it is out.
    refusal: Option<(Vec<u8>, usize)>,
    closed: ConnectionsClosed,
}

impl HeadLimited {
    pub(crate) fn wrap(inner: Stream, state: Arc<HeadState>, closed: ConnectionsClosed) -> Stream {
        Box::new(HeadLimited {
            inner,
            state,
            scratch: Vec::new(),
            refusal: None,
            closed,
        })
    }

    /// Writes the 431 (all of it, then a flush), then reports end of stream.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, sent)) = self.refusal.as_mut() {
            while *sent < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]))?;
                if n == 0 {
                    break;
                }
                *sent += n;
            }
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// The 431 as bytes on the wire: the gateway's error shape, and `Connection: close`.
fn refusal(limit: u64) -> Vec<u8> {
    let denial = Denial::HeadTooLarge { limit };
    let resp = render(&denial, Default::default());
    let id = super::request_id::for_request(std::iter::empty());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n",
        resp.status,
        crate::policy::denial::reason_phrase(resp.status),
        resp.body.len()
    )
    .into_bytes();
    out.extend_from_slice(resp.body.as_bytes());
    out
}

impl AsyncRead for HeadLimited {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return this.poll_refuse(cx);
        }
        if this.state.received.load(Ordering::Acquire) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let used = this.state.read.load(Ordering::Relaxed);
        let room = this.state.max.saturating_sub(used);
        if room == 0 {
            tracing::debug!(limit = this.state.max, "request head over max_head_bytes: 431, closing");
            this.closed.count(Listener::Proxy, CloseReason::HeadTooLarge);
            this.refusal = Some((refusal(this.state.max), 0));
            return this.poll_refuse(cx);
        }
        let want = usize::try_from(room)
            .unwrap_or(SCRATCH)
            .min(SCRATCH)
            .min(buf.remaining());
        this.scratch.resize(want, 0);
        let mut limited = ReadBuf::new(&mut this.scratch);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let filled = limited.filled();
        this.state.read.fetch_add(filled.len() as u64, Ordering::Relaxed);
        buf.put_slice(filled);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadLimited {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadLimited {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadLimited {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadLimited {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadLimited {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadLimited {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadLimited {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadLimited {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
