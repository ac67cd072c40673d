//! The pingora plumbing: gather request facts, run [`crate::policy::pipeline::decide`],
//! write denials through the one renderer, and shape what the upstream receives.

pub(crate) mod clusters;
pub(crate) mod h2_deadline;
pub(crate) mod head_deadline;
pub(crate) mod head_limit;
pub(crate) mod held_body;
pub(crate) mod hold;
pub(crate) mod least_conn;
pub(crate) mod request_id;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use self::clusters::{Attempt, Clusters};
use self::held_body::{Held, HOLD_LIMIT};
use crate::gateway::{Gateway, InFlight, Pass};
use crate::metrics::{CloseReason, ConnectionsClosed, Listener};
use crate::openapi::{Location, Locations};
use crate::policy::client_ip::ClientIp;
use crate::policy::denial::{render, Denial};
use crate::policy::framing::{self, DeclaredLength};
use crate::policy::ownership::org_from_response;
use crate::policy::pipeline::{style_of, Identity, RequestFacts};
use crate::policy::rate_limit::Headroom;
use crate::policy::response_headers;
use crate::policy::spec_routes::ValidateMode;
use crate::policy::upstream_headers::{self, UnderscoreHeaders};

/// Largest create response buffered to learn an org from.
const LEARN_BUFFER_LIMIT: usize = 1 << 20;

/// Per-request state, filled by the phases in order.
pub(crate) struct RequestCtx {
    started: Instant,
    request_id: String,
    route: Option<usize>,
    denial: Option<Denial>,
    identity: Identity,
    client_ip: ClientIp,
    peer: Option<IpAddr>,
    /// Whether the TCP peer is in `trusted_proxies` (its client-IP headers may pass, docs/reference.md#upstream-request).
    peer_trusted: bool,
    headroom: Option<Headroom>,
    body_bytes: u64,
    upstream_started: Option<Instant>,
    upstream_status: Option<u16>,
    learn: Option<LearnBuffer>,
    /// Backends tried so far (retry once on connect failure, docs/reference.md#upstream-clusters).
    attempt: Attempt,
    /// The connection's TLS client certificate is no longer trusted: close without an answer.
    tls_refused: bool,
    /// Step 7a failures forwarded under `validate = "report"` (counted in `logging`).
    validation_failed: Locations,
    /// The upstream request carries `Upgrade` (a `websocket = true` route): only then may the
    /// upstream answer 101 (docs/reference.md#routes).
    upgrade_forwarded: bool,
    /// The request's `Content-Length`, reconciled (docs/reference.md#reading-requests): the
    /// one value the upstream receives.
    declared: DeclaredLength,
    /// Bytes of a held body (step 7a), forwarded as they are with that Content-Length.
    held_bytes: Option<usize>,
    /// What was read of a body over the held limit that pingora's retry buffer dropped
    /// (`report`): it goes upstream in front of the next piece of the body.
    unsent_prefix: Option<Bytes>,
    /// The HTTP/1 connection's hold: a create response waits on it for its learned org.
    hold: Option<Arc<hold::ResponseHold>>,
    _in_flight: Option<InFlight>,
}

struct LearnBuffer {
    pointer: String,
    partner: Arc<str>,
    body: Vec<u8>,
    active: bool,
}

/// The authgate `ProxyHttp` implementation.
pub(crate) struct AuthProxy {
    gw: Arc<Gateway>,
    clusters: Clusters,
    closed: ConnectionsClosed,
}

impl AuthProxy {
    /// A proxy for the gateway, forwarding to `clusters` (see [`Clusters::build`]).
    pub(crate) fn new(gw: Arc<Gateway>, clusters: Clusters) -> Self {
        let closed = gw.metrics().connections_closed();
        AuthProxy { gw, clusters, closed }
    }

    async fn write_denial(&self, session: &mut Session, ctx: &mut RequestCtx, denial: Denial) -> pingora::Result<()> {
        let route = ctx.route.and_then(|i| self.gw.settings().fixed.routes.get(i));
        let resp = render(&denial, style_of(route));
        ctx.denial = Some(denial);
        let mut h = ResponseHeader::build(resp.status, Some(4 + resp.headers.len()))?;
        // standard names as constants (pingora writes them title-cased, as the text was) and
        // fixed values as static: a name given as text is parsed on every call. X-Request-Id
        // stays text: as a constant it would go out lower-cased
        h.insert_header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))?;
        h.insert_header(header::CONTENT_LENGTH, resp.body.len())?;
        h.insert_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
        h.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        for (k, v) in resp.headers {
            h.insert_header(k, v)?;
        }
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(h), head).await?;
        if !head {
            session.write_response_body(Some(Bytes::from(resp.body)), true).await?;
        }
        Ok(())
    }
}

impl AuthProxy {
    /// Records what the pipeline decided for an admitted request, then runs step 7a's body
    /// check where the operation holds bodies; `Ok(true)` when that check refused it.
    async fn admitted(&self, session: &mut Session, ctx: &mut RequestCtx, pass: Pass) -> pingora::Result<bool> {
        ctx.route = Some(pass.route);
        ctx.client_ip = pass.client_ip;
        ctx.headroom = pass.headroom;
        if let (Some(pointer), Identity::Partner { id, .. }) = (pass.learn, &pass.identity) {
            if session.req_header().method == http::Method::POST {
                ctx.learn = Some(LearnBuffer {
                    pointer,
                    partner: id.clone(),
                    body: Vec::new(),
                    active: false,
                });
            }
        }
        ctx.identity = pass.identity;
        if let Some(r) = pass.reported {
            self.report(ctx, &r);
        }
        let Some(held) = pass.hold else {
            return Ok(false);
        };
        if expects_continue(session) {
            // the upstream that would answer it is contacted only after the body: the head
            // has passed every step before 7a, so ask for the body here
            let mut interim = ResponseHeader::build(100, Some(0))?;
            interim.set_reason_phrase(Some("Continue"))?;
            session.write_response_header(Box::new(interim), false).await?;
        }
        match self.check_held_body(session, ctx, held).await {
            None => Ok(false),
            Some(denial) => {
                self.write_denial(session, ctx, denial).await?;
                Ok(true)
            }
        }
    }

    /// Step 7a on a held body: read it whole (nothing has reached the upstream yet), check
    /// it; the refusal under `validate = "enforce"`, else `None` (forwarded byte for byte).
    async fn check_held_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        held: crate::openapi::HeldBody,
    ) -> Option<Denial> {
        let settings = self.gw.settings();
        let route = ctx.route?;
        let (op, mode) = settings.fixed.routes.operation(route)?;
        let limit = settings
            .fixed
            .max_body_bytes
            .min(settings.held_body_max(route).unwrap_or(HOLD_LIMIT));
        if ctx.declared.bytes().is_some_and(|n| n > limit) {
            return self.over_held_limit(session, ctx, mode, limit, None);
        }
        let deadline = ctx.started + settings.deadlines.body_timeout;
        let body = match held_body::read_whole(session, limit, deadline).await {
            Ok(Held::Whole(b)) => b,
            Ok(Held::Over(read)) => return self.over_held_limit(session, ctx, mode, limit, Some(read)),
            Err(d) => {
                if d == Denial::RequestTimeout {
                    self.closed.count(Listener::Proxy, CloseReason::BodyTimeout);
                }
                session.set_keepalive(None);
                return Some(d);
            }
        };
        ctx.held_bytes = Some(body.len());
        let rejection = op.check_body(held, &body).err()?;
        match mode {
            ValidateMode::Enforce => Some(Denial::InvalidRequest(Box::new(rejection))),
            ValidateMode::Report | ValidateMode::Off => {
                self.report(ctx, &rejection);
                None
            }
        }
    }

    /// A body over the held limit (`min(max_body_bytes, held_body_max)`): 413 under
    /// `enforce`; under `report` it is forwarded unchecked and counted as `body_not_checked`
    /// (`read`: what was read of it, to go first when pingora's retry buffer could not keep it).
    fn over_held_limit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mode: ValidateMode,
        limit: u64,
        read: Option<Bytes>,
    ) -> Option<Denial> {
        if mode == ValidateMode::Enforce {
            session.set_keepalive(None);
            return Some(Denial::BodyTooLarge { limit });
        }
        ctx.validation_failed.merge(Locations::only(Location::BodyNotChecked));
        tracing::warn!(request_id = %ctx.request_id, limit, "body over held_body_max forwarded unchecked (validate = \"report\")");
        let Some(read) = read.filter(|_| session.get_retry_buffer().is_none()) else {
            return None; // nothing read, or pingora sends what was read first itself
        };
        if session.is_body_done() {
            // pingora neither sends a dropped retry buffer nor reads on after the body's end:
            // there is no piece left to carry what was read
            tracing::warn!(request_id = %ctx.request_id, "body over held_body_max ended in the read that passed it: refused");
            session.set_keepalive(None);
            return Some(Denial::BodyTooLarge { limit });
        }
        ctx.unsent_prefix = Some(read);
        None
    }

    /// A head whose framing is in doubt (no `Host`, conflicting `Content-Length`s): 400
    /// before any step, and the connection is closed (where the body ends is unknown).
    async fn refuse_framing(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        denial: Denial,
    ) -> pingora::Result<bool> {
        session.set_keepalive(None);
        self.write_denial(session, ctx, denial).await?;
        Ok(true)
    }

    /// `validate = "report"`: a request its operation would refuse is logged and counted,
    /// and forwarded.
    fn report(&self, ctx: &mut RequestCtx, r: &crate::openapi::Rejection) {
        ctx.validation_failed.merge(r.locations);
        tracing::warn!(request_id = %ctx.request_id, status = r.status, "request would be refused (validate = \"report\"): {}", r.message);
    }
}

/// docs/reference.md#upstream-request: strip what the client must not decide, then set the gateway's own headers.
/// Runs on the upstream request, after pingora removed the hop-by-hop headers (and, outside
/// `websocket = true` routes, `Upgrade`: the peer's `H1UpgradePolicy::Deny`, see clusters.rs).
fn rewrite_for_upstream(
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    underscores: UnderscoreHeaders,
    websocket: bool,
) -> pingora::Result<()> {
    use upstream_headers::*;
    for name in to_strip(&req.headers, ctx.peer_trusted, underscores) {
        req.remove_header(&name);
    }
    if !websocket {
        // already gone by pingora's policy; a second line of defence against a tunnel
        req.remove_header(&http::header::UPGRADE);
    }
    // one Content-Length, never a list (docs/reference.md#reading-requests); a held body
    // goes as the bytes held, never re-chunked, and its `Expect` was answered here
    if let Some(n) = ctx.held_bytes {
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.remove_header(&http::header::EXPECT);
        req.insert_header(http::header::CONTENT_LENGTH, n)?;
    } else if let DeclaredLength::Bytes(n) = ctx.declared {
        req.insert_header(http::header::CONTENT_LENGTH, n)?;
    }
    let xff = forwarded_for(
        req.headers.get_all(X_FORWARDED_FOR).iter().map(|v| v.as_bytes()),
        ctx.peer,
    );
    req.insert_header(X_FORWARDED_FOR, xff)?;
    if let Some(ip) = real_ip(ctx.client_ip) {
        req.insert_header(X_REAL_IP, ip)?;
    }
    for (name, value) in identity_headers(&ctx.identity) {
        if let Some(v) = value {
            req.insert_header(name, v)?;
        }
    }
    req.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    Ok(())
}

/// An HTTP/1.1 request that waits for `100 Continue` before sending its body (HTTP/2 has no
/// interim answer in pingora: its clients send the body after their own short wait).
fn expects_continue(session: &Session) -> bool {
    let req = session.req_header();
    !session.is_http2()
        && req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// HTTP/2 carries a body in DATA frames, with or without `content-length`; the head checks
/// read presence from the headers (docs/reference.md#reading-requests: what arrives
/// decides). A stream whose HEADERS did not end it, and that declares no length, is marked
/// as HTTP/1.1 marks a body of unknown length (`Transfer-Encoding: chunked`), so it is held
/// and checked like one. Upstream, a held body goes with its `Content-Length`; a streamed
/// one is chunked, as pingora would frame it anyway.
fn mark_h2_body(session: &mut Session) -> pingora::Result<()> {
    if !session.is_http2() || session.is_body_empty() {
        return Ok(());
    }
    let req = session.req_header_mut();
    if !req.headers.contains_key(http::header::CONTENT_LENGTH) {
        req.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical())
}

#[async_trait]
impl ProxyHttp for AuthProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            route: None,
            denial: None,
            identity: Identity::Anonymous,
            client_ip: ClientIp::Unknown,
            peer: None,
            peer_trusted: false,
            headroom: None,
            body_bytes: 0,
            upstream_started: None,
            upstream_status: None,
            learn: None,
            attempt: Attempt::default(),
            tls_refused: false,
            validation_failed: Default::default(),
            upgrade_forwarded: false,
            declared: DeclaredLength::Absent,
            held_bytes: None,
            unsent_prefix: None,
            hold: None,
            _in_flight: Some(self.gw.enter()),
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
        // A TLS session resumed from before a reload that replaced client_ca_file: its
        // certificate was never checked against the CA in force (see tls.rs).
        if self.gw.tls().is_some() && crate::tls::client_cert_no_longer_trusted(session.digest()) {
            ctx.tls_refused = true;
            session.set_keepalive(None);
            return Err(Error::explain(
                ErrorType::InvalidCert,
                "client certificate not accepted by the client CA in force",
            ));
        }
        Ok(())
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        // Called once the request head is read, on every HTTP/1 request (head_deadline.rs).
        ctx.hold = head_deadline::HeadReceived::mark(prev);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        mark_h2_body(session)?;
        // a streamed body may pause at most body_timeout between two reads (HTTP/1; pingora's
        // HTTP/2 session has no read timeout: its streams are bounded by send_timeout and
        // the connection's idle deadline), and the client must take response bytes within
        // send_timeout (a full socket buffer, a zero h2 window)
        let deadlines = self.gw.settings().deadlines;
        session.set_read_timeout(Some(deadlines.body_timeout));
        session.set_write_timeout(Some(deadlines.send_timeout));
        let req = session.req_header();
        ctx.request_id = request_id::for_request(
            req.headers
                .get_all(upstream_headers::X_REQUEST_ID)
                .iter()
                .map(|v| v.as_bytes()),
        );
        ctx.peer = peer_ip(session);
        ctx.peer_trusted = ctx
            .peer
            .is_some_and(|p| self.gw.settings().fixed.client_ip.trusted_proxies.contains(p));
        let http11 = !session.is_http2() && req.version == http::Version::HTTP_11;
        let declared =
            match framing::check_host(http11, &req.headers).and_then(|()| framing::declared_length(&req.headers)) {
                Ok(d) => d,
                // the body's boundaries (or the virtual host) are in doubt: answer and close
                Err(denial) => return self.refuse_framing(session, ctx, denial).await,
            };
        ctx.declared = declared;
        let content_length = declared.bytes();
        let facts = RequestFacts {
            method: req.method.as_str(),
            target: req.raw_path(),
            headers: &req.headers,
            peer: ctx.peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            content_length,
            now: now_secs(),
        };
        let verdict = self.gw.admit(&facts).await;
        match verdict {
            Ok(pass) => self.admitted(session, ctx, pass).await,
            Err(block) => {
                let denial = block.denial;
                if denial == Denial::InvalidToken(crate::policy::jwt::TokenError::UnknownKey) {
                    self.gw.jwks_kick();
                }
                ctx.route = block.route;
                ctx.identity = block.identity;
                ctx.client_ip = block.client_ip;
                let streamed = session
                    .req_header()
                    .headers
                    .contains_key(http::header::TRANSFER_ENCODING);
                if matches!(denial, Denial::BodyTooLarge { .. }) || streamed {
                    // Do not drain an unread (possibly huge or endless) body to keep the connection.
                    session.set_keepalive(None);
                }
                self.write_denial(session, ctx, denial).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(prefix) = ctx.unsent_prefix.take() {
            let mut whole = bytes::BytesMut::from(&prefix[..]);
            whole.extend_from_slice(body.as_deref().unwrap_or_default());
            *body = Some(whole.freeze());
        }
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            let limit = self.gw.settings().fixed.max_body_bytes;
            if ctx.body_bytes > limit {
                ctx.denial = Some(Denial::BodyTooLarge { limit });
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_body_bytes",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let websocket = ctx
            .route
            .is_some_and(|r| self.gw.settings().route_upstream(r).websocket);
        rewrite_for_upstream(upstream_request, ctx, self.gw.settings().underscore_headers, websocket)?;
        ctx.upgrade_forwarded = websocket && upstream_request.headers.contains_key(http::header::UPGRADE);
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Box<HttpPeer>> {
        ctx.upstream_started = Some(Instant::now());
        let client = ctx.client_ip.addr().or(ctx.peer);
        match self.clusters.peer(ctx.route, client, &mut ctx.attempt) {
            Some(peer) => Ok(peer),
            None => {
                // Every backend is out (health checks), or the retry found no other one.
                ctx.denial = Some(Denial::UpstreamUnavailable);
                let mut e = Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("upstream {}: no eligible backend", self.clusters.name(&ctx.attempt)),
                );
                e.set_retry(false);
                Err(e.into_up())
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: try another backend of the cluster, once.
        e.set_retry(self.clusters.may_retry(&ctx.attempt));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        // Bytes of the request may have reached the upstream: never send it twice.
        let mut e = e.more_context(format!("Peer: {peer}"));
        e.set_retry(false);
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let status = resp.status.as_u16();
        if response_headers::switch_refused(status, ctx.upgrade_forwarded) {
            // Never a tunnel the gateway did not ask for: 502, and the error keeps this
            // upstream connection out of the pool (pingora closes it).
            ctx.denial = Some(Denial::UpstreamUnavailable);
            let mut e = Error::explain(
                ErrorType::InvalidHTTPHeader,
                "upstream answered 101 Switching Protocols to a request without an upgrade",
            );
            e.set_retry(false);
            return Err(e.into_up());
        }
        for name in response_headers::hop_by_hop(&resp.headers, status == 101) {
            resp.remove_header(&name);
        }
        if status == 101 {
            // an accepted switch (checked above): the handshake's own Connection, nothing more
            resp.insert_header(http::header::CONNECTION, "Upgrade")?;
        }
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        let no_body = matches!(resp.status.as_u16(), 204 | 304)
            || session.req_header().method == http::Method::HEAD
            || resp
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
        if no_body {
            ctx.attempt.response_done();
        }
        if let Some(t) = ctx.upstream_started {
            self.gw.upstream_answered(ctx.route, t.elapsed().as_secs_f64());
        }
        if let Some(l) = ctx.learn.as_mut() {
            l.active = resp.status.is_success();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        use upstream_headers::{X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_REQUEST_ID};
        resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
        if let Some(h) = ctx.headroom {
            resp.insert_header(X_RATELIMIT_LIMIT, http::HeaderValue::from(h.per_minute))?;
            resp.insert_header(X_RATELIMIT_REMAINING, http::HeaderValue::from(h.remaining))?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Duration>> {
        if end_of_stream {
            ctx.attempt.response_done();
        }
        let Some(learn) = ctx.learn.as_mut().filter(|l| l.active) else {
            return Ok(None);
        };
        if let Some(chunk) = body.take() {
            learn.body.extend_from_slice(&chunk);
        }
        if learn.body.len() > LEARN_BUFFER_LIMIT {
            tracing::warn!(request_id = %ctx.request_id, "create response too large to learn an org from");
            learn.active = false;
            *body = Some(Bytes::from(std::mem::take(&mut learn.body)));
            return Ok(None);
        }
        let mut pause = None;
        if end_of_stream {
            if let Some(org) = org_from_response(&learn.body, &learn.pointer) {
                // the last chunk waits for the org's writes; the worker does not (hold.rs)
                let written = self.gw.learn_org(&learn.partner, &org, &ctx.request_id);
                pause = Some(match &ctx.hold {
                    Some(hold) => hold.hold(written),
                    None => {
                        tokio::spawn(written);
                        self.gw.learn_pause()
                    }
                });
            }
            learn.active = false;
            *body = Some(Bytes::from(std::mem::take(&mut learn.body)));
        }
        Ok(pause)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        if ctx.tls_refused {
            return true; // logged and counted by the TLS callback
        }
        // A client hanging up is not a gateway error (it is still in the access log).
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            )
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        if ctx.tls_refused {
            // As if the handshake had failed: no answer, the connection is closed.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let denial = match (ctx.denial.take(), e.etype()) {
            (Some(d), _) => Some(d),
            (None, ErrorType::HTTPStatus(413)) => Some(Denial::BodyTooLarge {
                limit: self.gw.settings().fixed.max_body_bytes,
            }),
            (None, ErrorType::ReadTimedout | ErrorType::WriteTimedout) if e.esource() == &ErrorSource::Upstream => {
                Some(Denial::UpstreamTimeout)
            }
            (None, ErrorType::ReadTimedout) if e.esource() == &ErrorSource::Downstream => {
                self.closed.count(Listener::Proxy, CloseReason::BodyTimeout);
                Some(Denial::RequestTimeout)
            }
            (None, _) => match e.esource() {
                ErrorSource::Upstream => Some(Denial::UpstreamUnavailable),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => None,
                    _ => Some(Denial::BadRequest),
                },
                ErrorSource::Internal | ErrorSource::Unset => {
                    tracing::warn!(request_id = %ctx.request_id, "internal error: {e}");
                    Some(Denial::Internal)
                }
            },
        };
        let mut code = 0;
        if let Some(d) = denial {
            code = d.status();
            if session.response_written().is_none_or(|h| h.status.is_informational()) {
                session.set_keepalive(None);
                if let Err(err) = self.write_denial(session, ctx, d).await {
                    tracing::debug!(request_id = %ctx.request_id, "could not write the error response: {err}");
                }
            } else {
                ctx.denial = Some(d);
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.tls_refused {
            return; // never reached the pipeline
        }
        if e.is_some_and(|e| e.esource() == &ErrorSource::Downstream && e.etype() == &ErrorType::WriteTimedout) {
            self.closed.count(Listener::Proxy, CloseReason::SendTimeout);
        }
        let elapsed = ctx.started.elapsed();
        let method = session.req_header().method.as_str();
        let status = session.response_written().map(|h| h.status.as_u16());
        let gw = &self.gw;
        let seconds = elapsed.as_secs_f64();
        gw.record_request(ctx.route, method, status, seconds, ctx.denial.as_ref(), &ctx.identity);
        let mut failed = ctx.validation_failed;
        if let Some(Denial::InvalidRequest(r)) = &ctx.denial {
            failed.merge(r.locations);
        }
        gw.record_validation(ctx.route, failed);
        if gw.settings().access_log {
            let route = ctx
                .route
                .and_then(|i| gw.settings().fixed.routes.get(i))
                .map_or("none", |r| &*r.name);
            let (partner, org) = match &ctx.identity {
                Identity::Partner { id, .. } => (Some(&**id), None),
                Identity::Org { id, .. } => (None, Some(&**id)),
                Identity::Anonymous => (None, None),
            };
            crate::access_log::AccessRecord {
                request_id: ctx.request_id.as_str(),
                method,
                path: crate::policy::path::path_of(session.req_header().raw_path()),
                route,
                status: status.unwrap_or(0),
                reason: ctx.denial.as_ref().map(|d| d.reason().as_str()),
                partner,
                org,
                client_ip: ctx.client_ip.addr(),
                upstream_status: ctx.upstream_status,
                duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                error: e.map(|e| e.etype().as_str()),
            }
            .write();
        }
    }
}
