//! `[[routes]]` (docs/reference.md#routes): which requests the gateway takes, how each is
//! authenticated and limited, and where it goes.
//!
//! [`route`] and [`route_upstream`] are the per-route entry points: every route, whether
//! written in `[[routes]]` or derived from another source, is validated by them, so a route
//! means the same wherever it came from and its problems read the same.

use std::fmt::Display;
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::{defaults, Ctx};
use crate::config::file::RouteFile;
use crate::config::settings::{ClusterSettings, RouteUpstream};
use crate::policy::rate_limit::LimitDef;
use crate::policy::routes::{ApiKeySettings, AuthKind, ErrorFormat, Pattern, Route};

/// `[[routes]]` (the caller requires it or `[[openapi]]`): each entry through [`route_upstream`] and [`route`]. Returns
/// the usable routes and, beside each, where it forwards.
pub(super) fn routes(
    c: &mut Ctx<'_, '_>,
    list: &[Spanned<RouteFile>],
    limits: &[LimitDef],
    clusters: &[ClusterSettings],
) -> (Vec<Route>, Vec<RouteUpstream>) {
    let mut routes = Vec::new();
    let mut route_upstreams = Vec::new();
    for (index, rt) in list.iter().enumerate() {
        let target = route_upstream(c, rt.get_ref(), clusters);
        if let Some(route) = route(c, index, rt.get_ref(), limits, &routes) {
            routes.push(route);
            route_upstreams.push(target);
        }
    }
    (routes, route_upstreams)
}

/// One route entry, validated. `index` is its position among the routes (the route table
/// and the metrics know it by that), `limits` the validated `[[limits]]` its `limits` name,
/// `earlier` the routes accepted before it (names are unique). Every problem is reported to
/// `c` at the line of the key at fault, as `routes.<name>: ...`; `None` when the route
/// cannot be used (then the config is refused).
pub(crate) fn route(
    c: &mut Ctx<'_, '_>,
    index: usize,
    rt: &RouteFile,
    limits: &[LimitDef],
    earlier: &[Route],
) -> Option<Route> {
    let name = rt.name.get_ref();
    let named = route_name(c, &rt.name, earlier);
    let mut k = Checking { c, name, ok: named };
    let pattern = match Pattern::parse(rt.path.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            k.refuse(rt.path.span(), e);
            None
        }
    };
    let method = rt.method.as_ref().map(|m| {
        k.method(m);
        m.get_ref().clone()
    });
    let auth = k.auth(&rt.auth);
    let org_param = k.org_param(rt, pattern.as_ref(), auth);
    let route_limits = k.limits(rt, limits, auth);
    let learn = k.learn(rt, auth);
    let api_key = k.api_key(rt, auth);
    let error_format = k.error_format(rt);
    let pattern = pattern?;
    k.ok.then(|| Route {
        index,
        name: Arc::from(name.as_str()),
        pattern,
        method,
        auth,
        org_param,
        limits: route_limits,
        learn_org_pointer: learn,
        api_key,
        error_format,
    })
}

/// A route's `name`: not empty, not `none` (the metric label of unrouted requests), unique.
fn route_name(c: &mut Ctx<'_, '_>, name: &Spanned<String>, earlier: &[Route]) -> bool {
    let text = name.get_ref();
    if text.is_empty() || text == "none" {
        c.r.at(name.span(), format!("routes: name {text:?} is reserved or empty"));
        false
    } else if earlier.iter().any(|r| &*r.name == text) {
        c.r.at(name.span(), format!("routes: name {text:?} is used twice"));
        false
    } else {
        true
    }
}

/// One route under validation: its name (every message starts `routes.<name>:`) and
/// whether it is still usable.
struct Checking<'k, 'a, 'r> {
    c: &'k mut Ctx<'a, 'r>,
    name: &'k str,
    ok: bool,
}

impl Checking<'_, '_, '_> {
    /// Reports `routes.<name>: {message}` at `span`; the route is not usable.
    fn refuse(&mut self, span: Range<usize>, message: impl Display) {
        self.c.r.at(span, format!("routes.{}: {message}", self.name));
        self.ok = false;
    }

    /// `method`: an HTTP method token without a lowercase letter (requests with one are
    /// refused at step 0, `bad_method`, so such a route could never match).
    fn method(&mut self, m: &Spanned<String>) {
        let text = m.get_ref();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if text.is_empty() || !text.bytes().all(token) {
            self.refuse(m.span(), format!("method {text:?} is not an HTTP method token"));
        } else if text.bytes().any(|b| b.is_ascii_lowercase()) {
            let upper = text.to_ascii_uppercase();
            let why = format!("method {text:?} has a lowercase letter and could never match (write {upper:?})");
            self.refuse(m.span(), why);
        }
    }

    /// `auth`: who may call the route.
    fn auth(&mut self, auth: &Spanned<String>) -> AuthKind {
        let label = format!("routes.{}: auth", self.name);
        let choices = [
            ("none", AuthKind::None),
            ("partner", AuthKind::Partner),
            ("org", AuthKind::Org),
            ("api_key", AuthKind::ApiKey),
        ];
        self.c.choice(Some(auth), &label, &choices).unwrap_or_else(|| {
            self.ok = false;
            AuthKind::None
        })
    }

    /// `org_param`: a `{capture}` of the path, on an authenticated route.
    fn org_param(&mut self, rt: &RouteFile, pattern: Option<&Pattern>, auth: AuthKind) -> Option<usize> {
        let org_param = match (&rt.org_param, pattern) {
            (Some(p), Some(pat)) => match pat.param_index(p.get_ref()) {
                Some(i) => Some(i),
                None => {
                    let why = format!("org_param {:?} is not a {{capture}} of its path", p.get_ref());
                    self.refuse(p.span(), why);
                    None
                }
            },
            _ => None,
        };
        if org_param.is_some() && auth == AuthKind::None {
            self.refuse(rt.auth.span(), "org_param needs an authenticated route");
        }
        org_param
    }

    /// `limits`: names defined in `[[limits]]`, on a route with a principal to count.
    fn limits(&mut self, rt: &RouteFile, limits: &[LimitDef], auth: AuthKind) -> Vec<usize> {
        let mut route_limits = Vec::new();
        for l in &rt.limits {
            match limits.iter().position(|d| *d.name == **l.get_ref()) {
                Some(i) => route_limits.push(i),
                None => self.refuse(
                    l.span(),
                    format!("limit {:?} is not defined in [[limits]]", l.get_ref()),
                ),
            }
        }
        if !route_limits.is_empty() && auth == AuthKind::None {
            self.refuse(rt.auth.span(), "limits need a principal; auth = \"none\" has none");
        }
        route_limits
    }

    /// `learn_org_from_response`: a JSON pointer, on a partner route.
    fn learn(&mut self, rt: &RouteFile, auth: AuthKind) -> Option<String> {
        let p = rt.learn_org_from_response.as_ref()?;
        if !(p.get_ref().is_empty() || p.get_ref().starts_with('/')) {
            let why = format!("learn_org_from_response {:?} is not a JSON pointer", p.get_ref());
            self.refuse(p.span(), why);
        }
        if auth != AuthKind::Partner {
            self.refuse(p.span(), "learn_org_from_response needs auth = \"partner\"");
        }
        Some(p.get_ref().clone())
    }

    /// `api_key_header` (a header name) and `api_key_prefix`, only on `auth = "api_key"`.
    fn api_key(&mut self, rt: &RouteFile, auth: AuthKind) -> Option<ApiKeySettings> {
        if auth != AuthKind::ApiKey {
            if let Some(h) = &rt.api_key_header {
                self.refuse(h.span(), "api_key_header only applies to auth = \"api_key\"");
            }
            if rt.api_key_prefix.is_some() {
                self.refuse(rt.auth.span(), "api_key_prefix only applies to auth = \"api_key\"");
            }
            return None;
        }
        let header = rt
            .api_key_header
            .as_ref()
            .map_or(defaults::API_KEY_HEADER.to_string(), |h| h.get_ref().clone());
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            let span = rt.api_key_header.as_ref().map_or(rt.auth.span(), |h| h.span());
            self.refuse(span, format!("api_key_header {header:?} is not a header name"));
        }
        Some(ApiKeySettings {
            header,
            prefix: rt.api_key_prefix.clone().unwrap_or_default(),
        })
    }

    /// `error_format`: the shape of the route's error bodies.
    fn error_format(&mut self, rt: &RouteFile) -> ErrorFormat {
        let label = format!("routes.{}: error_format", self.name);
        let choices = [("dto", ErrorFormat::Dto), ("simple", ErrorFormat::Simple)];
        self.c
            .choice(rt.error_format.as_ref(), &label, &choices)
            .unwrap_or_else(|| {
                self.ok = false;
                ErrorFormat::Dto
            })
    }
}

/// Where one route entry forwards: its `upstream` (an existing cluster, `"default"` when
/// absent; with none of that name the first cluster stands in and the problem is reported),
/// its own `read_timeout` if any, and `websocket`. `clusters` are the validated
/// `[upstream]`/`[[upstreams]]`; the result's `cluster` indexes them.
pub(crate) fn route_upstream(c: &mut Ctx<'_, '_>, rt: &RouteFile, clusters: &[ClusterSettings]) -> RouteUpstream {
    let name = rt.name.get_ref();
    let wanted = rt.upstream.as_ref().map_or(defaults::CLUSTER, |u| u.get_ref().as_str());
    let cluster = match clusters.iter().position(|cl| &*cl.name == wanted) {
        Some(i) => i,
        None => {
            // No cluster at all is reported once, by `upstreams`.
            if !clusters.is_empty() {
                let (span, hint) = match &rt.upstream {
                    Some(u) => (u.span(), String::new()),
                    None => (
                        rt.name.span(),
                        " (set upstream = \"<cluster>\" on the route, or name a cluster \"default\")".to_string(),
                    ),
                };
                let known: Vec<&str> = clusters.iter().map(|cl| &*cl.name).collect();
                c.r.at(
                    span,
                    format!(
                        "routes.{name}: upstream {wanted:?} is not a defined cluster{hint}; defined: {}",
                        known.join(", ")
                    ),
                );
            }
            0
        }
    };
    let read_timeout = rt.read_timeout.as_ref().map(|_| {
        c.positive(
            &rt.read_timeout,
            defaults::READ_TIMEOUT,
            &format!("routes.{name}.read_timeout"),
        )
    });
    RouteUpstream {
        cluster,
        read_timeout,
        websocket: rt.websocket.unwrap_or(false),
    }
}
