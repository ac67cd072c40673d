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
use crate::openapi::{self, CompiledSpec, Operation, SpecLocation};
use crate::policy::rate_limit::LimitDef;
use crate::policy::routes::Route;
use crate::policy::spec_routes::{SpecRoutes, ValidateMode};

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
        specs.push(SpecRoutes::new(Arc::new(spec), first, validate));
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
    match openapi::compile(&path, &text, prefix) {
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
                Ok(x) => keys = keys.under(x),
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
