//! `[[openapi]]` (docs/reference.md#openapi): each table's spec is read and compiled, and
//! every operation becomes a route named by its `operationId`, numbered after the
//! `[[routes]]` entries. Its route keys come, in rising precedence, from the table's
//! `defaults`, the operation's `x-authgate` object and the `[[openapi.operations]]` overlay
//! with its id, key by key; the result is validated exactly like a `[[routes]]` entry.
//! Spec problems are reported where they are: `spec.yaml:line: message`.

use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::routes::{route, route_upstream};
use super::Ctx;
use crate::config::file::{OpenApiFile, OperationFile, RouteFile, RouteKeysFile};
use crate::config::problem::Problem;
use crate::config::settings::{ClusterSettings, RouteUpstream};
use crate::openapi::{self, CompileOptions, CompiledSpec, Operation, SpecLocation, Switches};
use crate::policy::rate_limit::LimitDef;
use crate::policy::routes::Route;
use crate::policy::spec_routes::{SpecRoutes, ValidateMode, HELD_BODY_MAX};

/// What the specs add to the route table: the specs, and their operations' routes and
/// upstreams appended to `routes` / `upstreams` (same indexes).
pub(super) fn tables(
    c: &mut Ctx<'_, '_>,
    tables: &[Spanned<OpenApiFile>],
    limits: &[LimitDef],
    clusters: &[ClusterSettings],
    routes: &mut Vec<Route>,
    upstreams: &mut Vec<RouteUpstream>,
) -> Vec<SpecRoutes> {
    let mut specs = Vec::new();
    for t in tables {
        let held_body_max = held_body_max(c, t.get_ref().held_body_max.as_ref());
        let Some((spec, validate)) = compile(c, t) else {
            continue;
        };
        let first = routes.len();
        let table = Table {
            file: t.get_ref(),
            span: t.span(),
            spec: &spec,
        };
        for op in spec.operations() {
            let rt = table.route_file(c, op);
            upstreams.push(route_upstream(c, &rt, clusters));
            if let Some(r) = route(c, routes.len(), &rt, limits, routes) {
                routes.push(r);
            } else {
                upstreams.pop();
            }
        }
        table.check_overlays(c);
        specs.push(SpecRoutes::new(Arc::new(spec), first, validate, held_body_max));
    }
    specs
}

/// Reads and compiles one table's spec; `None` (with problems reported) when it cannot.
fn compile(c: &mut Ctx<'_, '_>, t: &Spanned<OpenApiFile>) -> Option<(CompiledSpec, ValidateMode)> {
    let file = t.get_ref();
    let validate = validate_mode(c, file.validate.as_ref());
    let prefix = match &file.prefix {
        None => "",
        Some(p) => match openapi::check_prefix(p.get_ref()) {
            Ok(ok) => ok,
            Err(e) => {
                c.r.at(p.span(), format!("openapi.prefix: {e}"));
                return None;
            }
        },
    };
    let options = CompileOptions {
        prefix: prefix.to_string(),
        validate_off: validate == ValidateMode::Off,
        defaults: file
            .defaults
            .as_ref()
            .map_or_else(Switches::default, |d| switches(c, d.span(), d.get_ref())),
        overlays: file
            .operations
            .iter()
            .map(|o| {
                let keys = RouteKeysFile::from(o.get_ref());
                (o.get_ref().id.get_ref().clone(), switches(c, o.span(), &keys))
            })
            .collect(),
    };
    let path = c.path(file.spec.get_ref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            c.r.at(
                file.spec.span(),
                format!("openapi.spec: cannot read {}: {e}", path.display()),
            );
            return None;
        }
    };
    match openapi::compile_with(&path, &text, &options) {
        Ok(spec) => Some((spec, validate)),
        Err(problems) => {
            for p in problems {
                c.r.elsewhere(spec_problem(&p.at, p.message));
            }
            None
        }
    }
}

/// `validate`: `"enforce"` (default), `"report"`, `"off"`.
fn validate_mode(c: &mut Ctx<'_, '_>, v: Option<&Spanned<String>>) -> ValidateMode {
    let choices = [
        ("enforce", ValidateMode::Enforce),
        ("report", ValidateMode::Report),
        ("off", ValidateMode::Off),
    ];
    c.choice(v, "openapi.validate:", &choices)
        .unwrap_or(ValidateMode::Enforce)
}

/// `held_body_max`: a size with a unit, at most 64 KiB (pingora 0.9 forwards at most that
/// much of a body read before the upstream request: its retry buffer).
fn held_body_max(c: &mut Ctx<'_, '_>, v: Option<&Spanned<String>>) -> u64 {
    let Some(v) = v else { return HELD_BODY_MAX };
    match parse_size(v.get_ref()) {
        Ok(0) => c.r.at(v.span(), "openapi.held_body_max: must be at least 1 byte"),
        Ok(n) if n > HELD_BODY_MAX => c.r.at(
            v.span(),
            format!(
                "openapi.held_body_max: {:?} is more than 64KiB: pingora 0.9 forwards at most 64 KiB of a body read before the upstream request (its retry buffer)",
                v.get_ref()
            ),
        ),
        Ok(n) => return n,
        Err(e) => c.r.at(v.span(), format!("openapi.held_body_max: {e}")),
    }
    HELD_BODY_MAX
}

/// A byte size: a whole number with a unit, `B`, `KiB` or `MiB` (`"64KiB"`, `"4096B"`).
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let scale = match unit.trim_start() {
        "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{text:?} is not a size with a unit (B, KiB, MiB), e.g. \"64KiB\""
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a size with a unit (B, KiB, MiB), e.g. \"64KiB\""))
}

/// The compile switches a key set (`defaults`, an overlay) sets; `validate` may only be
/// `"off"` there (per operation, `report` and `enforce` are the table's to say).
fn switches(c: &mut Ctx<'_, '_>, span: std::ops::Range<usize>, keys: &RouteKeysFile) -> Switches {
    if let Some(v) = keys.validate.as_deref().filter(|v| *v != "off") {
        c.r.at(span, validate_only_off(v));
    }
    Switches {
        validate_off: keys.validate.as_deref().map(|v| v == "off"),
        allow_backtracking_patterns: keys.allow_backtracking_patterns,
    }
}

fn validate_only_off(v: &str) -> String {
    format!(
        "validate = {v:?}: an operation may only turn its validation \"off\"; \"enforce\" and \"report\" are the [[openapi]] table's validate"
    )
}

/// A problem at a place in a spec file: `file:line`, or `file#/pointer` without a line.
fn spec_problem(at: &SpecLocation, message: String) -> Problem {
    match at.line {
        Some(line) => Problem {
            file: at.file.clone(),
            line: Some(line),
            message,
        },
        None => Problem {
            file: Path::new(&format!("{}#{}", at.file.display(), at.pointer)).to_path_buf(),
            line: None,
            message,
        },
    }
}

/// One `[[openapi]]` table while its operations become routes.
struct Table<'a> {
    file: &'a OpenApiFile,
    span: std::ops::Range<usize>,
    spec: &'a CompiledSpec,
}

impl Table<'_> {
    /// The overlay entry for an operation.
    fn overlay(&self, id: &str) -> Option<&Spanned<OperationFile>> {
        self.file.operations.iter().find(|o| o.get_ref().id.get_ref() == id)
    }

    /// The operation's route as a `[[routes]]` entry: its name, method and path from the
    /// spec, its keys merged from defaults, `x-authgate` and the overlay. Problems found
    /// here are placed where the key was written (a key of `x-authgate` at its spec line).
    fn route_file(&self, c: &mut Ctx<'_, '_>, op: &Operation) -> RouteFile {
        let overlay = self.overlay(op.id());
        let span = overlay.map_or(self.span.clone(), |o| o.span());
        let mut keys = self
            .file
            .defaults
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default();
        if let Some((value, at)) = op.x_authgate() {
            match serde_json::from_value::<RouteKeysFile>(value.clone()) {
                Ok(x) => {
                    if let Some(v) = x.validate.as_deref().filter(|v| *v != "off") {
                        let message = format!("{}: x-authgate: {}", op.id(), validate_only_off(v));
                        c.r.elsewhere(spec_problem(at, message));
                    }
                    keys = keys.under(x);
                }
                Err(e) => c.r.elsewhere(spec_problem(at, format!("{}: x-authgate: {e}", op.id()))),
            }
        }
        if let Some(o) = overlay {
            keys = keys.under(RouteKeysFile::from(o.get_ref()));
        }
        if keys.upstream.is_none() {
            keys.upstream = self.file.upstream.as_ref().map(|u| u.get_ref().clone());
        }
        if keys.auth.is_none() {
            c.r.at(
                span.clone(),
                format!(
                    "openapi: operation {:?} ({}) has no auth: set it in defaults, its x-authgate or an [[openapi.operations]] entry",
                    op.id(),
                    op.location()
                ),
            );
        }
        keys.into_route(op, span)
    }

    /// Every overlay names an operation of the spec, once.
    fn check_overlays(&self, c: &mut Ctx<'_, '_>) {
        for (i, o) in self.file.operations.iter().enumerate() {
            let id = o.get_ref().id.get_ref();
            if !self.spec.operations().iter().any(|op| op.id() == id) {
                c.r.at(
                    o.get_ref().id.span(),
                    format!(
                        "openapi.operations: {id:?} is not an operationId of {}",
                        self.spec.file().display()
                    ),
                );
            } else if self.file.operations[..i].iter().any(|e| e.get_ref().id.get_ref() == id) {
                c.r.at(
                    o.get_ref().id.span(),
                    format!("openapi.operations: {id:?} has two entries"),
                );
            }
        }
    }
}

impl From<&OperationFile> for RouteKeysFile {
    fn from(o: &OperationFile) -> RouteKeysFile {
        RouteKeysFile {
            auth: o.auth.clone(),
            limits: o.limits.clone(),
            org_param: o.org_param.clone(),
            learn_org_from_response: o.learn_org_from_response.clone(),
            read_timeout: o.read_timeout.clone(),
            upstream: o.upstream.clone(),
            websocket: o.websocket,
            error_format: o.error_format.clone(),
            api_key_header: o.api_key_header.clone(),
            api_key_prefix: o.api_key_prefix.clone(),
            validate: o.validate.clone(),
            allow_backtracking_patterns: o.allow_backtracking_patterns,
        }
    }
}

impl RouteKeysFile {
    /// These keys with `over`'s set keys replacing them, key by key (a list replaces a list).
    fn under(self, over: RouteKeysFile) -> RouteKeysFile {
        RouteKeysFile {
            auth: over.auth.or(self.auth),
            limits: over.limits.or(self.limits),
            org_param: over.org_param.or(self.org_param),
            learn_org_from_response: over.learn_org_from_response.or(self.learn_org_from_response),
            read_timeout: over.read_timeout.or(self.read_timeout),
            upstream: over.upstream.or(self.upstream),
            websocket: over.websocket.or(self.websocket),
            error_format: over.error_format.or(self.error_format),
            api_key_header: over.api_key_header.or(self.api_key_header),
            api_key_prefix: over.api_key_prefix.or(self.api_key_prefix),
            validate: over.validate.or(self.validate),
            allow_backtracking_patterns: over.allow_backtracking_patterns.or(self.allow_backtracking_patterns),
        }
    }

    /// The `[[routes]]` entry these keys make for `op`, every value placed at `span`.
    fn into_route(self, op: &Operation, span: std::ops::Range<usize>) -> RouteFile {
        let at = |v: String| Spanned::new(span.clone(), v);
        RouteFile {
            name: at(op.id().to_string()),
            path: at(op.path().to_string()),
            method: Some(at(op.method().to_string())),
            auth: at(self.auth.unwrap_or_else(|| "none".into())),
            org_param: self.org_param.map(at),
            limits: self.limits.unwrap_or_default().into_iter().map(at).collect(),
            learn_org_from_response: self.learn_org_from_response.map(at),
            api_key_header: self.api_key_header.map(at),
            api_key_prefix: self.api_key_prefix,
            error_format: self.error_format.map(at),
            upstream: self.upstream.map(at),
            read_timeout: self.read_timeout.map(at),
            websocket: self.websocket,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("4096B"), Ok(4_096));
        assert_eq!(parse_size(" 1 MiB "), Ok(1_048_576));
        for bad in ["64", "64kb", "KiB", "-1KiB", "1.5KiB", "", "99999999999999999999MiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
