//! An in-memory stand-in for the OpenCX Partner API, served with hyper 1.
//!
//! The gateway needs something to proxy to in demos, local runs and integration tests
//! without reaching the real `api.open.cx`. This module is that "demo upstream": it
//! keeps orgs per partner in memory and answers the Partner API routes (create / list /
//! look up orgs, mint org API keys, create login links) plus a few org-level routes
//! (`GET /org`, `GET /v1/org/info`, generic org-scoped resources).
//!
//! It does no authentication of its own. The gateway in front of it has already
//! authenticated the caller and says who it is with `X-Partner-Id` (partner routes) and
//! `X-Org-Id` (org-level routes); the upstream trusts those headers and only checks that
//! they are present. Org-scoped partner routes (`/partner/v1/orgs/{orgId}/...`) do not
//! require the org to exist here, because the gateway has already checked ownership and
//! orgs may come from its policy file rather than from this store.
//!
//! [`DemoApi::handle`] is pure request handling (no sockets) so it can be unit-tested;
//! [`serve`] puts it behind an HTTP/1.1 listener.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Mints an org API key (a JWT) for (org_id, api_key_id); the demo passes one that signs with the demo key.
pub(crate) type OrgKeyMinter = std::sync::Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Header through which the gateway names the authenticated partner.
const PARTNER_HEADER: &str = "x-partner-id";
/// Header through which the gateway names the authenticated org.
const ORG_HEADER: &str = "x-org-id";
/// Default page size for `GET /partner/v1/orgs`.
const DEFAULT_LIMIT: u64 = 50;
/// Largest page size accepted by `GET /partner/v1/orgs`.
const MAX_LIMIT: u64 = 100;
/// How long a login link stays valid.
const LOGIN_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// Login-link URL prefix; the token is appended.
const LOGIN_URL_PREFIX: &str = "https://platform.open.cx/partner-login?token=";

/// One org created through the demo.
#[derive(Debug, Clone)]
struct Org {
    id: String,
    partner_id: String,
    name: String,
    widget_token: String,
    external_id: Option<String>,
    /// Kept so the store mirrors what the real API persists; no demo route reads it yet.
    #[allow(dead_code)]
    website: Option<String>,
    /// Kept so the store mirrors what the real API persists; no demo route reads it yet.
    #[allow(dead_code)]
    language: String,
    /// Kept so the store mirrors what the real API persists; no demo route reads it yet.
    #[allow(dead_code)]
    ai_instructions: Option<String>,
    created_at: String,
}

impl Org {
    /// The org as listed / looked up (`created_at` included).
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "widget_token": self.widget_token,
            "external_id": self.external_id,
            "created_at": self.created_at,
        })
    }
}

/// Everything the demo remembers.
#[derive(Debug, Default)]
struct State {
    /// All orgs of all partners, in creation order.
    orgs: Vec<Org>,
}

/// In-memory Partner API state (orgs per partner).
pub(crate) struct DemoApi {
    state: Mutex<State>,
    minter: Option<OrgKeyMinter>,
    /// Timestamp reported for orgs this demo did not create (stable across calls).
    started_at: String,
}

impl std::fmt::Debug for DemoApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let orgs = self.lock().orgs.len();
        f.debug_struct("DemoApi")
            .field("orgs", &orgs)
            .field("minter", &self.minter.is_some())
            .field("started_at", &self.started_at)
            .finish()
    }
}

/// A response from [`DemoApi::handle`]: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DemoResponse {
    /// HTTP status code.
    pub(crate) status: u16,
    /// JSON body (always sent as `application/json`).
    pub(crate) body: serde_json::Value,
}

impl DemoResponse {
    fn new(status: u16, body: Value) -> Self {
        Self { status, body }
    }
}

/// The routes the demo knows, with their raw (still percent-encoded) path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    /// `/health`
    Health,
    /// `/partner/v1/orgs`
    Orgs,
    /// `/partner/v1/orgs/by-external-id/{externalId}`
    OrgByExternalId(&'a str),
    /// `/partner/v1/orgs/{orgId}`
    Org(&'a str),
    /// `/partner/v1/orgs/{orgId}/api-keys`
    OrgApiKeys(&'a str),
    /// `/partner/v1/orgs/{orgId}/login-links`
    OrgLoginLinks(&'a str),
    /// Any other `/partner/v1/orgs/{orgId}/...`
    OrgResource(&'a str),
    /// `/org`
    CurrentOrg,
    /// `/v1/org/info`
    OrgInfo,
    /// `/v1/stream/...` and `/v1/orgs/{orgId}/...`
    OrgScoped,
}

impl Route<'_> {
    /// Whether `method` is served on this route. Generic resources take any method.
    fn allows(self, method: &str) -> bool {
        match self {
            Route::Orgs => method == "GET" || method == "POST",
            Route::OrgApiKeys(_) | Route::OrgLoginLinks(_) => method == "POST",
            Route::Health | Route::OrgByExternalId(_) | Route::Org(_) | Route::CurrentOrg | Route::OrgInfo => {
                method == "GET"
            }
            Route::OrgResource(_) | Route::OrgScoped => true,
        }
    }
}

/// Maps a path (no query) to a route, or `None` for 404.
fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix('/')?;
    let segs: Vec<&str> = rest.split('/').collect();
    let r = match segs.as_slice() {
        ["health"] => Route::Health,
        ["org"] => Route::CurrentOrg,
        ["v1", "org", "info"] => Route::OrgInfo,
        ["v1", "stream", ..] => Route::OrgScoped,
        ["v1", "orgs", id, ..] if !id.is_empty() => Route::OrgScoped,
        ["partner", "v1", "orgs"] => Route::Orgs,
        ["partner", "v1", "orgs", "by-external-id", ext] if !ext.is_empty() => Route::OrgByExternalId(ext),
        ["partner", "v1", "orgs", "by-external-id", ..] => return None,
        ["partner", "v1", "orgs", id] if !id.is_empty() => Route::Org(id),
        ["partner", "v1", "orgs", id, "api-keys"] if !id.is_empty() => Route::OrgApiKeys(id),
        ["partner", "v1", "orgs", id, "login-links"] if !id.is_empty() => Route::OrgLoginLinks(id),
        ["partner", "v1", "orgs", id, _, ..] if !id.is_empty() => Route::OrgResource(id),
        _ => return None,
    };
    Some(r)
}

/// Splits a request target into (path, query), tolerating absolute-form targets.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let mut t = target;
    for scheme in ["http://", "https://"] {
        if let Some(after) = t.strip_prefix(scheme) {
            t = after.find('/').map_or("/", |i| &after[i..]);
            break;
        }
    }
    // A fragment never reaches a server, but do not let one confuse routing.
    let t = t.split_once('#').map_or(t, |(before, _)| before);
    match t.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (t, None),
    }
}

/// An OpenCX `ErrorDto` response.
fn error(status: u16, message: impl Into<String>) -> DemoResponse {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    DemoResponse::new(
        status,
        json!({ "statusCode": status, "message": message.into(), "error": reason }),
    )
}

/// The generic 404.
fn not_found() -> DemoResponse {
    error(404, "Not found")
}

/// A trimmed, non-empty, UTF-8 header value.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The caller identity from `name`, or the 401 to return.
fn require_header<'a>(headers: &'a HeaderMap, name: &str, display: &str) -> Result<&'a str, DemoResponse> {
    header_str(headers, name).ok_or_else(|| error(401, format!("missing {display}")))
}

/// Percent-decodes one path segment; bad UTF-8 is a 400.
fn decode_segment(seg: &str) -> Result<String, DemoResponse> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| error(400, "Invalid percent-encoding in path"))
}

/// Decodes one `application/x-www-form-urlencoded` query component.
fn decode_query_part(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

/// The last value of query parameter `key`, decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .rev()
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_part(k) == key).then(|| decode_query_part(v))
        })
}

/// `limit` / `offset` of `GET /partner/v1/orgs`, validated.
fn parse_page(query: Option<&str>) -> Result<(usize, usize), DemoResponse> {
    let limit = match query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(error(
                    400,
                    format!("limit must be an integer between 1 and {MAX_LIMIT}"),
                ))
            }
        },
    };
    let offset = match query_param(query, "offset") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| error(400, "offset must be a non-negative integer"))?,
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    Ok((limit, offset))
}

/// Parses a JSON object body into `T`; an empty body counts as `{}` when `allow_empty`.
fn parse_body<T: DeserializeOwned>(body: &[u8], allow_empty: bool) -> Result<T, DemoResponse> {
    let value: Value = if allow_empty && body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| error(400, format!("Invalid JSON body: {e}")))?
    };
    if !value.is_object() {
        return Err(error(400, "Request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| error(400, format!("Invalid request body: {e}")))
}

/// Lowercase hex of `n` random bytes.
fn random_hex<const N: usize>() -> String
where
    rand::distributions::Standard: rand::distributions::Distribution<[u8; N]>,
{
    hex::encode(rand::random::<[u8; N]>())
}

/// A random UUID v4 string.
fn uuid_v4() -> String {
    let mut b = rand::random::<[u8; 16]>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 with milliseconds, UTC.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Display name for an org this demo did not create.
fn default_org_name(org_id: &str) -> String {
    let prefix: String = org_id.chars().take(8).collect();
    format!("Org {prefix}")
}

/// Body of `POST /partner/v1/orgs`.
#[derive(Debug, Deserialize)]
struct CreateOrgBody {
    name: Option<String>,
    external_id: Option<String>,
    website: Option<String>,
    language: Option<String>,
    ai_instructions: Option<String>,
}

/// Body of `POST /partner/v1/orgs/{orgId}/api-keys`.
#[derive(Debug, Deserialize)]
struct CreateApiKeyBody {
    /// Label only; the demo does not keep keys.
    #[allow(dead_code)]
    name: Option<String>,
}

/// Body of `POST /partner/v1/orgs/{orgId}/login-links`.
#[derive(Debug, Deserialize)]
struct CreateLoginLinkBody {
    email: Option<String>,
    /// Only validated; the demo does not create users.
    #[allow(dead_code)]
    name: Option<String>,
    /// Only validated; the demo does not create memberships.
    #[allow(dead_code)]
    role_ids: Option<Vec<String>>,
}

impl DemoApi {
    /// Creates an empty store; `minter` mints org API keys (without one, keys are `demo-<hex>`).
    pub(crate) fn new(minter: Option<OrgKeyMinter>) -> std::sync::Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            minter,
            started_at: rfc3339(SystemTime::now()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pure request handling (no sockets), used by unit tests and by `serve`.
    /// `target` is the raw request target (path + optional query, possibly percent-encoded).
    pub(crate) fn handle(&self, method: &str, target: &str, headers: &http::HeaderMap, body: &[u8]) -> DemoResponse {
        let (path, query) = split_target(target);
        let Some(route) = route(path) else {
            return not_found();
        };
        if !route.allows(method) {
            return error(405, "Method Not Allowed");
        }
        let result = match route {
            Route::Health => Ok(DemoResponse::new(200, json!({ "status": "ok" }))),
            Route::Orgs => self.with_partner(headers, |partner| {
                if method == "POST" {
                    self.create_org(partner, body)
                } else {
                    self.list_orgs(partner, query)
                }
            }),
            Route::OrgByExternalId(raw) => self.with_partner(headers, |partner| {
                let ext = decode_segment(raw)?;
                self.org_by_external_id(partner, &ext)
            }),
            Route::Org(raw) => self.with_partner(headers, |partner| {
                let org_id = decode_segment(raw)?;
                self.get_org(partner, &org_id)
            }),
            Route::OrgApiKeys(raw) => self.with_partner(headers, |_| {
                let org_id = decode_segment(raw)?;
                self.create_api_key(&org_id, body)
            }),
            Route::OrgLoginLinks(raw) => self.with_partner(headers, |_| {
                decode_segment(raw)?;
                Self::create_login_link(body)
            }),
            Route::OrgResource(raw) => self.with_partner(headers, |_| {
                let org_id = decode_segment(raw)?;
                Ok(DemoResponse::new(
                    200,
                    json!({ "ok": true, "org_id": org_id, "path": path }),
                ))
            }),
            Route::CurrentOrg => require_header(headers, ORG_HEADER, "X-Org-Id").map(|org_id| {
                let (name, created_at) = self.org_name_and_created(org_id);
                DemoResponse::new(
                    200,
                    json!({ "name": name, "created_at": created_at, "updated_at": created_at }),
                )
            }),
            Route::OrgInfo => require_header(headers, ORG_HEADER, "X-Org-Id").map(|org_id| {
                let (name, created_at) = self.org_name_and_created(org_id);
                DemoResponse::new(
                    200,
                    json!({
                        "success": true,
                        "organization": {
                            "id": org_id,
                            "name": name,
                            "description": null,
                            "website": null,
                            "timezone": "UTC",
                            "plan_type": "pro",
                            "app_count": 0,
                            "mcp": null,
                            "created_at": created_at,
                            "updated_at": created_at,
                        }
                    }),
                )
            }),
            Route::OrgScoped => require_header(headers, ORG_HEADER, "X-Org-Id")
                .map(|org_id| DemoResponse::new(200, json!({ "ok": true, "org_id": org_id, "path": path }))),
        };
        result.unwrap_or_else(|e| e)
    }

    /// Runs `f` with the calling partner, or answers 401 when the gateway named none.
    fn with_partner(
        &self,
        headers: &HeaderMap,
        f: impl FnOnce(&str) -> Result<DemoResponse, DemoResponse>,
    ) -> Result<DemoResponse, DemoResponse> {
        let partner = require_header(headers, PARTNER_HEADER, "X-Partner-Id")?;
        f(partner)
    }

    /// `POST /partner/v1/orgs`.
    fn create_org(&self, partner: &str, body: &[u8]) -> Result<DemoResponse, DemoResponse> {
        let req: CreateOrgBody = parse_body(body, false)?;
        let name = match req.name {
            Some(n) if !n.trim().is_empty() => n,
            _ => return Err(error(400, "name is required and must be a non-empty string")),
        };
        if req.external_id.as_deref().is_some_and(|e| e.is_empty()) {
            return Err(error(400, "external_id must not be empty"));
        }
        let org = Org {
            id: uuid_v4(),
            partner_id: partner.to_owned(),
            name,
            widget_token: random_hex::<32>(),
            external_id: req.external_id,
            website: req.website,
            language: req.language.unwrap_or_else(|| "en".to_owned()),
            ai_instructions: req.ai_instructions,
            created_at: rfc3339(SystemTime::now()),
        };
        let mut state = self.lock();
        if let Some(ext) = org.external_id.as_deref() {
            let taken = state
                .orgs
                .iter()
                .any(|o| o.partner_id == partner && o.external_id.as_deref() == Some(ext));
            if taken {
                return Err(error(409, format!("Org with external_id \"{ext}\" already exists")));
            }
        }
        let out = json!({
            "id": org.id,
            "name": org.name,
            "widget_token": org.widget_token,
            "external_id": org.external_id,
        });
        state.orgs.push(org);
        Ok(DemoResponse::new(201, out))
    }

    /// `GET /partner/v1/orgs`.
    fn list_orgs(&self, partner: &str, query: Option<&str>) -> Result<DemoResponse, DemoResponse> {
        let (limit, offset) = parse_page(query)?;
        let state = self.lock();
        let mine = state.orgs.iter().filter(|o| o.partner_id == partner);
        let total = mine.clone().count();
        let data: Vec<Value> = mine.skip(offset).take(limit).map(Org::to_json).collect();
        Ok(DemoResponse::new(200, json!({ "data": data, "total": total })))
    }

    /// `GET /partner/v1/orgs/by-external-id/{externalId}`.
    fn org_by_external_id(&self, partner: &str, ext: &str) -> Result<DemoResponse, DemoResponse> {
        let state = self.lock();
        state
            .orgs
            .iter()
            .find(|o| o.partner_id == partner && o.external_id.as_deref() == Some(ext))
            .map(|o| DemoResponse::new(200, o.to_json()))
            .ok_or_else(|| error(404, format!("No org with external_id \"{ext}\"")))
    }

    /// `GET /partner/v1/orgs/{orgId}`.
    fn get_org(&self, partner: &str, org_id: &str) -> Result<DemoResponse, DemoResponse> {
        let state = self.lock();
        state
            .orgs
            .iter()
            .find(|o| o.partner_id == partner && o.id == org_id)
            .map(|o| DemoResponse::new(200, o.to_json()))
            .ok_or_else(|| error(404, format!("No org with id \"{org_id}\"")))
    }

    /// `POST /partner/v1/orgs/{orgId}/api-keys` (the org need not be in the store).
    fn create_api_key(&self, org_id: &str, body: &[u8]) -> Result<DemoResponse, DemoResponse> {
        let _req: CreateApiKeyBody = parse_body(body, true)?;
        let api_key_id = uuid_v4();
        let api_key = match &self.minter {
            Some(mint) => mint(org_id, &api_key_id),
            None => format!("demo-{}", random_hex::<16>()),
        };
        Ok(DemoResponse::new(
            201,
            json!({ "api_key_id": api_key_id, "api_key": api_key }),
        ))
    }

    /// `POST /partner/v1/orgs/{orgId}/login-links` (the org need not be in the store).
    fn create_login_link(body: &[u8]) -> Result<DemoResponse, DemoResponse> {
        let req: CreateLoginLinkBody = parse_body(body, false)?;
        match req.email.as_deref() {
            Some(e) if e.contains('@') => {}
            _ => return Err(error(400, "email is required and must be a valid email address")),
        }
        let expires_at = rfc3339(SystemTime::now() + LOGIN_LINK_TTL);
        Ok(DemoResponse::new(
            201,
            json!({
                "url": format!("{LOGIN_URL_PREFIX}{}", random_hex::<32>()),
                "expires_at": expires_at,
            }),
        ))
    }

    /// Name and creation time of `org_id`: stored values if the demo created it, else defaults.
    fn org_name_and_created(&self, org_id: &str) -> (String, String) {
        let state = self.lock();
        match state.orgs.iter().find(|o| o.id == org_id) {
            Some(o) => (o.name.clone(), o.created_at.clone()),
            None => (default_org_name(org_id), self.started_at.clone()),
        }
    }
}

/// Turns a [`DemoResponse`] into an HTTP response with JSON headers.
fn to_http(out: DemoResponse) -> Response<Full<Bytes>> {
    let bytes = Bytes::from(out.body.to_string());
    let len = bytes.len();
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Reads the whole request body and answers it with `api`.
async fn respond(api: &DemoApi, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let out = match body.collect().await {
        Ok(collected) => api.handle(parts.method.as_str(), &target, &parts.headers, &collected.to_bytes()),
        Err(e) => {
            tracing::debug!(error = %e, "demo upstream: failed to read request body");
            error(400, "Could not read request body")
        }
    };
    to_http(out)
}

/// The response header that names the demo instance which answered, so the demo's curl
/// lines show the gateway balancing over several instances.
pub(crate) const INSTANCE_HEADER: &str = "x-demo-instance";

/// Serves `api` on an already-bound listener until the process ends (HTTP/1.1 keep-alive,
/// one task per connection). Several instances may share one `api` (one in-memory store
/// behind a cluster); each names itself in [`INSTANCE_HEADER`].
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    api: std::sync::Arc<DemoApi>,
    instance: Arc<str>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually transient (EMFILE, aborted handshakes): back off briefly, keep going.
                tracing::debug!(error = %e, "demo upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        let name = HeaderValue::from_str(&instance).unwrap_or(HeaderValue::from_static("demo"));
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let api = Arc::clone(&api);
                let name = name.clone();
                async move {
                    let mut resp = respond(&api, req).await;
                    resp.headers_mut().insert(INSTANCE_HEADER, name);
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "demo upstream: connection error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Partner-Id", HeaderValue::from_str(id).unwrap());
        h
    }

    fn org_hdr(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Org-Id", HeaderValue::from_str(id).unwrap());
        h
    }

    fn create(api: &DemoApi, p: &str, body: Value) -> DemoResponse {
        api.handle("POST", "/partner/v1/orgs", &partner(p), body.to_string().as_bytes())
    }

    fn is_hex(s: &str, len: usize) -> bool {
        s.len() == len && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    }

    fn is_uuid_v4(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() == 5
            && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| is_hex(p, *n))
            && parts[2].starts_with('4')
            && matches!(parts[3].chars().next(), Some('8' | '9' | 'a' | 'b'))
    }

    fn is_rfc3339_millis(s: &str) -> bool {
        s.len() == 24 && s.ends_with('Z') && humantime::parse_rfc3339(s).is_ok()
    }

    fn assert_error(r: &DemoResponse, status: u16, message: &str, reason: &str) {
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(
            r.body,
            json!({ "statusCode": status, "message": message, "error": reason })
        );
    }

    #[test]
    fn ids_and_tokens_have_the_right_shape() {
        for _ in 0..50 {
            assert!(is_uuid_v4(&uuid_v4()));
        }
        assert!(is_hex(&random_hex::<32>(), 64));
        assert_ne!(uuid_v4(), uuid_v4());
    }

    #[test]
    fn health() {
        let api = DemoApi::new(None);
        let r = api.handle("GET", "/health", &HeaderMap::new(), b"");
        assert_eq!(r, DemoResponse::new(200, json!({ "status": "ok" })));
    }

    #[test]
    fn create_org_returns_201_with_shape() {
        let api = DemoApi::new(None);
        let r = create(
            &api,
            "p1",
            json!({ "name": "Acme Tours", "external_id": "customer-12345", "language": "en",
                    "website": "https://acme.example", "ai_instructions": "be nice",
                    "integrations": {} }),
        );
        assert_eq!(r.status, 201, "{r:?}");
        let obj = r.body.as_object().unwrap();
        assert_eq!(obj.len(), 4);
        assert!(is_uuid_v4(r.body["id"].as_str().unwrap()));
        assert_eq!(r.body["name"], "Acme Tours");
        assert!(is_hex(r.body["widget_token"].as_str().unwrap(), 64));
        assert_eq!(r.body["external_id"], "customer-12345");

        let stored = api.lock().orgs[0].clone();
        assert_eq!(stored.partner_id, "p1");
        assert_eq!(stored.language, "en");
        assert!(is_rfc3339_millis(&stored.created_at), "{}", stored.created_at);
    }

    #[test]
    fn create_org_without_external_id_defaults() {
        let api = DemoApi::new(None);
        let r = create(&api, "p1", json!({ "name": "No Ext" }));
        assert_eq!(r.status, 201);
        assert_eq!(r.body["external_id"], Value::Null);
        assert_eq!(api.lock().orgs[0].language, "en");
        // Two orgs without external_id do not conflict.
        assert_eq!(create(&api, "p1", json!({ "name": "No Ext 2" })).status, 201);
        let r = create(&api, "p1", json!({ "name": "Null Ext", "external_id": null }));
        assert_eq!(r.status, 201);
    }

    #[test]
    fn create_org_rejects_bad_bodies() {
        let api = DemoApi::new(None);
        let h = partner("p1");
        for body in [
            &b""[..],
            b"not json",
            b"[\"x\"]",
            b"{}",
            b"{\"name\":\"\"}",
            b"{\"name\":\"   \"}",
            b"{\"name\":5}",
            b"{\"name\":\"x\",\"external_id\":7}",
            b"{\"name\":\"x\",\"external_id\":\"\"}",
        ] {
            let r = api.handle("POST", "/partner/v1/orgs", &h, body);
            assert_eq!(r.status, 400, "{body:?} -> {r:?}");
            assert_eq!(r.body["statusCode"], 400);
            assert_eq!(r.body["error"], "Bad Request");
            assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        assert!(api.lock().orgs.is_empty());
    }

    #[test]
    fn duplicate_external_id_conflicts_per_partner_only() {
        let api = DemoApi::new(None);
        assert_eq!(
            create(&api, "p1", json!({ "name": "A", "external_id": "c-1" })).status,
            201
        );
        let r = create(&api, "p1", json!({ "name": "B", "external_id": "c-1" }));
        assert_error(&r, 409, "Org with external_id \"c-1\" already exists", "Conflict");
        let r = create(&api, "p2", json!({ "name": "C", "external_id": "c-1" }));
        assert_eq!(r.status, 201);
        assert_eq!(api.lock().orgs.len(), 2);
    }

    #[test]
    fn partner_routes_require_partner_header() {
        let api = DemoApi::new(None);
        let none = HeaderMap::new();
        let mut blank = HeaderMap::new();
        blank.insert("x-partner-id", HeaderValue::from_static("  "));
        for (method, target) in [
            ("POST", "/partner/v1/orgs"),
            ("GET", "/partner/v1/orgs"),
            ("GET", "/partner/v1/orgs/by-external-id/x"),
            ("GET", "/partner/v1/orgs/abc"),
            ("POST", "/partner/v1/orgs/abc/api-keys"),
            ("POST", "/partner/v1/orgs/abc/login-links"),
            ("GET", "/partner/v1/orgs/abc/whatever"),
        ] {
            for h in [&none, &blank] {
                let r = api.handle(method, target, h, b"{\"name\":\"x\"}");
                assert_error(&r, 401, "missing X-Partner-Id", "Unauthorized");
            }
        }
        // The org header does not stand in for the partner header.
        let r = api.handle("GET", "/partner/v1/orgs", &org_hdr("o1"), b"");
        assert_eq!(r.status, 401);
    }

    #[test]
    fn list_orgs_scoped_ordered_and_paginated() {
        let api = DemoApi::new(None);
        for i in 0..5 {
            create(&api, "p1", json!({ "name": format!("org{i}") }));
            create(&api, "p2", json!({ "name": format!("other{i}") }));
        }
        let h = partner("p1");
        let r = api.handle("GET", "/partner/v1/orgs", &h, b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body["total"], 5);
        let names: Vec<&str> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["org0", "org1", "org2", "org3", "org4"]);
        let first = &r.body["data"][0];
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5);
        for k in ["id", "name", "widget_token", "external_id", "created_at"] {
            assert!(first.get(k).is_some(), "missing {k}");
        }
        assert!(is_rfc3339_millis(first["created_at"].as_str().unwrap()));

        let r = api.handle("GET", "/partner/v1/orgs?limit=2&offset=1", &h, b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body["total"], 5);
        let names: Vec<&str> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["org1", "org2"]);

        let r = api.handle("GET", "/partner/v1/orgs?offset=10", &h, b"");
        assert_eq!(r.body, json!({ "data": [], "total": 5 }));

        let r = api.handle("GET", "/partner/v1/orgs?limit=100&offset=0", &h, b"");
        assert_eq!(r.body["data"].as_array().unwrap().len(), 5);

        let r = api.handle("GET", "/partner/v1/orgs", &partner("nobody"), b"");
        assert_eq!(r.body, json!({ "data": [], "total": 0 }));
    }

    #[test]
    fn list_orgs_default_limit_is_50() {
        let api = DemoApi::new(None);
        for i in 0..60 {
            create(&api, "p1", json!({ "name": format!("org{i}") }));
        }
        let r = api.handle("GET", "/partner/v1/orgs", &partner("p1"), b"");
        assert_eq!(r.body["total"], 60);
        assert_eq!(r.body["data"].as_array().unwrap().len(), 50);
    }

    #[test]
    fn list_orgs_rejects_bad_pagination() {
        let api = DemoApi::new(None);
        let h = partner("p1");
        for q in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "limit=",
            "limit=1.5",
            "offset=-1",
            "offset=x",
            "offset=",
        ] {
            let r = api.handle("GET", &format!("/partner/v1/orgs?{q}"), &h, b"");
            assert_eq!(r.status, 400, "{q} -> {r:?}");
            assert_eq!(r.body["error"], "Bad Request");
        }
        // Boundaries are fine.
        // The last occurrence of a repeated parameter wins.
        for q in ["limit=1", "limit=100", "offset=0", "limit=%35", "limit=0&limit=2"] {
            let r = api.handle("GET", &format!("/partner/v1/orgs?{q}"), &h, b"");
            assert_eq!(r.status, 200, "{q}");
        }
    }

    #[test]
    fn by_external_id_is_decoded_and_scoped() {
        let api = DemoApi::new(None);
        let created = create(&api, "p1", json!({ "name": "Slashy", "external_id": "team/a b" }));
        let id = created.body["id"].as_str().unwrap().to_owned();
        let r = api.handle(
            "GET",
            "/partner/v1/orgs/by-external-id/team%2Fa%20b",
            &partner("p1"),
            b"",
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["id"], id.as_str());
        assert_eq!(r.body["name"], "Slashy");
        assert_eq!(r.body["external_id"], "team/a b");
        assert_eq!(r.body["widget_token"], created.body["widget_token"]);
        assert!(is_rfc3339_millis(r.body["created_at"].as_str().unwrap()));

        let r = api.handle(
            "GET",
            "/partner/v1/orgs/by-external-id/team%2Fa%20b",
            &partner("p2"),
            b"",
        );
        assert_error(&r, 404, "No org with external_id \"team/a b\"", "Not Found");
        let r = api.handle("GET", "/partner/v1/orgs/by-external-id/missing", &partner("p1"), b"");
        assert_error(&r, 404, "No org with external_id \"missing\"", "Not Found");
        let r = api.handle("GET", "/partner/v1/orgs/by-external-id/%FF", &partner("p1"), b"");
        assert_eq!(r.status, 400);
    }

    #[test]
    fn get_org_by_id_only_for_owner() {
        let api = DemoApi::new(None);
        let created = create(&api, "p1", json!({ "name": "Mine", "external_id": "e" }));
        let id = created.body["id"].as_str().unwrap();
        let r = api.handle("GET", &format!("/partner/v1/orgs/{id}"), &partner("p1"), b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body["id"], id);
        assert_eq!(r.body["name"], "Mine");
        assert_eq!(r.body["external_id"], "e");
        assert!(r.body.get("created_at").is_some());

        let r = api.handle("GET", &format!("/partner/v1/orgs/{id}"), &partner("p2"), b"");
        assert_eq!(r.status, 404);
        assert_eq!(r.body["error"], "Not Found");
        // An org only known to the gateway's policy file.
        let r = api.handle(
            "GET",
            "/partner/v1/orgs/11111111-2222-4333-8444-555555555555",
            &partner("p1"),
            b"",
        );
        assert_eq!(r.status, 404);
        assert_eq!(r.body["statusCode"], 404);
    }

    #[test]
    fn api_key_without_minter_is_demo_hex() {
        let api = DemoApi::new(None);
        let r = api.handle(
            "POST",
            "/partner/v1/orgs/not-in-store/api-keys",
            &partner("p1"),
            b"{\"name\":\"Production\"}",
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert!(is_uuid_v4(r.body["api_key_id"].as_str().unwrap()));
        let key = r.body["api_key"].as_str().unwrap();
        let hex_part = key.strip_prefix("demo-").unwrap();
        assert!(is_hex(hex_part, 32), "{key}");
        assert_eq!(r.body.as_object().unwrap().len(), 2);
        // Empty body is fine (name is optional).
        let r = api.handle("POST", "/partner/v1/orgs/not-in-store/api-keys", &partner("p1"), b"");
        assert_eq!(r.status, 201);
        // But a malformed one is not.
        for body in [&b"{"[..], b"{\"name\":1}", b"42"] {
            let r = api.handle("POST", "/partner/v1/orgs/x/api-keys", &partner("p1"), body);
            assert_eq!(r.status, 400, "{body:?}");
        }
    }

    #[test]
    fn api_key_uses_minter() {
        let minter: OrgKeyMinter = Arc::new(|org: &str, key: &str| format!("jwt.{org}.{key}"));
        let api = DemoApi::new(Some(minter));
        let r = api.handle("POST", "/partner/v1/orgs/org%2D42/api-keys", &partner("p1"), b"{}");
        assert_eq!(r.status, 201);
        let key_id = r.body["api_key_id"].as_str().unwrap();
        assert_eq!(r.body["api_key"], format!("jwt.org-42.{key_id}"));
    }

    #[test]
    fn login_link_shape_and_validation() {
        let api = DemoApi::new(None);
        let before = SystemTime::now();
        let r = api.handle(
            "POST",
            "/partner/v1/orgs/not-in-store/login-links",
            &partner("p1"),
            br#"{"email":"owner@acmetours.com","name":"Jane","role_ids":["r1"]}"#,
        );
        assert_eq!(r.status, 201, "{r:?}");
        let url = r.body["url"].as_str().unwrap();
        let token = url.strip_prefix(LOGIN_URL_PREFIX).unwrap();
        assert!(is_hex(token, 64), "{url}");
        let expires = r.body["expires_at"].as_str().unwrap();
        assert!(is_rfc3339_millis(expires), "{expires}");
        let expires = humantime::parse_rfc3339(expires).unwrap();
        let ttl = expires.duration_since(before).unwrap();
        assert!(ttl > Duration::from_secs(14 * 60) && ttl <= Duration::from_secs(15 * 60 + 5));

        for body in [
            &b""[..],
            b"{}",
            b"{\"email\":\"nope\"}",
            b"{\"email\":5}",
            b"{\"email\":\"a@b\",\"role_ids\":\"r1\"}",
            b"{\"email\":\"a@b\",\"name\":[]}",
            b"garbage",
        ] {
            let r = api.handle("POST", "/partner/v1/orgs/o/login-links", &partner("p1"), body);
            assert_eq!(r.status, 400, "{body:?} -> {r:?}");
            assert_eq!(r.body["error"], "Bad Request");
        }
    }

    #[test]
    fn generic_partner_org_resource() {
        let api = DemoApi::new(None);
        for method in ["GET", "POST", "DELETE"] {
            let r = api.handle(method, "/partner/v1/orgs/o-1/contacts/7?x=1", &partner("p1"), b"");
            assert_eq!(
                r,
                DemoResponse::new(
                    200,
                    json!({ "ok": true, "org_id": "o-1", "path": "/partner/v1/orgs/o-1/contacts/7" })
                )
            );
        }
    }

    #[test]
    fn current_org_defaults_and_stored() {
        let api = DemoApi::new(None);
        let r = api.handle("GET", "/org", &org_hdr("abcdef0123456789"), b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body["name"], "Org abcdef01");
        let obj = r.body.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert!(is_rfc3339_millis(r.body["created_at"].as_str().unwrap()));
        assert!(is_rfc3339_millis(r.body["updated_at"].as_str().unwrap()));
        // Ids shorter than 8 chars are used whole.
        let r = api.handle("GET", "/org", &org_hdr("abc"), b"");
        assert_eq!(r.body["name"], "Org abc");

        let created = create(&api, "p1", json!({ "name": "Stored Org" }));
        let id = created.body["id"].as_str().unwrap();
        let stored_at = api.lock().orgs[0].created_at.clone();
        let r = api.handle("GET", "/org", &org_hdr(id), b"");
        assert_eq!(
            r.body,
            json!({ "name": "Stored Org", "created_at": stored_at, "updated_at": stored_at })
        );
    }

    #[test]
    fn org_info_appizer_shape() {
        let api = DemoApi::new(None);
        let r = api.handle("GET", "/v1/org/info", &org_hdr("cf2701f8-fc4d"), b"");
        assert_eq!(r.status, 200);
        let created_at = r.body["organization"]["created_at"].clone();
        assert!(is_rfc3339_millis(created_at.as_str().unwrap()));
        assert_eq!(
            r.body,
            json!({
                "success": true,
                "organization": {
                    "id": "cf2701f8-fc4d",
                    "name": "Org cf2701f8",
                    "description": null,
                    "website": null,
                    "timezone": "UTC",
                    "plan_type": "pro",
                    "app_count": 0,
                    "mcp": null,
                    "created_at": created_at,
                    "updated_at": created_at,
                }
            })
        );
        let created = create(&api, "p1", json!({ "name": "Named" }));
        let id = created.body["id"].as_str().unwrap();
        let r = api.handle("GET", "/v1/org/info", &org_hdr(id), b"");
        assert_eq!(r.body["organization"]["name"], "Named");
        assert_eq!(r.body["organization"]["id"], id);
    }

    #[test]
    fn org_scoped_generic_routes() {
        let api = DemoApi::new(None);
        for path in ["/v1/stream/chat", "/v1/stream", "/v1/orgs/o-9/contacts"] {
            let r = api.handle("GET", &format!("{path}?q=1"), &org_hdr("o-1"), b"");
            assert_eq!(
                r,
                DemoResponse::new(200, json!({ "ok": true, "org_id": "o-1", "path": path }))
            );
        }
    }

    #[test]
    fn org_routes_require_org_header() {
        let api = DemoApi::new(None);
        for target in ["/org", "/v1/org/info", "/v1/stream/x", "/v1/orgs/o/x"] {
            let r = api.handle("GET", target, &partner("p1"), b"");
            assert_error(&r, 401, "missing X-Org-Id", "Unauthorized");
        }
    }

    #[test]
    fn unknown_paths_are_404() {
        let api = DemoApi::new(None);
        let mut h = partner("p1");
        h.insert("x-org-id", HeaderValue::from_static("o1"));
        for target in [
            "/",
            "",
            "nope",
            "/nope",
            "/partner",
            "/partner/v1",
            "/partner/v1/orgs/",
            "/partner/v2/orgs",
            "/partner/v1/orgs/by-external-id",
            "/partner/v1/orgs/by-external-id/",
            "/partner/v1/orgs/by-external-id/a/b",
            "/v1/org",
            "/v1/orgs",
            "/v1/orgs/",
            "/health/x",
            "*",
        ] {
            let r = api.handle("GET", target, &h, b"");
            assert_error(&r, 404, "Not found", "Not Found");
        }
    }

    #[test]
    fn wrong_method_is_405() {
        let api = DemoApi::new(None);
        let h = partner("p1");
        for (method, target) in [
            ("POST", "/health"),
            ("DELETE", "/partner/v1/orgs"),
            ("PUT", "/partner/v1/orgs"),
            ("POST", "/partner/v1/orgs/by-external-id/x"),
            ("DELETE", "/partner/v1/orgs/abc"),
            ("GET", "/partner/v1/orgs/abc/api-keys"),
            ("GET", "/partner/v1/orgs/abc/login-links"),
            ("POST", "/org"),
            ("PUT", "/v1/org/info"),
            ("get", "/health"),
        ] {
            let r = api.handle(method, target, &h, b"");
            assert_error(&r, 405, "Method Not Allowed", "Method Not Allowed");
        }
    }

    #[test]
    fn absolute_form_target_is_routed() {
        let api = DemoApi::new(None);
        let r = api.handle("GET", "http://upstream:8080/health", &HeaderMap::new(), b"");
        assert_eq!(r.status, 200);
        let r = api.handle("GET", "http://upstream:8080", &HeaderMap::new(), b"");
        assert_eq!(r.status, 404);
    }

    #[test]
    fn poisoned_mutex_still_serves() {
        let api = DemoApi::new(None);
        let api2 = Arc::clone(&api);
        let _ = std::thread::spawn(move || {
            let _guard = api2.state.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(api.state.is_poisoned());
        assert_eq!(create(&api, "p1", json!({ "name": "x" })).status, 201);
        assert!(format!("{api:?}").contains("orgs: 1"));
    }

    async fn raw_request(addr: std::net::SocketAddr, request: String) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn serve_answers_real_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = DemoApi::new(None);
        let server = tokio::spawn(serve(listener, Arc::clone(&api), Arc::from("demo-a")));

        let work = async {
            let (head, body) = raw_request(
                addr,
                "GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n".to_owned(),
            )
            .await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("content-type: application/json"), "{head}");
            assert!(lower.contains(&format!("content-length: {}", body.len())), "{head}");
            assert!(lower.contains("x-demo-instance: demo-a\r\n"), "{head}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({ "status": "ok" }));

            // A larger body goes through the body collector intact.
            let payload = json!({ "name": "Big", "ai_instructions": "x".repeat(200_000) }).to_string();
            let (head, body) = raw_request(
                addr,
                format!(
                    "POST /partner/v1/orgs HTTP/1.1\r\nHost: demo\r\nX-Partner-Id: p1\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{payload}",
                    payload.len()
                ),
            )
            .await;
            assert!(head.starts_with("HTTP/1.1 201 Created\r\n"), "{head}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["name"], "Big");
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("timed out talking to the demo upstream");
        assert_eq!(api.lock().orgs.len(), 1);
        server.abort();
    }
}
