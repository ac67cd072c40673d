//! The whole admission decision for one request, in docs/reference.md#pipeline order (steps 0-7).
//!
//! Pure apart from the state behind [`SharedState`] (rate-limit buckets, learned orgs): it
//! reads request facts and the policy, and returns either what the proxy needs to forward
//! the request or the denial. The steps run in the order of the table in docs/reference.md#pipeline, in
//! [`decide`]; each is a small function of its own.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use http::HeaderMap;

use super::client_ip::{self, ClientIp, ClientIpPolicy, CF_CONNECTING_IP, X_FORWARDED_FOR};
use super::denial::{AnswerStyle, Denial};
use super::directory::{self, Directory};
use super::identity::valid_id;
use super::jwt::{IdClaim, JwtPolicy, KeySet, TokenError};
use super::method;
use super::ownership::{self, Configured, LearnedOrgs};
use super::path;
use super::principal::{Principal, PrincipalKind};
use super::rate_limit::{Headroom, OverrideBuckets, RateLimits};
use super::revocations::Revocations;
use super::routes::{AuthKind, ErrorFormat, Route, RouteMatch, RouteTable, Routed};
use super::spec_routes::{SpecMatch, ValidateMode};
use super::token_cache::TokenCache;
use crate::openapi::{BodyPlan, HeldBody, Rejection, RequestHead};

/// Settings that change only with a restart.
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    pub routes: RouteTable,
    pub client_ip: ClientIpPolicy,
    pub jwt: JwtPolicy,
    pub max_body_bytes: u64,
    /// `[server] allow_path_semicolons`: `;` path parameters pass step 0 and routing reads each
    /// segment up to its first `;` (docs/reference.md#pipeline).
    pub allow_path_semicolons: bool,
}

/// The reloadable policy: one immutable value per reload, swapped atomically.
pub struct Snapshot<C: Clock = DefaultClock> {
    pub directory: Arc<Directory>,
    pub keys: Arc<KeySet>,
    pub overrides: Arc<OverrideBuckets<C>>,
}

impl<C: Clock> Clone for Snapshot<C> {
    fn clone(&self) -> Self {
        Snapshot {
            directory: self.directory.clone(),
            keys: self.keys.clone(),
            overrides: self.overrides.clone(),
        }
    }
}

/// Everything the decision reads, apart from the [`SharedState`].
pub struct Gate<'a, C: Clock = DefaultClock> {
    pub fixed: &'a StaticPolicy,
    pub snapshot: &'a Snapshot<C>,
    pub tokens: &'a TokenCache,
    /// Revocations made at runtime (`authgate revoke`), besides the policy file's.
    pub revoked: &'a Revocations,
    /// Whether `revoked` may be relied on now (docs/reference.md#redis): false while this
    /// replica has never read the shared set, or under `on_error = "deny"` while its view is
    /// stale. Then step 3 answers 503 `shared_state_unavailable` on authenticating routes.
    pub revocations_usable: bool,
}

/// The request as the decision sees it.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The raw request target (path and query) as received.
    pub target: &'a [u8],
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
    /// Declared Content-Length, if any.
    pub content_length: Option<u64>,
    /// Seconds since the Unix epoch.
    pub now: f64,
}

/// Who the request was admitted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// `auth = "none"`.
    Anonymous,
    Partner {
        id: Arc<str>,
        key_id: Option<Arc<str>>,
    },
    Org {
        id: Arc<str>,
        key_id: Option<Arc<str>>,
    },
}

impl Identity {
    /// The partner id for metric labels (empty for other principals).
    pub(crate) fn partner_label(&self) -> &str {
        match self {
            Identity::Partner { id, .. } => id,
            _ => "",
        }
    }
}

/// A request that may go upstream.
#[derive(Debug)]
pub struct Admitted<'r> {
    pub(crate) route: &'r Route,
    pub(crate) identity: Identity,
    pub(crate) client_ip: ClientIp,
    pub(crate) headroom: Option<Headroom>,
    /// What step 7a left for the body (spec operations only).
    pub(crate) checks: Checks,
}

/// Step 7a's outcome for an admitted request: whether its body must be held and checked
/// before the upstream sees anything, and (under `validate = "report"`) the failures the
/// head already had, to log and count.
#[derive(Debug, Default)]
pub struct Checks {
    /// Hold the body (up to the limit), check it, then forward it byte for byte.
    pub hold: Option<HeldBody>,
    /// `report` mode: the head's failures (the request is forwarded anyway).
    pub reported: Option<Box<Rejection>>,
}

/// A refused request, with what the answer and the metrics need.
#[derive(Debug)]
pub struct Refused<'r> {
    pub(crate) route: Option<&'r Route>,
    pub(crate) denial: Denial,
    pub(crate) client_ip: ClientIp,
    /// The principal, once known (the rate-limit metric names the partner).
    pub(crate) identity: Identity,
}

/// The answer style of a route (or the default before routing).
pub(crate) fn style_of(route: Option<&Route>) -> AnswerStyle<'_> {
    match route {
        Some(r) => AnswerStyle {
            auth: r.auth,
            error_format: r.error_format,
            api_key_header: r.api_key.as_ref().map_or("X-API-Key", |k| k.header.as_str()),
        },
        None => AnswerStyle {
            auth: AuthKind::None,
            error_format: ErrorFormat::Dto,
            api_key_header: "X-API-Key",
        },
    }
}

/// Where step 6 (rate limits) and the learned-org part of step 7 find their state. The
/// embedded store answers at once from this process's memory; the shared store (Redis,
/// docs/reference.md#shared-state-across-replicas) may need a network round trip, which is why [`decide`] is async. With
/// static dispatch the embedded path compiles to a future that is ready on first poll:
/// no allocation, no await.
pub trait SharedState<C: Clock = DefaultClock>: Sync {
    /// Step 6: charge each of `limits` (route order) for `principal`; the first exhausted
    /// limit answers, earlier ones keep their token, later ones are not charged.
    fn charge(
        &self,
        overrides: &OverrideBuckets<C>,
        limits: &[usize],
        principal: &Principal,
    ) -> impl Future<Output = Result<Option<Headroom>, Denial>> + Send;

    /// Step 7, after the configured orgs said no: whether `partner` learned `org` (through
    /// any replica). `Err` when the answer is needed and cannot be had (`on_error = "deny"`).
    fn learned(&self, partner: &str, org: &str) -> impl Future<Output = Result<bool, Denial>> + Send;
}

/// This process's memory only: governor buckets and the learned orgs it has seen.
pub struct Embedded<'a, C: Clock = DefaultClock> {
    pub limits: &'a RateLimits<C>,
    pub learned: &'a LearnedOrgs,
}

impl<C: Clock + Clone + Send + Sync> SharedState<C> for Embedded<'_, C>
where
    C::Instant: Send + Sync,
{
    fn charge(
        &self,
        overrides: &OverrideBuckets<C>,
        limits: &[usize],
        principal: &Principal,
    ) -> impl Future<Output = Result<Option<Headroom>, Denial>> + Send {
        std::future::ready(self.limits.check(overrides, limits, principal))
    }

    fn learned(&self, partner: &str, org: &str) -> impl Future<Output = Result<bool, Denial>> + Send {
        std::future::ready(Ok(self.learned.owns(partner, org)))
    }
}

/// Steps 0-7 of docs/reference.md#pipeline, in order; the first failing step answers.
pub async fn decide<'g, C, S>(
    gate: &Gate<'g, C>,
    shared: &S,
    req: &RequestFacts<'_>,
) -> Result<Admitted<'g>, Refused<'g>>
where
    C: Clock + Clone,
    S: SharedState<C>,
{
    let client_ip = client_ip::resolve(
        &gate.fixed.client_ip,
        req.peer,
        req.headers.get_all(X_FORWARDED_FOR).iter().map(|v| v.as_bytes()),
        req.headers.get(CF_CONNECTING_IP).map(|v| v.as_bytes()),
    );
    let refuse = |route: Option<&'g Route>, denial: Denial, identity: Identity| Refused {
        route,
        denial,
        client_ip,
        identity,
    };

    // 0. method, path hygiene, then a declared body that is too large
    let raw_path = match request_line(gate.fixed, req.method, req.target) {
        Ok(path) => path,
        Err(d) => return Err(refuse(None, d, Identity::Anonymous)),
    };
    if req.content_length.is_some_and(|n| n > gate.fixed.max_body_bytes) {
        let limit = gate.fixed.max_body_bytes;
        return Err(refuse(None, Denial::BodyTooLarge { limit }, Identity::Anonymous));
    }

    // 1. route
    let m = routed(gate.fixed, req.method, raw_path).map_err(|d| refuse(None, d, Identity::Anonymous))?;
    let route = m.route;
    if route.auth == AuthKind::None {
        let checks = spec_checks(m.spec.as_ref(), req).map_err(|d| refuse(Some(route), d, Identity::Anonymous))?;
        return Ok(Admitted {
            route,
            identity: Identity::Anonymous,
            client_ip,
            headroom: None,
            checks,
        });
    }

    // 2-5. credential, then principal known / not revoked / IP / active
    let (identity, principal) =
        credential(gate, route, req, client_ip).map_err(|(denial, identity)| refuse(Some(route), denial, identity))?;
    let on_route = |denial: Denial| refuse(Some(route), denial, identity.clone());

    // 6. rate limits
    let headroom = shared
        .charge(&gate.snapshot.overrides, &route.limits, &principal)
        .await
        .map_err(on_route)?;

    // 7. org ownership
    if let Some(capture) = m.org_capture {
        owns(gate, shared, &identity, capture).await.map_err(on_route)?;
    }

    // 7a. what the spec operation declares
    let checks = spec_checks(m.spec.as_ref(), req).map_err(on_route)?;
    Ok(Admitted {
        route,
        identity,
        client_ip,
        headroom,
        checks,
    })
}

/// Step 0's rule on percent-encoded unreserved characters (docs/reference.md#reading-requests),
/// which needs the route: refused anywhere in a path that matched no route (`None`) or a spec
/// operation, and outside the `{name}` captures of a `[[routes]]` entry.
fn encoded_unreserved(raw_path: &[u8], m: Option<&RouteMatch<'_, '_>>) -> Option<Denial> {
    if !raw_path.contains(&b'%') || !path::encodes_unreserved(raw_path) {
        return None;
    }
    let refused = match m {
        Some(m) if m.spec.is_none() => m.route.pattern.encodes_unreserved_outside_captures(raw_path),
        _ => true,
    };
    refused.then_some(Denial::BadPath(path::PathProblem::EncodedUnreserved))
}

/// Step 1: the route (`[[routes]]` first, then spec operations), or 404 / 405; and step 0's
/// rule on percent-encoded unreserved characters, which needs the route (a path that
/// matches nothing gets that 400 rather than its 404).
fn routed<'r, 'p>(fixed: &'r StaticPolicy, method: &str, path: &'p [u8]) -> Result<RouteMatch<'r, 'p>, Denial> {
    let routed = match fixed.routes.route(method, path, fixed.allow_path_semicolons) {
        Routed::Matched(m) => Ok(m),
        Routed::MethodNotAllowed(allow) => Err(Denial::MethodNotAllowed { allow: allow.into() }),
        Routed::NoRoute => Err(Denial::NoRoute),
    };
    match encoded_unreserved(path, routed.as_ref().ok()) {
        Some(d) => Err(d),
        None => routed,
    }
}

/// Step 7a: a spec operation's parameters, media type and body presence, checked on the
/// head (`enforce`: a failure refuses; `report`: it is kept to log and count); whether the
/// body is to be held for its schema.
fn spec_checks(spec: Option<&SpecMatch<'_, '_>>, req: &RequestFacts<'_>) -> Result<Checks, Denial> {
    let Some(m) = spec else {
        return Ok(Checks::default());
    };
    let head = RequestHead {
        captures: &m.captures,
        query: path::query_of(req.target),
        headers: req.headers,
    };
    let hold = |plan: BodyPlan| match plan {
        BodyPlan::Hold(h) => Some(h),
        BodyPlan::None | BodyPlan::Stream => None,
    };
    match m.validate {
        ValidateMode::Off => Ok(Checks::default()),
        ValidateMode::Enforce => match m.op.check_head(&head) {
            Ok(plan) => Ok(Checks {
                hold: hold(plan),
                reported: None,
            }),
            Err(r) => Err(Denial::InvalidRequest(Box::new(r))),
        },
        ValidateMode::Report => {
            let (plan, result) = m.op.check_head_report(&head);
            Ok(Checks {
                hold: hold(plan),
                reported: result.err().map(Box::new),
            })
        }
    }
}

/// Step 0 on the request line: a method with a lowercase letter, then path hygiene and the
/// `;` rule, then a `_method` query parameter (docs/reference.md#pipeline). Answers the
/// raw path (the target without its query), found in the same scan.
pub fn request_line<'t>(fixed: &StaticPolicy, method: &str, target: &'t [u8]) -> Result<&'t [u8], Denial> {
    method::check_method(method).map_err(Denial::BadMethod)?;
    let (raw_path, query) = path::split_target(target);
    if !path::is_plain(raw_path) {
        path::check(raw_path).map_err(Denial::BadPath)?;
        path::check_semicolons(raw_path, fixed.allow_path_semicolons).map_err(Denial::BadPath)?;
    }
    if let Some(query) = query {
        method::check_query_string(query).map_err(Denial::BadMethod)?;
    }
    Ok(raw_path)
}

/// The principal claim as a string that may serve as an id ([`super::identity`]).
fn principal_of(claim: &IdClaim) -> Result<&Arc<str>, TokenError> {
    let id = claim.as_str().ok_or(TokenError::MissingPrincipal)?;
    if !valid_id(id) {
        return Err(TokenError::BadIdentity);
    }
    Ok(id)
}

/// Steps 2-5: who is calling, and whether that principal may call at all.
fn credential(
    gate: &Gate<'_, impl Clock>,
    route: &Route,
    req: &RequestFacts<'_>,
    client_ip: ClientIp,
) -> Result<(Identity, Principal), (Denial, Identity)> {
    match route.auth {
        AuthKind::Partner => token_credential(gate, PrincipalKind::Partner, req, client_ip),
        AuthKind::Org => token_credential(gate, PrincipalKind::Org, req, client_ip),
        AuthKind::ApiKey => api_key_credential(gate, route, req, client_ip),
        AuthKind::None => Ok((Identity::Anonymous, Principal::partner(""))),
    }
}

/// Step 2 with a bearer JWT: a partner token on partner routes (no org claim), an org
/// token on org routes; then steps 3-5 for its principal.
fn token_credential(
    gate: &Gate<'_, impl Clock>,
    kind: PrincipalKind,
    req: &RequestFacts<'_>,
    client_ip: ClientIp,
) -> Result<(Identity, Principal), (Denial, Identity)> {
    let anonymous = |d: Denial| (d, Identity::Anonymous);
    let token = bearer_token(req.headers).map_err(anonymous)?;
    let verified = gate
        .tokens
        .verify(token, &gate.snapshot.keys, &gate.fixed.jwt, req.now)
        .map_err(|e| anonymous(Denial::InvalidToken(e)))?;
    let claim = match kind {
        PrincipalKind::Partner if verified.org != IdClaim::Absent => {
            return Err(anonymous(Denial::InvalidToken(TokenError::WrongTokenKind)));
        }
        PrincipalKind::Partner => &verified.partner,
        PrincipalKind::Org => &verified.org,
    };
    let id = principal_of(claim).map_err(|e| anonymous(Denial::InvalidToken(e)))?;
    let key_id = verified.key_id.clone();
    let identity = match kind {
        PrincipalKind::Partner => Identity::Partner {
            id: id.clone(),
            key_id: key_id.clone(),
        },
        PrincipalKind::Org => Identity::Org {
            id: id.clone(),
            key_id: key_id.clone(),
        },
    };
    let key_id = key_id.as_deref();
    admit(gate, kind, id, key_id, key_id, identity, client_ip)
}

/// Step 2 with an API key (`auth = "api_key"`): exactly one well-formed key in the route's
/// header, known and not disabled; then steps 3-5 for the org it belongs to.
fn api_key_credential(
    gate: &Gate<'_, impl Clock>,
    route: &Route,
    req: &RequestFacts<'_>,
    client_ip: ClientIp,
) -> Result<(Identity, Principal), (Denial, Identity)> {
    let anonymous = |d: Denial| (d, Identity::Anonymous);
    let settings = route.api_key.as_ref();
    let header = settings.map_or("x-api-key", |s| s.header.as_str());
    let prefix = settings.map_or("", |s| s.prefix.as_str());
    let mut values = req.headers.get_all(header).iter();
    let key = match (values.next(), values.next()) {
        (None, _) => return Err(anonymous(Denial::MissingApiKey)),
        (Some(_), Some(_)) => return Err(anonymous(Denial::BadApiKeyFormat)),
        (Some(v), None) => v.as_bytes(),
    };
    if !directory::api_key_well_formed(key, prefix) {
        return Err(anonymous(Denial::BadApiKeyFormat));
    }
    let entry = gate
        .snapshot
        .directory
        .api_key(key)
        .ok_or_else(|| anonymous(Denial::UnknownApiKey))?;
    let identity = Identity::Org {
        id: entry.org.clone(),
        key_id: Some(entry.id.clone()),
    };
    if entry.disabled {
        return Err((Denial::KeyDisabled, identity));
    }
    // a runtime revocation names the static key by its id; the org's `revoked_keys` list
    // token key ids and is not consulted for it
    admit(
        gate,
        PrincipalKind::Org,
        &entry.org,
        None,
        Some(&entry.id),
        identity,
        client_ip,
    )
}

/// Steps 3-5 for a principal whose identity is known: not revoked at runtime (by
/// `revoked_key`), then known, active, its `key_id` not revoked by the policy file, and
/// allowed from this client IP.
fn admit(
    gate: &Gate<'_, impl Clock>,
    kind: PrincipalKind,
    id: &Arc<str>,
    key_id: Option<&str>,
    revoked_key: Option<&str>,
    identity: Identity,
    client_ip: ClientIp,
) -> Result<(Identity, Principal), (Denial, Identity)> {
    let dir: &Directory = &gate.snapshot.directory;
    let revoked = revocations_in_force(gate).map_err(|d| (d, identity.clone()))?;
    let shared_revoked = revoked_key.is_some_and(|k| revoked.contains(kind, id, k));
    let admitted = match kind {
        PrincipalKind::Partner => directory::admit_partner(dir, id, key_id, shared_revoked, client_ip)
            .map(|p| Principal::partner(p.id.clone())),
        PrincipalKind::Org => {
            let must_be_listed = gate.fixed.jwt.org_must_be_listed;
            directory::admit_org(dir, id, key_id, shared_revoked, client_ip, must_be_listed)
                .map(|_| Principal::org(id.clone()))
        }
    };
    match admitted {
        Ok(principal) => Ok((identity, principal)),
        Err(d) => Err((d, identity)),
    }
}

/// Step 3's first question: may the runtime revocations be relied on now? A replica that
/// cannot tell whether a key was revoked refuses (503) rather than admit it.
fn revocations_in_force<'r, C: Clock>(gate: &'r Gate<'_, C>) -> Result<&'r Revocations, Denial> {
    if gate.revocations_usable {
        Ok(gate.revoked)
    } else {
        Err(Denial::SharedStateUnavailable)
    }
}

/// Step 7: the capture names the caller's own org (org principals) or one of the partner's
/// orgs, configured first, then learned (locally or through the shared store).
async fn owns<C: Clock, S: SharedState<C>>(
    gate: &Gate<'_, C>,
    shared: &S,
    identity: &Identity,
    capture: &[u8],
) -> Result<(), Denial> {
    match identity {
        Identity::Partner { id, .. } => {
            let Some(p) = gate.snapshot.directory.partner(id) else {
                return Err(Denial::UnknownPartner);
            };
            match ownership::configured_org(p, capture) {
                Configured::Owned => Ok(()),
                Configured::Forbidden => Err(Denial::OrgForbidden),
                Configured::Ask(org) => match shared.learned(id, &org).await? {
                    true => Ok(()),
                    false => Err(Denial::OrgForbidden),
                },
            }
        }
        Identity::Org { id, .. } => ownership::check_own_org(id, capture),
        Identity::Anonymous => Ok(()),
    }
}

/// Exactly one `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Denial> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(Denial::MissingToken),
        (Some(_), Some(_)) => return Err(Denial::InvalidToken(TokenError::DuplicateHeader)),
        (Some(v), None) => v,
    };
    let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
        return Err(Denial::InvalidToken(TokenError::Malformed));
    };
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match text.find(' ') {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::MissingToken);
    }
    match rest.map(|r| r.trim_start_matches(' ')) {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(Denial::InvalidToken(TokenError::Malformed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::directory::tests::partner;
    use crate::policy::ip_set::{parse_net, IpSet};
    use crate::policy::jwt::tests::{claims, hs_keys, mint, policy};
    use crate::policy::rate_limit::LimitDef;
    use crate::policy::routes::{ApiKeySettings, Pattern};
    use crate::policy::{client_ip::IpSource, directory::ApiKeyEntry, path::PathProblem};
    use governor::clock::FakeRelativeClock;
    use http::HeaderValue;
    use sha2::{Digest, Sha256};
    use std::num::NonZeroU32;
    use std::task::{Context, Poll, Waker};

    const NOW: f64 = 1_800_000_000.0;

    struct World {
        fixed: StaticPolicy,
        snapshot: Snapshot<FakeRelativeClock>,
        limits: RateLimits<FakeRelativeClock>,
        tokens: TokenCache,
        learned: LearnedOrgs,
        revoked: Revocations,
        revocations_usable: bool,
    }

    impl World {
        fn embedded(&self) -> Embedded<'_, FakeRelativeClock> {
            Embedded {
                limits: &self.limits,
                learned: &self.learned,
            }
        }
    }

    fn route(index: usize, name: &str, path: &str, auth: AuthKind, org: Option<&str>, limits: Vec<usize>) -> Route {
        let pattern = Pattern::parse(path).unwrap();
        Route {
            index,
            name: name.into(),
            org_param: org.map(|o| pattern.param_index(o).unwrap()),
            pattern,
            method: None,
            auth,
            limits,
            learn_org_pointer: None,
            api_key: (auth == AuthKind::ApiKey).then(|| ApiKeySettings {
                header: "X-API-Key".into(),
                prefix: "org_".into(),
            }),
            error_format: ErrorFormat::Dto,
        }
    }

    fn world() -> World {
        let routes = RouteTable::new(vec![
            route(
                0,
                "org-scoped",
                "/partner/v1/orgs/{org_id}/**",
                AuthKind::Partner,
                Some("org_id"),
                vec![0],
            ),
            route(1, "orgs", "/partner/v1/orgs", AuthKind::Partner, None, vec![0]),
            route(2, "health", "/health", AuthKind::None, None, vec![]),
            route(
                3,
                "org-api",
                "/v1/orgs/{org_id}/**",
                AuthKind::Org,
                Some("org_id"),
                vec![],
            ),
            route(4, "key", "/v1/org/info", AuthKind::ApiKey, None, vec![]),
        ]);
        let fixed = StaticPolicy {
            routes,
            client_ip: ClientIpPolicy {
                source: IpSource::XForwardedFor,
                trusted_proxies: IpSet::new([parse_net("127.0.0.0/8").unwrap()]),
            },
            jwt: policy(),
            max_body_bytes: 1024,
            allow_path_semicolons: false,
        };
        let mut acme = partner("acme");
        acme.orgs.insert("o-1".into());
        acme.ip_allow_list = Some(IpSet::new([parse_net("203.0.113.0/24").unwrap()]));
        let key = ApiKeyEntry {
            id: "ak-1".into(),
            org: "o-7".into(),
            disabled: false,
            digest: Sha256::digest(b"org_aaaaaaaaaaaaaaaaaaaa").into(),
        };
        let dir = Directory::new(vec![acme], vec![], vec![key]);
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::new(
            vec![LimitDef {
                name: "partner".into(),
                per_minute: NonZeroU32::new(2).unwrap(),
            }],
            clock,
        );
        let overrides = limits.build_overrides(&dir, None);
        World {
            fixed,
            snapshot: Snapshot {
                directory: Arc::new(dir),
                keys: Arc::new(hs_keys()),
                overrides: Arc::new(overrides),
            },
            limits,
            tokens: TokenCache::new(100),
            learned: LearnedOrgs::new(),
            revoked: Revocations::default(),
            revocations_usable: true,
        }
    }

    fn run(w: &World, method: &str, target: &str, headers: &[(&str, &str)]) -> Result<Identity, Denial> {
        run_on(w, &w.embedded(), method, target, headers)
    }

    /// One decision of `w`'s gate against `shared`, polled once.
    fn run_on<S: SharedState<FakeRelativeClock>>(
        w: &World,
        shared: &S,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Identity, Denial> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let gate = Gate {
            fixed: &w.fixed,
            snapshot: &w.snapshot,
            tokens: &w.tokens,
            revoked: &w.revoked,
            revocations_usable: w.revocations_usable,
        };
        let facts = RequestFacts {
            method,
            target: target.as_bytes(),
            headers: &map,
            peer: "127.0.0.1".parse().unwrap(),
            content_length: None,
            now: NOW,
        };
        ready(decide(&gate, shared, &facts))
            .map(|a| a.identity)
            .map_err(|r| r.denial)
    }

    /// Polls once: the embedded store must never make the decision wait.
    pub(crate) fn ready<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("an embedded decision awaited"),
        }
    }

    fn bearer(tok: &str) -> String {
        format!("Bearer {tok}")
    }

    /// `Authorization` for an org token of `org` (the partner claims plus `org_id`).
    fn org_bearer(org: &str) -> String {
        let mut org_claims = claims();
        org_claims["org_id"] = org.into();
        bearer(&mint(&org_claims, Some("hs-1")))
    }

    #[test]
    fn steps_in_order() {
        let w = world();
        let tok = mint(&claims(), Some("hs-1"));
        let auth = bearer(&tok);
        let ok_ip = ("X-Forwarded-For", "203.0.113.5");
        let acme = Identity::Partner {
            id: "acme".into(),
            key_id: Some("key-1".into()),
        };
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs/../x", &[]),
            Err(Denial::BadPath(PathProblem::DotSegment))
        );
        assert_eq!(run(&w, "GET", "/nope", &[]), Err(Denial::NoRoute));
        assert_eq!(run(&w, "GET", "/health?x=1", &[]), Ok(Identity::Anonymous));
        assert_eq!(run(&w, "GET", "/partner/v1/orgs", &[]), Err(Denial::MissingToken));
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs", &[("Authorization", "Bearer x.y.z")]),
            Err(Denial::InvalidToken(TokenError::Malformed))
        );
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs", &[("Authorization", &auth)]),
            Err(Denial::IpDenied)
        );
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs/o-2/x", &[("Authorization", &auth), ok_ip]),
            Err(Denial::OrgForbidden)
        );
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs/o-1/x", &[("Authorization", &auth), ok_ip]),
            Ok(acme.clone())
        );
        // two tokens spent (one 403 above, one 200): the third request is limited
        assert!(matches!(
            run(&w, "GET", "/partner/v1/orgs/o-1/x", &[("Authorization", &auth), ok_ip]),
            Err(Denial::RateLimited { .. })
        ));
    }

    #[test]
    fn authorization_grammar() {
        let w = world();
        let tok = mint(&claims(), Some("hs-1"));
        let xff = ("X-Forwarded-For", "203.0.113.5");
        let ok = |v: &str| run(&w, "GET", "/partner/v1/orgs/o-1/a", &[("Authorization", v), xff]);
        assert!(ok(&format!("  bearer   {tok} ")).is_ok());
        assert_eq!(ok(&format!("Basic {tok}")), Err(Denial::MissingToken));
        assert_eq!(ok(&tok), Err(Denial::MissingToken));
        assert_eq!(ok(""), Err(Denial::MissingToken));
        assert_eq!(ok("Bearer"), Err(Denial::InvalidToken(TokenError::Malformed)));
        assert_eq!(
            run(
                &w,
                "GET",
                "/partner/v1/orgs/o-1/a",
                &[("Authorization", &bearer(&tok)), ("Authorization", &bearer(&tok))]
            ),
            Err(Denial::InvalidToken(TokenError::DuplicateHeader))
        );
    }

    #[test]
    fn token_kinds_are_kept_apart() {
        let w = world();
        let org_tok = org_bearer("o-7");
        let xff = ("X-Forwarded-For", "203.0.113.5");
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs/o-1/a", &[("Authorization", &org_tok), xff]),
            Err(Denial::InvalidToken(TokenError::WrongTokenKind))
        );
        assert_eq!(
            run(&w, "GET", "/v1/orgs/o-7/a", &[("Authorization", &org_tok)]),
            Ok(Identity::Org {
                id: "o-7".into(),
                key_id: Some("key-1".into())
            })
        );
        assert_eq!(
            run(&w, "GET", "/v1/orgs/o-8/a", &[("Authorization", &org_tok)]),
            Err(Denial::OrgForbidden)
        );
        let partner_tok = bearer(&mint(&claims(), Some("hs-1")));
        assert_eq!(
            run(&w, "GET", "/v1/orgs/o-7/a", &[("Authorization", &partner_tok)]),
            Err(Denial::InvalidToken(TokenError::MissingPrincipal))
        );
    }

    #[test]
    fn api_keys() {
        let w = world();
        assert_eq!(run(&w, "GET", "/v1/org/info", &[]), Err(Denial::MissingApiKey));
        assert_eq!(
            run(&w, "GET", "/v1/org/info", &[("X-API-Key", "org_x")]),
            Err(Denial::BadApiKeyFormat)
        );
        assert_eq!(
            run(&w, "GET", "/v1/org/info", &[("X-API-Key", "org_bbbbbbbbbbbbbbbbbbbb")]),
            Err(Denial::UnknownApiKey)
        );
        assert_eq!(
            run(&w, "GET", "/v1/org/info", &[("x-api-key", "org_aaaaaaaaaaaaaaaaaaaa")]),
            Ok(Identity::Org {
                id: "o-7".into(),
                key_id: Some("ak-1".into())
            })
        );
    }

    /// A shared store that is down with `on_error = "deny"`, or that knows extra orgs.
    struct Remote {
        down: bool,
        orgs: Vec<(&'static str, &'static str)>,
    }

    impl SharedState<FakeRelativeClock> for Remote {
        fn charge(
            &self,
            _: &OverrideBuckets<FakeRelativeClock>,
            limits: &[usize],
            _: &Principal,
        ) -> impl Future<Output = Result<Option<Headroom>, Denial>> + Send {
            let r = if self.down && !limits.is_empty() {
                Err(Denial::SharedStateUnavailable)
            } else {
                Ok(None)
            };
            std::future::ready(r)
        }

        fn learned(&self, partner: &str, org: &str) -> impl Future<Output = Result<bool, Denial>> + Send {
            let r = if self.down {
                Err(Denial::SharedStateUnavailable)
            } else {
                Ok(self.orgs.iter().any(|(p, o)| *p == partner && *o == org))
            };
            std::future::ready(r)
        }
    }

    fn run_with(w: &World, shared: &Remote, target: &str, headers: &[(&str, &str)]) -> Result<Identity, Denial> {
        run_on(w, shared, "GET", target, headers)
    }

    #[test]
    fn shared_state_answers_steps_6_and_7() {
        let w = world();
        let auth = bearer(&mint(&claims(), Some("hs-1")));
        let xff = ("X-Forwarded-For", "203.0.113.5");
        let up = Remote {
            down: false,
            orgs: vec![("acme", "o-remote")],
        };
        let down = Remote {
            down: true,
            orgs: vec![],
        };
        // an org another replica learned
        assert!(run_with(&w, &up, "/partner/v1/orgs/o-remote/x", &[("Authorization", &auth), xff]).is_ok());
        assert_eq!(
            run_with(&w, &up, "/partner/v1/orgs/o-other/x", &[("Authorization", &auth), xff]),
            Err(Denial::OrgForbidden)
        );
        // deny: a route with limits needs the shared state at step 6 ...
        assert_eq!(
            run_with(&w, &down, "/partner/v1/orgs/o-1/x", &[("Authorization", &auth), xff]),
            Err(Denial::SharedStateUnavailable)
        );
        // ... but earlier steps still answer first, and routes without limits or ownership pass
        assert_eq!(
            run_with(&w, &down, "/partner/v1/orgs/o-1/x", &[xff]),
            Err(Denial::MissingToken)
        );
        assert!(run_with(&w, &down, "/health", &[]).is_ok());
    }

    #[test]
    fn runtime_revocations_refuse_at_step_3() {
        let mut w = world();
        let tok = mint(&claims(), Some("hs-1"));
        let auth = bearer(&tok);
        w.revoked = w.revoked.with(&Principal::partner("acme"), "key-1", true);
        // step 3 comes before the IP check (no XFF here: the IP would be refused otherwise)
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs/o-1/x", &[("Authorization", &auth)]),
            Err(Denial::RevokedKey)
        );
        let org_tok = org_bearer("o-7");
        assert!(run(&w, "GET", "/v1/orgs/o-7/a", &[("Authorization", &org_tok)]).is_ok());
        // an org the policy file does not list is still refused once its key is revoked
        w.revoked = w.revoked.with(&Principal::org("o-7"), "key-1", true);
        assert_eq!(
            run(&w, "GET", "/v1/orgs/o-7/a", &[("Authorization", &org_tok)]),
            Err(Denial::RevokedKey)
        );
        // a static key by its id
        w.revoked = w.revoked.with(&Principal::org("o-7"), "ak-1", true);
        assert_eq!(
            run(&w, "GET", "/v1/org/info", &[("x-api-key", "org_aaaaaaaaaaaaaaaaaaaa")]),
            Err(Denial::RevokedKey)
        );
    }

    /// Fault: this replica cannot rely on its revocation view (never read from Redis, or
    /// stale under `on_error = "deny"`). What must hold: no authenticating route admits a
    /// request (503 at step 3, after the credential was checked), and routes without
    /// authentication still pass.
    #[test]
    fn an_unusable_revocation_view_refuses_authenticating_routes_at_step_3() {
        let mut w = world();
        w.revocations_usable = false;
        let auth = bearer(&mint(&claims(), Some("hs-1")));
        assert_eq!(
            run(&w, "GET", "/partner/v1/orgs/o-1/x", &[("Authorization", &auth)]),
            Err(Denial::SharedStateUnavailable)
        );
        let org_tok = org_bearer("o-7");
        assert_eq!(
            run(&w, "GET", "/v1/orgs/o-7/a", &[("Authorization", &org_tok)]),
            Err(Denial::SharedStateUnavailable)
        );
        assert_eq!(
            run(&w, "GET", "/v1/org/info", &[("x-api-key", "org_aaaaaaaaaaaaaaaaaaaa")]),
            Err(Denial::SharedStateUnavailable)
        );
        // a bad token is still a 401: the credential is checked first
        assert_eq!(
            run(
                &w,
                "GET",
                "/partner/v1/orgs/o-1/x",
                &[("Authorization", "Bearer x.y.z")]
            )
            .map(|_| ()),
            run(
                &world(),
                "GET",
                "/partner/v1/orgs/o-1/x",
                &[("Authorization", "Bearer x.y.z")]
            )
            .map(|_| ())
        );
        assert!(run(&w, "GET", "/health", &[]).is_ok());
    }

    #[test]
    fn methods_semicolons_and_overrides_are_refused_at_step_0() {
        use crate::policy::method::MethodProblem;
        let mut w = world();
        let auth = bearer(&mint(&claims(), Some("hs-1")));
        let ok_ip = ("X-Forwarded-For", "203.0.113.5");
        let lower = Err(Denial::BadMethod(MethodProblem::Lowercase));
        assert_eq!(run(&w, "post", "/health", &[]), lower);
        // before path hygiene: the first problem of the request line answers
        assert_eq!(run(&w, "get", "/a/../b", &[]), lower);
        for semi in ["/health;x", "/health%3bx", "/partner;x/v1/orgs"] {
            assert_eq!(
                run(&w, "GET", semi, &[]),
                Err(Denial::BadPath(PathProblem::Semicolon)),
                "{semi}"
            );
        }
        let over = Err(Denial::BadMethod(MethodProblem::OverrideParameter));
        assert_eq!(run(&w, "POST", "/health?_method=DELETE", &[]), over);
        assert_eq!(run(&w, "GET", "/health?a=1&%5FMethod=PUT", &[]), over);
        assert_eq!(run(&w, "HEAD", "/health?method=x", &[]), Ok(Identity::Anonymous));

        w.fixed.allow_path_semicolons = true;
        assert_eq!(run(&w, "GET", "/health;x", &[]), Ok(Identity::Anonymous));
        assert_eq!(
            run(&w, "GET", "/a/;x", &[]),
            Err(Denial::BadPath(PathProblem::EmptySegment))
        );
        // ownership is checked on the capture's part before ';', what the upstream uses
        assert!(run(
            &w,
            "GET",
            "/partner/v1/orgs/o-1;jsessionid=o-2/x",
            &[("Authorization", &auth), ok_ip]
        )
        .is_ok());
        assert_eq!(
            run(
                &w,
                "GET",
                "/partner/v1/orgs/o-2;o-1/x",
                &[("Authorization", &auth), ok_ip]
            ),
            Err(Denial::OrgForbidden)
        );
    }

    /// Counts step-6 charges, to prove a refusal came before any bucket was touched.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl SharedState<FakeRelativeClock> for Counting {
        fn charge(
            &self,
            _: &OverrideBuckets<FakeRelativeClock>,
            _: &[usize],
            _: &Principal,
        ) -> impl Future<Output = Result<Option<Headroom>, Denial>> + Send {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(None))
        }

        fn learned(&self, _: &str, _: &str) -> impl Future<Output = Result<bool, Denial>> + Send {
            std::future::ready(Ok(false))
        }
    }

    #[test]
    fn bad_identity_values_are_refused_before_any_bucket_is_charged() {
        let w = world();
        let counting = Counting::default();
        let xff = ("X-Forwarded-For", "203.0.113.5");
        let bad = Err(Denial::InvalidToken(TokenError::BadIdentity));
        let long = "p".repeat(257);
        for sub in ["acme\r\nX-Partner-Id: evil", "acme\u{85}", long.as_str()] {
            let mut c = claims();
            c["sub"] = sub.into();
            let auth = bearer(&mint(&c, Some("hs-1")));
            let got = run_on(
                &w,
                &counting,
                "GET",
                "/partner/v1/orgs",
                &[("Authorization", &auth), xff],
            );
            assert_eq!(got, bad, "{sub:?}");
        }
        let mut c = claims();
        c["org_id"] = "o-7\n".into();
        let auth = bearer(&mint(&c, Some("hs-1")));
        assert_eq!(
            run_on(&w, &counting, "GET", "/v1/orgs/o-7/a", &[("Authorization", &auth)]),
            bad
        );
        let mut c = claims();
        c["jti"] = "key\r\n1".into();
        let auth = bearer(&mint(&c, Some("hs-1")));
        assert_eq!(
            run_on(
                &w,
                &counting,
                "GET",
                "/partner/v1/orgs",
                &[("Authorization", &auth), xff]
            ),
            bad
        );
        assert_eq!(
            counting.0.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "a bucket was charged"
        );
        // the same request with a clean token is charged
        let auth = bearer(&mint(&claims(), Some("hs-1")));
        assert!(run_on(
            &w,
            &counting,
            "GET",
            "/partner/v1/orgs",
            &[("Authorization", &auth), xff]
        )
        .is_ok());
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn declared_body_too_large() {
        let w = world();
        let gate = Gate {
            fixed: &w.fixed,
            snapshot: &w.snapshot,
            tokens: &w.tokens,
            revoked: &w.revoked,
            revocations_usable: w.revocations_usable,
        };
        let headers = HeaderMap::new();
        let facts = RequestFacts {
            method: "POST",
            target: b"/nope",
            headers: &headers,
            peer: "127.0.0.1".parse().unwrap(),
            content_length: Some(2048),
            now: NOW,
        };
        assert_eq!(
            ready(decide(&gate, &w.embedded(), &facts)).unwrap_err().denial,
            Denial::BodyTooLarge { limit: 1024 }
        );
    }
}
