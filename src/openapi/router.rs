//! Which spec operation a request is for (docs/reference.md, the OpenAPI section and pipeline step 1).
//!
//! The path picks the spec path first, then the method picks the operation; a path the spec
//! has with a method it lacks is a 405 with `Allow`. Literal segments match the
//! percent-decoded request segment ASCII-case-insensitively (as the upstream's router reads
//! them); `{name}` matches one non-empty segment and captures its raw bytes; one trailing `/`
//! is ignored.
//!
//! **Precedence.** At the leftmost segment where two spec paths differ, a literal beats a
//! template. Paths are kept sorted by their shape (literal = 0, template = 1, segment by
//! segment) and the first that matches wins, which is the same rule: two paths that both
//! match a request have the same length, and at the leftmost position where their kinds
//! differ the literal one sorts first (two different literals at the same position never
//! both match). So `/a/{x}/b` and `/a/b/{y}` are **not** ambiguous: `/a/b/b` goes to
//! `/a/b/{y}`. Only paths of the same shape (same literals up to ASCII case, templates in the
//! same places, e.g. `/a/{x}` and `/a/{y}`) can match the same requests; they are merged into
//! one path whose methods are the union, and a method that two of them document is an
//! ambiguity (the compiler reports it, naming both operations).

use std::borrow::Cow;

use crate::path_text::decode_segment;

/// One segment of a spec path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// Compared with the percent-decoded request segment, ASCII-case-insensitively.
    Literal(String),
    /// `{name}`: one non-empty segment.
    Param(String),
}

/// A parsed spec path template (the table's `prefix` already prepended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) segs: Vec<Seg>,
}

impl Template {
    /// Parses `/orgs/{orgId}/login-links`. Only whole-segment templates are supported
    /// (`/files/{name}.json` is refused): a partial template has no single capture the
    /// ownership check could use. A trailing `/` is dropped, as requests ignore one.
    pub(crate) fn parse(path: &str) -> Result<Template, String> {
        let Some(body) = path.strip_prefix('/') else {
            return Err(format!("path {path:?} must start with '/'"));
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segs = Vec::new();
        if body.is_empty() {
            return Ok(Template { segs });
        }
        for part in body.split('/') {
            segs.push(Self::segment(path, part)?);
        }
        let names: Vec<&str> = segs
            .iter()
            .filter_map(|s| match s {
                Seg::Param(n) => Some(n.as_str()),
                Seg::Literal(_) => None,
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(format!("path {path:?}: parameter {{{name}}} appears twice"));
            }
        }
        Ok(Template { segs })
    }

    fn segment(path: &str, part: &str) -> Result<Seg, String> {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if name.is_empty() || name.contains(['{', '}']) {
                return Err(format!("path {path:?}: bad parameter {part:?}"));
            }
            return Ok(Seg::Param(name.to_string()));
        }
        if part.is_empty() {
            return Err(format!("path {path:?} has an empty segment"));
        }
        if part.contains(['{', '}']) {
            return Err(format!(
                "path {path:?}: segment {part:?} mixes text and a template (only whole-segment {{name}} is supported)"
            ));
        }
        if part.contains(['%', '?', '#', '\\', ';']) || part == "." || part == ".." {
            return Err(format!(
                "path {path:?}: segment {part:?} cannot match a request path that passes hygiene (write it unencoded, without ? # \\ ; or dot segments)"
            ));
        }
        Ok(Seg::Literal(part.to_string()))
    }

    /// The names of the `{...}` segments, in order.
    pub(crate) fn params(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Param(n) => Some(n.as_str()),
            Seg::Literal(_) => None,
        })
    }

    /// The shape two paths must share to match the same requests: literals ASCII-lower-cased,
    /// templates without their names.
    pub(crate) fn shape(&self) -> Vec<Option<String>> {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Literal(l) => Some(l.to_ascii_lowercase()),
                Seg::Param(_) => None,
            })
            .collect()
    }

    /// The precedence key: literal (0) before template (1), leftmost first.
    fn rank(&self) -> Vec<u8> {
        self.segs.iter().map(|s| u8::from(matches!(s, Seg::Param(_)))).collect()
    }
}

/// The HTTP methods an OpenAPI path item can document, in the order `Allow` lists them.
pub(crate) const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"];

/// One operation on a path: its method, its index in the compiled spec, and its own
/// names for the path's templates (paths of one shape may name them differently).
#[derive(Debug, Clone)]
struct Entry {
    method: &'static str,
    operation: usize,
    names: Vec<String>,
}

/// A spec path (all spec paths of one shape) and the operations on it.
#[derive(Debug, Clone)]
struct PathGroup {
    template: Template,
    rank: Vec<u8>,
    entries: Vec<Entry>,
    allow: String,
}

/// The routing outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome<'r, 'p> {
    /// The operation at this index of [`super::CompiledSpec::operations`], with the raw bytes
    /// of each `{name}` (as the operation names them; before the first `;` when semicolons
    /// are allowed).
    Match {
        /// Index into [`super::CompiledSpec::operations`].
        operation: usize,
        /// `(name, raw bytes)` of each `{name}` segment, in path order.
        captures: Vec<(&'r str, &'p [u8])>,
    },
    /// The path is documented, the method is not: 405, with this `Allow` header value.
    MethodNotAllowed {
        /// `GET, HEAD, POST`: precomputed per path, so a 405 allocates nothing.
        allow: &'r str,
    },
    /// No spec path matches: 404 `no_route` (unless another table routes it).
    NoMatch,
}

/// The compiled spec paths, in precedence order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    groups: Vec<PathGroup>,
}

/// Two operations that document the same method on paths of one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ambiguity {
    pub(crate) first: usize,
    pub(crate) second: usize,
}

impl Router {
    /// Builds the table from `(template, method, operation index)`; every pair of operations
    /// that could answer the same request is returned (the table keeps the first).
    pub(crate) fn build<'a>(
        ops: impl IntoIterator<Item = (&'a Template, &'static str, usize)>,
    ) -> (Router, Vec<Ambiguity>) {
        let mut groups: Vec<PathGroup> = Vec::new();
        let mut ambiguities = Vec::new();
        for (template, method, operation) in ops {
            let names = template.params().map(str::to_string).collect();
            let shape = template.shape();
            let entry = Entry {
                method,
                operation,
                names,
            };
            match groups.iter_mut().find(|g| g.template.shape() == shape) {
                Some(group) => match group.entries.iter().find(|e| e.method == method) {
                    Some(existing) => ambiguities.push(Ambiguity {
                        first: existing.operation,
                        second: operation,
                    }),
                    None => group.entries.push(entry),
                },
                None => groups.push(PathGroup {
                    rank: template.rank(),
                    template: template.clone(),
                    entries: vec![entry],
                    allow: String::new(),
                }),
            }
        }
        for group in &mut groups {
            group.allow = allow_header(&group.entries);
        }
        groups.sort_by(|a, b| a.rank.cmp(&b.rank));
        (Router { groups }, ambiguities)
    }

    /// Routes a request whose path passed hygiene (any bytes are safe: nothing panics).
    /// `semicolons`: `[server] allow_path_semicolons`; each segment is then matched and
    /// captured on its part before the first raw `;` (docs/reference.md, `allow_path_semicolons`).
    pub(crate) fn find<'r, 'p>(&'r self, method: &str, path: &'p [u8], semicolons: bool) -> RouteOutcome<'r, 'p> {
        let Some(body) = path.strip_prefix(b"/") else {
            return RouteOutcome::NoMatch;
        };
        let body = body.strip_suffix(b"/").unwrap_or(body);
        let mut parts: Vec<&'p [u8]> = Vec::new();
        if !body.is_empty() {
            for part in body.split(|&b| b == b'/') {
                parts.push(match (semicolons, part.iter().position(|&b| b == b';')) {
                    (true, Some(i)) => &part[..i],
                    _ => part,
                });
            }
        }
        let Some(group) = self.groups.iter().find(|g| matches(&g.template, &parts)) else {
            return RouteOutcome::NoMatch;
        };
        let entry = group.entries.iter().find(|e| e.method == method).or_else(|| {
            (method == "HEAD")
                .then(|| group.entries.iter().find(|e| e.method == "GET"))
                .flatten()
        });
        let Some(entry) = entry else {
            return RouteOutcome::MethodNotAllowed { allow: &group.allow };
        };
        let captured = group
            .template
            .segs
            .iter()
            .zip(&parts)
            .filter(|(s, _)| matches!(s, Seg::Param(_)));
        let captures = entry
            .names
            .iter()
            .map(String::as_str)
            .zip(captured.map(|(_, p)| *p))
            .collect();
        RouteOutcome::Match {
            operation: entry.operation,
            captures,
        }
    }
}

/// Whether the request's segments match a template.
fn matches(template: &Template, parts: &[&[u8]]) -> bool {
    template.segs.len() == parts.len()
        && template.segs.iter().zip(parts).all(|(seg, part)| match seg {
            Seg::Param(_) => !part.is_empty(),
            Seg::Literal(lit) => literal_matches(lit.as_bytes(), part),
        })
}

/// ASCII case-insensitive, on the percent-decoded segment (`/%6Frgs` is `/orgs`).
fn literal_matches(lit: &[u8], part: &[u8]) -> bool {
    if part.contains(&b'%') {
        let decoded: Cow<'_, [u8]> = decode_segment(part);
        decoded.eq_ignore_ascii_case(lit)
    } else {
        part.eq_ignore_ascii_case(lit)
    }
}

/// The documented methods, plus `HEAD` where `GET` is documented (§13), in [`METHODS`] order.
fn allow_header(entries: &[Entry]) -> String {
    let has = |m: &str| entries.iter().any(|e| e.method == m);
    METHODS
        .iter()
        .filter(|m| has(m) || (**m == "HEAD" && has("GET")))
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router(spec: &[(&str, &'static str)]) -> (Router, Vec<Ambiguity>) {
        let templates: Vec<Template> = spec.iter().map(|(p, _)| Template::parse(p).unwrap()).collect();
        Router::build(
            templates
                .iter()
                .zip(spec)
                .enumerate()
                .map(|(i, (t, (_, m)))| (t, *m, i)),
        )
    }

    fn hit(r: &Router, method: &str, path: &str) -> Option<(usize, Vec<(String, String)>)> {
        match r.find(method, path.as_bytes(), false) {
            RouteOutcome::Match { operation, captures } => Some((
                operation,
                captures
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), String::from_utf8(v.to_vec()).unwrap()))
                    .collect(),
            )),
            _ => None,
        }
    }

    fn caps(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn template_parsing() {
        assert_eq!(Template::parse("/").unwrap().segs, vec![]);
        assert_eq!(
            Template::parse("/a/{b}/").unwrap().segs,
            vec![Seg::Literal("a".into()), Seg::Param("b".into())]
        );
        assert_eq!(
            Template::parse("/a/{org-id}").unwrap().params().collect::<Vec<_>>(),
            ["org-id"]
        );
        let err = |p: &str| Template::parse(p).unwrap_err();
        assert_eq!(err("a"), "path \"a\" must start with '/'");
        assert_eq!(err("/a//b"), "path \"/a//b\" has an empty segment");
        assert_eq!(err("/a/{}"), "path \"/a/{}\": bad parameter \"{}\"");
        assert_eq!(err("/a/{x}/{x}"), "path \"/a/{x}/{x}\": parameter {x} appears twice");
        assert!(err("/f/{name}.json").contains("mixes text and a template"));
        assert!(err("/a/{b").contains("mixes text and a template"));
        for bad in ["/a%20b", "/a?b", "/a#b", "/a\\b", "/a;b", "/..", "/./x"] {
            assert!(err(bad).contains("cannot match a request path"), "{bad}");
        }
    }

    #[test]
    fn literal_beats_template_at_the_leftmost_difference() {
        let (r, amb) = router(&[
            ("/orgs/{orgId}/login-links", "POST"),
            ("/orgs/by-external-id/{externalId}", "GET"),
            ("/orgs/{orgId}", "GET"),
            ("/a/{x}/b", "GET"),
            ("/a/b/{y}", "GET"),
        ]);
        assert!(amb.is_empty());
        assert_eq!(
            hit(&r, "GET", "/orgs/by-external-id/c-1"),
            Some((1, caps(&[("externalId", "c-1")])))
        );
        assert_eq!(
            hit(&r, "POST", "/orgs/o-1/login-links"),
            Some((0, caps(&[("orgId", "o-1")])))
        );
        // "by-external-id" cannot be an org id here: at segment 2 the literal wins, and that
        // path documents only GET
        assert_eq!(
            r.find("POST", b"/orgs/by-external-id/login-links", false),
            RouteOutcome::MethodNotAllowed { allow: "GET, HEAD" }
        );
        assert_eq!(hit(&r, "GET", "/orgs/o-1"), Some((2, caps(&[("orgId", "o-1")]))));
        // `/a/b/b` matches both; the literal at position 2 decides
        assert_eq!(hit(&r, "GET", "/a/b/b"), Some((4, caps(&[("y", "b")]))));
        assert_eq!(hit(&r, "GET", "/a/c/b"), Some((3, caps(&[("x", "c")]))));
    }

    #[test]
    fn path_first_then_method() {
        let (r, _) = router(&[("/a/{x}/b", "GET"), ("/a/b/{y}", "POST")]);
        // the path picks /a/b/{y}, which has no GET: 405 even though /a/{x}/b has one
        assert_eq!(
            r.find("GET", b"/a/b/b", false),
            RouteOutcome::MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(hit(&r, "GET", "/a/c/b"), Some((0, caps(&[("x", "c")]))));
    }

    #[test]
    fn same_shape_merges_and_a_shared_method_is_ambiguous() {
        let (r, amb) = router(&[("/a/{x}", "GET"), ("/A/{y}", "POST"), ("/a/{z}", "GET")]);
        assert_eq!(amb, vec![Ambiguity { first: 0, second: 2 }]);
        assert_eq!(hit(&r, "GET", "/a/1"), Some((0, caps(&[("x", "1")]))));
        assert_eq!(hit(&r, "POST", "/a/1"), Some((1, caps(&[("y", "1")]))));
        assert_eq!(
            r.find("PUT", b"/a/1", false),
            RouteOutcome::MethodNotAllowed {
                allow: "GET, HEAD, POST"
            }
        );
        // a trailing slash in the spec is the same path
        let (_, amb) = router(&[("/a", "GET"), ("/a/", "GET")]);
        assert_eq!(amb.len(), 1);
    }

    #[test]
    fn method_not_allowed_lists_documented_methods_and_head() {
        let (r, _) = router(&[("/orgs", "POST"), ("/orgs", "GET"), ("/x", "DELETE")]);
        assert_eq!(
            r.find("PUT", b"/orgs", false),
            RouteOutcome::MethodNotAllowed {
                allow: "GET, HEAD, POST"
            }
        );
        assert_eq!(
            r.find("GET", b"/x", false),
            RouteOutcome::MethodNotAllowed { allow: "DELETE" }
        );
        assert_eq!(
            r.find("HEAD", b"/x", false),
            RouteOutcome::MethodNotAllowed { allow: "DELETE" }
        );
        // methods are case-sensitive
        assert_eq!(
            r.find("get", b"/orgs", false),
            RouteOutcome::MethodNotAllowed {
                allow: "GET, HEAD, POST"
            }
        );
        assert_eq!(r.find("GET", b"/nope", false), RouteOutcome::NoMatch);
    }

    #[test]
    fn head_matches_get_unless_documented() {
        let (r, _) = router(&[("/a", "GET"), ("/b", "GET"), ("/b", "HEAD")]);
        assert_eq!(hit(&r, "HEAD", "/a"), Some((0, vec![])));
        assert_eq!(hit(&r, "HEAD", "/b"), Some((2, vec![])));
    }

    #[test]
    fn section_4_step_1_rules() {
        let (r, _) = router(&[("/orgs/{orgId}/login-links", "POST"), ("/", "GET")]);
        // literals: ASCII case-insensitive, percent-decoded
        assert_eq!(hit(&r, "POST", "/ORGS/o/LOGIN-LINKS").map(|h| h.0), Some(0));
        assert_eq!(hit(&r, "POST", "/%6Frgs/o/login%2Dlinks").map(|h| h.0), Some(0));
        // captures keep raw bytes and case
        assert_eq!(
            hit(&r, "POST", "/orgs/Org%20A/login-links"),
            Some((0, caps(&[("orgId", "Org%20A")])))
        );
        // one trailing slash
        assert_eq!(hit(&r, "POST", "/orgs/o/login-links/").map(|h| h.0), Some(0));
        assert_eq!(hit(&r, "POST", "/orgs/o/login-links//"), None);
        assert_eq!(hit(&r, "GET", "/").map(|h| h.0), Some(1));
        assert_eq!(hit(&r, "POST", "/orgs//login-links"), None);
        assert_eq!(r.find("POST", b"orgs/o/login-links", false), RouteOutcome::NoMatch);
        assert_eq!(hit(&r, "POST", "/orgs/o/login-links/x"), None);
    }

    #[test]
    fn semicolons() {
        let (r, _) = router(&[("/orgs/{orgId}/login-links", "POST")]);
        let path = b"/orgs;v=1/o-1;jsessionid=x/login-links;y";
        assert_eq!(r.find("POST", path, false), RouteOutcome::NoMatch);
        assert_eq!(
            r.find("POST", path, true),
            RouteOutcome::Match {
                operation: 0,
                captures: vec![("orgId", &b"o-1"[..])]
            }
        );
        // a segment that is only a parameter is empty before the `;`
        assert_eq!(r.find("POST", b"/orgs/;x/login-links", true), RouteOutcome::NoMatch);
    }

    proptest! {
        #[test]
        fn never_panics_and_captures_are_whole_segments(path in proptest::collection::vec(any::<u8>(), 0..64), semi in any::<bool>()) {
            let (r, _) = router(&[("/orgs/{orgId}/login-links", "POST"), ("/orgs/by-external-id/{e}", "GET"), ("/{a}", "GET")]);
            if let RouteOutcome::Match { captures, .. } = r.find("POST", &path, semi) {
                for (_, c) in captures {
                    prop_assert!(!c.is_empty());
                    prop_assert!(!c.contains(&b'/'));
                    prop_assert!(!semi || !c.contains(&b';'));
                }
            }
            let _ = r.find("GET", &path, semi);
        }

        #[test]
        fn case_and_encoding_of_literals_do_not_change_the_route(id in "[a-zA-Z0-9_-]{1,12}", upper in any::<bool>()) {
            let (r, _) = router(&[("/orgs/{orgId}/login-links", "POST"), ("/orgs/by-external-id/{e}", "POST")]);
            let lit = if upper { "BY-EXTERNAL-ID" } else { "by-%65xternal-id" };
            let path = format!("/orgs/{lit}/{id}");
            let hit = hit(&r, "POST", &path);
            prop_assert_eq!(hit, Some((1, caps(&[("e", &id)]))));
        }
    }
}
