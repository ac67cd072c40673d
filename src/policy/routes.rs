//! Routes: ordered patterns, first match wins (docs/reference.md#routes).
//!
//! `{name}` matches one non-empty segment, a trailing `/**` zero or more further segments,
//! and one trailing `/` in the request is ignored. Literal segments are compared with the
//! percent-decoded request segment, ASCII case-insensitively, because that is how the
//! upstream's router (Express/NestJS) reads them: `/%61dmin` and `/ADMIN` cannot slip past
//! a route for `/admin`. Captures keep their bytes and case.
//!
//! Each request segment is read up to its first raw `;`, as Tomcat, Jetty and Spring route
//! it (paths with `;` only get here with `[server] allow_path_semicolons`; see
//! [`super::path::check_semicolons`]). A route for `GET` also takes `HEAD`: every mainstream
//! upstream runs the GET handler for it, so HEAD must meet the GET route's checks.

use std::sync::Arc;

use super::path::{before_params, decode_segment, encodes_unreserved};
use super::spec_routes::{self, SpecMatch, SpecOutcome, SpecRoutes};

/// Which credential a route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// No credential: steps 2-7 are skipped.
    None,
    /// A partner JWT (`partner_claim` names the partner).
    Partner,
    /// An org API key that is a JWT (`org_claim` names the org).
    Org,
    /// A static, prefixed key in a header, looked up by digest.
    ApiKey,
}

/// Shape of the errors the gateway writes on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{"statusCode", "message", "error"}` (the seed's ErrorDto).
    Dto,
    /// `{"error": "<message>"}` (the Appizer seed's shape).
    Simple,
}

/// `auth = "api_key"` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySettings {
    /// Header name as configured (used in messages and `WWW-Authenticate`).
    pub(crate) header: String,
    /// Required prefix, e.g. `org_`.
    pub(crate) prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Vec<u8>),
    Param,
}

/// A compiled route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
    rest: bool,
    params: Vec<String>,
    /// What every matching path starts with, raw: `/` and the literal segments before the
    /// first `{param}` (and the `/` that must follow them), for [`Pattern::prefix_check`].
    prefix: Box<[u8]>,
    /// How many segments `prefix` holds (all literals).
    prefix_segments: usize,
    /// The path as configured (for `authgate routes`).
    source: Box<str>,
}

impl Pattern {
    /// Compiles `/a/{b}/**`. Errors name what is wrong with the pattern.
    pub fn parse(path: &str) -> Result<Pattern, String> {
        let Some(body) = path.strip_prefix('/') else {
            return Err(format!("route path {path:?} must start with '/'"));
        };
        let mut segments = Vec::new();
        let mut params: Vec<String> = Vec::new();
        let mut rest = false;
        if body.is_empty() {
            let (prefix, prefix_segments) = literal_prefix(&segments);
            return Ok(Pattern {
                prefix,
                prefix_segments,
                segments,
                rest,
                params,
                source: path.into(),
            });
        }
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == "**" {
                if !last {
                    return Err(format!("route path {path:?}: '**' is only allowed as the last segment"));
                }
                rest = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!("route path {path:?}: bad parameter name {{{name}}}"));
                }
                if params.iter().any(|p| p == name) {
                    return Err(format!("route path {path:?}: parameter {{{name}}} appears twice"));
                }
                params.push(name.to_string());
                segments.push(Segment::Param);
            } else if part.is_empty() {
                return Err(format!("route path {path:?} has an empty segment"));
            } else if part.contains(['{', '}', '*', '%', '?', '#', '\\', ';']) || *part == "." || *part == ".." {
                // ';' too: request segments are matched on their part before ';'
                return Err(format!("route path {path:?}: segment {part:?} is not a plain literal"));
            } else {
                segments.push(Segment::Literal(part.as_bytes().to_vec()));
            }
        }
        let (prefix, prefix_segments) = literal_prefix(&segments);
        Ok(Pattern {
            prefix,
            prefix_segments,
            segments,
            rest,
            params,
            source: path.into(),
        })
    }

    /// What the literal prefix says before the segment-by-segment match. A refusal: the
    /// path is shorter than the prefix, or differs from it (ASCII case aside) where it has
    /// no `%` or `;`, the only bytes through which a different spelling could still match
    /// (a percent-escape or a path parameter only make a segment longer, never shorter).
    /// A skip: the path spells the prefix and the prefix ends at a segment boundary (a
    /// `{param}` follows), so its literal segments match as the segment match would find
    /// them (no `%`, no `;`, the same bytes) and that match may start after them.
    fn prefix_check<'p>(&self, path: &'p [u8]) -> PrefixCheck<'p> {
        let Some((head, rest)) = path.split_at_checked(self.prefix.len()) else {
            return PrefixCheck::Refused;
        };
        if head.eq_ignore_ascii_case(&self.prefix) {
            if self.prefix.ends_with(b"/") {
                return PrefixCheck::Skip(rest);
            }
        } else if !head.iter().any(|&b| b == b'%' || b == b';') {
            return PrefixCheck::Refused;
        }
        PrefixCheck::Unknown
    }

    /// The path as configured.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The name of capture `i`.
    pub fn param_name(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    /// Whether the path percent-encodes an unreserved character in a segment this pattern
    /// does not capture with `{name}` (a literal, or the `/**` tail): those are the segments
    /// an upstream router may read differently (docs/reference.md#reading-requests). A
    /// capture is compared percent-decoded (step 7), as every framework decodes parameters.
    pub fn encodes_unreserved_outside_captures(&self, path: &[u8]) -> bool {
        let body = path.strip_prefix(b"/").unwrap_or(path);
        body.split(|&b| b == b'/')
            .enumerate()
            .any(|(i, seg)| !matches!(self.segments.get(i), Some(Segment::Param)) && encodes_unreserved(seg))
    }

    /// Index of a `{name}` capture, if the pattern has it.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p == name)
    }

    /// Matches a path that passed hygiene; returns the raw bytes of the wanted capture.
    fn matches<'p>(&self, path: &'p [u8], want: Option<usize>) -> Option<Option<&'p [u8]>> {
        match self.prefix_check(path) {
            PrefixCheck::Refused => None,
            PrefixCheck::Skip(rest) => self.match_from(self.prefix_segments, rest, want),
            PrefixCheck::Unknown => self.match_segments(path, want),
        }
    }

    /// [`Pattern::matches`] without the prefix refusal: segment by segment.
    fn match_segments<'p>(&self, path: &'p [u8], want: Option<usize>) -> Option<Option<&'p [u8]>> {
        self.match_from(0, path.strip_prefix(b"/")?, want)
    }

    /// Segments `skip..` against `body` (the path after its leading `/`, or after the
    /// literal prefix when `skip` counts the prefix's segments, all literals).
    fn match_from<'p>(&self, skip: usize, body: &'p [u8], want: Option<usize>) -> Option<Option<&'p [u8]>> {
        let body = body.strip_suffix(b"/").unwrap_or(body);
        let mut parts = body.split(|&b| b == b'/').filter(|_| !body.is_empty());
        let mut captured = None;
        let mut param_no = 0;
        for seg in &self.segments[skip..] {
            let part = before_params(parts.next()?);
            match seg {
                Segment::Literal(lit) => {
                    let same = part.eq_ignore_ascii_case(lit)
                        || (part.contains(&b'%') && decode_segment(part).eq_ignore_ascii_case(lit));
                    if !same {
                        return None;
                    }
                }
                Segment::Param => {
                    if part.is_empty() {
                        return None;
                    }
                    if want == Some(param_no) {
                        captured = Some(part);
                    }
                    param_no += 1;
                }
            }
        }
        if !self.rest && parts.next().is_some() {
            return None;
        }
        Some(captured)
    }
}

/// What [`Pattern::prefix_check`] found.
enum PrefixCheck<'p> {
    /// The path cannot match.
    Refused,
    /// The literal prefix matched whole segments; the rest of the path after it.
    Skip(&'p [u8]),
    /// Only the segment match can tell.
    Unknown,
}

/// `/` and the literal segments up to the first `{param}`, with the `/` before that param,
/// and how many segments that is.
fn literal_prefix(segments: &[Segment]) -> (Box<[u8]>, usize) {
    let mut prefix = vec![b'/'];
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            prefix.push(b'/');
        }
        match seg {
            Segment::Literal(lit) => prefix.extend_from_slice(lit),
            Segment::Param => return (prefix.into(), i),
        }
    }
    (prefix.into(), segments.len())
}

/// One validated `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the table (indexes per-route metrics).
    pub index: usize,
    /// The configured name (a metric label value).
    pub name: Arc<str>,
    pub pattern: Pattern,
    /// Exact, case-sensitive method (`GET` also takes `HEAD`); `None` = any.
    pub method: Option<String>,
    pub auth: AuthKind,
    /// Capture index of `org_param`.
    pub org_param: Option<usize>,
    /// Indexes into the limit table, in the order the route lists them.
    pub limits: Vec<usize>,
    /// JSON pointer of `learn_org_from_response`.
    pub learn_org_pointer: Option<String>,
    /// Present on `auth = "api_key"` routes.
    pub api_key: Option<ApiKeySettings>,
    pub error_format: ErrorFormat,
}

/// The result of routing: the route, the raw `org_param` capture, and for a spec operation
/// the operation and its captures.
#[derive(Debug, Clone)]
pub struct RouteMatch<'r, 'p> {
    pub route: &'r Route,
    pub org_capture: Option<&'p [u8]>,
    /// Set when the route is an operation of an `[[openapi]]` spec.
    pub spec: Option<SpecMatch<'r, 'p>>,
}

/// Where step 1 sends a request.
#[derive(Debug)]
pub enum Routed<'r, 'p> {
    Matched(RouteMatch<'r, 'p>),
    /// A path a spec documents, with a method it does not: 405 with this `Allow` value.
    MethodNotAllowed(&'r str),
    /// 404.
    NoRoute,
}

/// Whether a request method meets a route's method: exactly, or `HEAD` on a `GET` route.
pub fn method_matches(route: &str, request: &str) -> bool {
    route == request || (route == "GET" && request == "HEAD")
}

/// All routes: `[[routes]]` in config order, then the operations of each `[[openapi]]` spec.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    specs: Vec<SpecRoutes>,
}

impl RouteTable {
    /// Wraps routes already validated and numbered in order.
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable {
            routes,
            specs: Vec::new(),
        }
    }

    /// `routes` (hand-written first, then every spec operation, numbered in order) and the
    /// specs that route to their operations.
    pub fn with_specs(routes: Vec<Route>, specs: Vec<SpecRoutes>) -> Self {
        RouteTable { routes, specs }
    }

    /// Step 1: the first `[[routes]]` entry whose method and path match, else the spec
    /// operation for the path and method (or 405 when a spec has the path but not the
    /// method), else 404. `semicolons` is `[server] allow_path_semicolons`.
    pub fn route<'r, 'p>(&'r self, method: &str, path: &'p [u8], semicolons: bool) -> Routed<'r, 'p> {
        if let Some(m) = self.find(method, path) {
            return Routed::Matched(m);
        }
        match spec_routes::route(&self.specs, method, path, semicolons) {
            SpecOutcome::Matched(index, m) => match self.routes.get(index) {
                Some(route) => Routed::Matched(RouteMatch {
                    route,
                    org_capture: route.org_param.and_then(|i| m.captures.get(i)).map(|c| c.1),
                    spec: Some(m),
                }),
                None => Routed::NoRoute,
            },
            SpecOutcome::MethodNotAllowed(allow) => Routed::MethodNotAllowed(allow),
            SpecOutcome::NoMatch => Routed::NoRoute,
        }
    }

    /// The specs, in config order.
    pub fn specs(&self) -> &[SpecRoutes] {
        &self.specs
    }

    /// The spec operation that is route `index`, with its spec's `validate` mode.
    pub fn operation(&self, index: usize) -> Option<(&crate::openapi::Operation, spec_routes::ValidateMode)> {
        self.specs
            .iter()
            .find_map(|s| s.operation(index).map(|op| (op, s.validate())))
    }

    /// How many routes are `[[routes]]` entries (the spec operations come after them).
    pub fn hand_written(&self) -> usize {
        self.specs
            .first()
            .map_or(self.routes.len(), |s| s.first().min(self.routes.len()))
    }

    /// The first `[[routes]]` entry whose method and path match.
    pub fn find<'r, 'p>(&'r self, method: &str, path: &'p [u8]) -> Option<RouteMatch<'r, 'p>> {
        self.routes[..self.hand_written()].iter().find_map(|route| {
            if route.method.as_deref().is_some_and(|m| !method_matches(m, method)) {
                return None;
            }
            let captured = route.pattern.matches(path, route.org_param)?;
            Some(RouteMatch {
                route,
                org_capture: captured,
                spec: None,
            })
        })
    }

    /// The route with this index (as recorded in a request's context).
    pub(crate) fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// Routes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(index: usize, name: &str, path: &str, method: Option<&str>, org_param: Option<&str>) -> Route {
        let pattern = Pattern::parse(path).unwrap();
        let org_param = org_param.map(|p| pattern.param_index(p).unwrap());
        Route {
            index,
            name: name.into(),
            pattern,
            method: method.map(str::to_string),
            auth: AuthKind::Partner,
            org_param,
            limits: vec![],
            learn_org_pointer: None,
            api_key: None,
            error_format: ErrorFormat::Dto,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route(
                0,
                "by-external-id",
                "/partner/v1/orgs/by-external-id/{external_id}",
                None,
                None,
            ),
            route(
                1,
                "login-links",
                "/partner/v1/orgs/{org_id}/login-links",
                Some("POST"),
                Some("org_id"),
            ),
            route(2, "org-scoped", "/partner/v1/orgs/{org_id}/**", None, Some("org_id")),
            route(3, "orgs", "/partner/v1/orgs", None, None),
            route(4, "health", "/health", None, None),
            route(5, "root", "/", Some("GET"), None),
        ])
    }

    fn find(method: &str, path: &str) -> Option<(String, Option<String>)> {
        let t = table();
        t.find(method, path.as_bytes()).map(|m| {
            (
                m.route.name.to_string(),
                m.org_capture.map(|c| String::from_utf8_lossy(c).into_owned()),
            )
        })
    }

    fn hit(name: &str, org: Option<&str>) -> Option<(String, Option<String>)> {
        Some((name.to_string(), org.map(str::to_string)))
    }

    #[test]
    fn encoded_unreserved_characters_pass_only_in_captures() {
        let p = Pattern::parse("/orgs/{org_id}/links/**").unwrap();
        for (path, outside) in [
            ("/orgs/%61cme/links", false),
            ("/orgs/%61%62/links/x", false),
            ("/orgs/acme/link%73", true),
            ("/org%73/acme/links", true),
            ("/orgs/acme/links/x%2Dy", true),
            ("/orgs/acme/links/a%20b", false),
            ("/orgs/acme/links", false),
        ] {
            assert_eq!(
                p.encodes_unreserved_outside_captures(path.as_bytes()),
                outside,
                "{path}"
            );
        }
    }

    #[test]
    fn table_of_matches() {
        let cases = [
            (
                "GET",
                "/partner/v1/orgs/by-external-id/cust-1",
                hit("by-external-id", None),
            ),
            (
                "GET",
                "/partner/v1/orgs/by-external-id/cust-1/",
                hit("by-external-id", None),
            ),
            (
                "GET",
                "/partner/v1/orgs/by-external-id/c/extra",
                hit("org-scoped", Some("by-external-id")),
            ),
            (
                "GET",
                "/partner/v1/orgs/by-external-id",
                hit("org-scoped", Some("by-external-id")),
            ),
            (
                "POST",
                "/partner/v1/orgs/o1/login-links",
                hit("login-links", Some("o1")),
            ),
            ("GET", "/partner/v1/orgs/o1/login-links", hit("org-scoped", Some("o1"))),
            ("post", "/partner/v1/orgs/o1/login-links", hit("org-scoped", Some("o1"))),
            ("GET", "/partner/v1/orgs/o1", hit("org-scoped", Some("o1"))),
            ("GET", "/partner/v1/orgs/o1/", hit("org-scoped", Some("o1"))),
            ("GET", "/partner/v1/orgs/o1/a/b/c", hit("org-scoped", Some("o1"))),
            ("GET", "/partner/v1/orgs/%6F1/x", hit("org-scoped", Some("%6F1"))),
            ("GET", "/partner/v1/orgs", hit("orgs", None)),
            ("GET", "/partner/v1/orgs/", hit("orgs", None)),
            ("GET", "/partner/v1/%6Frgs", hit("orgs", None)),
            ("GET", "/PARTNER/V1/ORGS", hit("orgs", None)),
            ("GET", "/partner/v1/%4Frgs", hit("orgs", None)),
            (
                "POST",
                "/partner/v1/orgs/O1/LOGIN-LINKS",
                hit("login-links", Some("O1")),
            ),
            (
                "POST",
                "/Partner/V1/Orgs/Ab/Login-Links/",
                hit("login-links", Some("Ab")),
            ),
            (
                "GET",
                "/partner/v1/orgs/BY-EXTERNAL-ID/Cust-1",
                hit("by-external-id", None),
            ),
            ("GET", "/HEALTH", hit("health", None)),
            ("GET", "/partner/v1/orgsX", None),
            ("GET", "/partner/v2/orgs", None),
            ("GET", "/partner/v1", None),
            ("GET", "/health", hit("health", None)),
            ("GET", "/health/extra", None),
            ("GET", "/", hit("root", None)),
            ("POST", "/", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(find(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn head_takes_get_routes_and_segments_are_cut_at_semicolons() {
        let cases = [
            // HEAD takes the GET route; no other method does
            ("HEAD", "/", hit("root", None)),
            ("OPTIONS", "/", None),
            ("HEAD", "/partner/v1/orgs/o1/login-links", hit("org-scoped", Some("o1"))),
            // each segment is read up to its first ';' (Tomcat/Spring), captures too
            (
                "POST",
                "/partner;x/v1/orgs/o1;a=b/login-links;c",
                hit("login-links", Some("o1")),
            ),
            (
                "GET",
                "/partner/v1/orgs/o1;jsessionid=2/x",
                hit("org-scoped", Some("o1")),
            ),
            ("GET", "/health;x", hit("health", None)),
            (
                "GET",
                "/partner/v1/orgs/by-external-id/c;x",
                hit("by-external-id", None),
            ),
            // %3B is data, not a parameter: the literal does not match
            ("GET", "/health%3Bx", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(find(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn pattern_errors() {
        for bad in [
            "a",
            "/a/**/b",
            "/a/{}",
            "/a/{1x}",
            "/a//b",
            "/a/{x}/{x}",
            "/a/%2F",
            "/a/../b",
            "/a/b*",
            "/a;b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Pattern::parse("/**").is_ok());
        assert!(Pattern::parse("/").is_ok());
    }

    #[test]
    fn rest_matches_zero_or_more() {
        let p = Pattern::parse("/public/**").unwrap();
        assert!(p.matches(b"/public", None).is_some());
        assert!(p.matches(b"/public/", None).is_some());
        assert!(p.matches(b"/public/a/b", None).is_some());
        assert!(p.matches(b"/publicx", None).is_none());
        let all = Pattern::parse("/**").unwrap();
        assert!(all.matches(b"/", None).is_some());
        assert!(all.matches(b"/x/y", None).is_some());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::policy::path::props::path_bytes;
    use proptest::prelude::*;

    /// Paths made of the patterns' own segments (and near misses: a case, an escape, a `;`
    /// parameter, an empty segment, a trailing slash), so most of them reach the
    /// segment match rather than the prefix refusal.
    fn route_shaped_path() -> impl Strategy<Value = Vec<u8>> {
        let seg = prop_oneof![
            Just("a"),
            Just("A"),
            Just("b"),
            Just("ab"),
            Just("0"),
            Just("x"),
            Just(""),
            Just("%61"),
            Just("a;p=1"),
            Just(";"),
            Just(".."),
        ];
        (proptest::collection::vec(seg, 0..6), any::<bool>()).prop_map(|(segs, trailing)| {
            let mut p = format!("/{}", segs.join("/"));
            if trailing {
                p.push('/');
            }
            p.into_bytes()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Route matching never panics on anything hygiene accepts, and a capture is
        /// always one segment's whole, non-empty part before its first `;`.
        #[test]
        fn matching_never_panics(p in path_bytes()) {
            if crate::policy::path::check(&p).is_ok() {
                let routes = ["/a/{x}/b", "/{x}/**", "/{x}", "/**"].iter().enumerate().map(|(i, pat)| {
                    let pattern = Pattern::parse(pat).unwrap();
                    Route {
                        index: i,
                        name: (*pat).into(),
                        org_param: pattern.param_index("x"),
                        pattern,
                        method: None,
                        auth: AuthKind::Partner,
                        limits: vec![],
                        learn_org_pointer: None,
                        api_key: None,
                        error_format: ErrorFormat::Dto,
                    }
                }).collect();
                let table = RouteTable::new(routes);
                let m = table.find("GET", &p);
                prop_assert!(m.is_some(), "/** matches everything");
                if let Some(c) = m.and_then(|m| m.org_capture) {
                    prop_assert!(!c.is_empty() && !c.contains(&b'/') && !c.contains(&b';'));
                    prop_assert!(p.split(|&b| b == b'/').any(|seg| before_params(seg) == c));
                }
            }
        }

        /// Fault model: the prefix refusal turns away a path that the segment match would
        /// take (a percent-escape, a `;` parameter, a case or trailing-slash spelling).
        /// Must hold: whenever it refuses, the full match refuses too, on any bytes at all.
        #[test]
        fn the_prefix_refusal_never_refuses_a_match(p in path_bytes(), upper in any::<bool>()) {
            let p = if upper { p.to_ascii_uppercase() } else { p };
            for pat in ["/a/{x}/b", "/a/b", "/a/b/**", "/a/**", "/{x}/a", "/ab/c", "/a", "/", "/**", "/0/{x}/{y}"] {
                let pattern = Pattern::parse(pat).unwrap();
                if matches!(pattern.prefix_check(&p), PrefixCheck::Refused) {
                    prop_assert!(pattern.match_segments(&p, None).is_none(), "{pat} refused {:?}", String::from_utf8_lossy(&p));
                }
            }
        }

        /// Fault model: starting the segment match after the literal prefix skips a check
        /// the full match makes (a trailing slash, an empty capture, a segment count), or
        /// captures different bytes. Must hold: `matches` answers exactly as the full
        /// segment match, capture included, on any bytes at all.
        #[test]
        fn the_prefix_skip_answers_as_the_full_match(
            p in prop_oneof![path_bytes(), route_shaped_path()],
            upper in any::<bool>(),
        ) {
            let p = if upper { p.to_ascii_uppercase() } else { p };
            for pat in ["/a/{x}/b", "/a/b", "/a/b/**", "/a/{x}/**", "/{x}/a", "/ab/{x}", "/a/{x}", "/", "/**", "/0/{x}/{y}"] {
                let pattern = Pattern::parse(pat).unwrap();
                for want in [None, Some(0), Some(1)] {
                    prop_assert_eq!(
                        pattern.matches(&p, want),
                        pattern.match_segments(&p, want),
                        "{} on {:?}", pat, String::from_utf8_lossy(&p)
                    );
                }
            }
        }
    }
}
