//! The upstream's OpenAPI spec as the policy (docs/reference.md, the OpenAPI section): its operations become routes
//! named by `operationId`, and requests are validated against what each operation declares
//! before they reach the upstream.
//!
//! Pure: the caller reads the file and passes its text and path (for messages); nothing
//! here does I/O, and every validator is built once, in [`compile`], never per request.
//!
//! ```text
//! text --document--> JSON + lines --spec--> operations --schema/params/body--> checks
//!                                                     \--router--> spec-path table
//! ```
//!
//! Per request: [`CompiledSpec::find`] (404/405 are routing outcomes), then
//! [`Operation::check_head`] (parameters, media type; before the body is read), then, when
//! it says [`BodyPlan::Hold`], [`Operation::check_body`].

mod body;
mod document;
mod enums;
mod form;
mod json_body;
mod media;
mod operation;
mod params;
mod patterns;
mod query;
mod rejection;
mod router;
mod schema;
mod spec;
mod survey;
mod types;
mod validate;
mod wording;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use body::{BodyPlan, HeldBody};
pub use operation::{Operation, SpecLocation};
pub use rejection::{FieldError, Location, Locations, Reason, Rejection, MAX_ERRORS};
pub use router::RouteOutcome;
pub use validate::RequestHead;

use document::Document;
use router::Router;
use schema::{Components, Patterns, SchemaCompiler};
use spec::{At, RawOperation};
use validate::Validation;

/// One thing wrong with a spec, at a line (or pointer) of it. `authgate check` prints all of
/// them as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the value at fault, or the object that lacks a key.
    pub at: SpecLocation,
    /// What is wrong, naming the operation, path or value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A compiled spec: its operations (in document order) and the table that routes to them.
/// Immutable and `Send + Sync`, so it can live in the policy snapshot.
#[derive(Debug)]
pub struct CompiledSpec {
    file: PathBuf,
    operations: Vec<Operation>,
    router: Router,
    /// The validators of shared components the operations' validators delegate to.
    _components: Arc<Components>,
}

/// The switches of one operation that change how it compiles (docs/reference.md, the
/// OpenAPI section), from the config's `defaults` and `[[openapi.operations]]` entries and
/// the operation's own `x-authgate`, which [`compile_with`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// `validate = "off"` (`Some(false)` for any other value): nothing of the operation is
    /// checked, so nothing it declares needs to be checkable.
    pub validate_off: Option<bool>,
    /// `allow_backtracking_patterns`: its `pattern`s may need a backtracking engine, run on a
    /// per-request budget; without it such a pattern is a problem.
    pub allow_backtracking_patterns: Option<bool>,
}

impl Switches {
    /// These switches with `over`'s set ones replacing them.
    fn under(self, over: Switches) -> Switches {
        Switches {
            validate_off: over.validate_off.or(self.validate_off),
            allow_backtracking_patterns: over.allow_backtracking_patterns.or(self.allow_backtracking_patterns),
        }
    }

    /// The switches an `x-authgate` mapping sets (its keys' types are the config layer's to
    /// report: a value of the wrong type sets nothing here).
    fn of_x_authgate(x: &serde_json::Value) -> Switches {
        Switches {
            validate_off: x
                .get("validate")
                .and_then(serde_json::Value::as_str)
                .map(|v| v == "off"),
            allow_backtracking_patterns: x
                .get("allow_backtracking_patterns")
                .and_then(serde_json::Value::as_bool),
        }
    }
}

/// How a spec compiles beyond its own text: the table's `prefix` and `validate`, and the
/// switches the config sets per operation.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// `""` or `/a/b`, prepended to every path.
    pub prefix: String,
    /// `[[openapi]] validate = "off"`: no operation is checked.
    pub validate_off: bool,
    /// The table's `defaults`.
    pub defaults: Switches,
    /// `[[openapi.operations]]` entries, by `operationId`.
    pub overlays: Vec<(String, Switches)>,
}

impl CompileOptions {
    /// The switches of one operation: defaults, then its `x-authgate`, then its overlay.
    fn switches(&self, op: &RawOperation) -> Switches {
        let mut s = self.defaults;
        if let Some((x, _)) = &op.x_authgate {
            s = s.under(Switches::of_x_authgate(x));
        }
        if let Some((_, o)) = self.overlays.iter().find(|(id, _)| *id == op.id) {
            s = s.under(*o);
        }
        if self.validate_off {
            s.validate_off = Some(true);
        }
        s
    }
}

impl CompiledSpec {
    /// The spec file as named to [`compile`].
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The operations, in the order the spec writes them; [`RouteOutcome::Match`] indexes it.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Routes a request whose path passed hygiene (§4 step 0). `semicolons` is
    /// `[server] allow_path_semicolons` (§13). Never panics, whatever the bytes.
    pub fn find<'r, 'p>(&'r self, method: &str, path: &'p [u8], semicolons: bool) -> RouteOutcome<'r, 'p> {
        self.router.find(method, path, semicolons)
    }
}

/// Compiles a spec's text. `file` is used only in messages; `prefix` (`""` or `/a/b`) is
/// prepended to every path. Every problem is reported, not only the first.
pub fn compile(file: &Path, text: &str, prefix: &str) -> Result<CompiledSpec, Vec<Problem>> {
    let options = CompileOptions {
        prefix: prefix.to_string(),
        ..CompileOptions::default()
    };
    compile_with(file, text, &options)
}

/// [`compile`] with the switches the config sets (`validate`, `defaults`, overlays).
pub fn compile_with(file: &Path, text: &str, options: &CompileOptions) -> Result<CompiledSpec, Vec<Problem>> {
    let doc = document::parse(text).map_err(|e| {
        vec![Problem {
            at: SpecLocation::new(file, Some(e.line), ""),
            message: e.message,
        }]
    })?;
    let problem = |at: At| Problem {
        at: SpecLocation::new(file, doc.line(&at.pointer), &at.pointer),
        message: at.message,
    };
    if let Err(at) = spec::check_version(&doc.root) {
        return Err(vec![problem(at)]);
    }
    let mut found = Vec::new();
    let prefix = match check_prefix(&options.prefix) {
        Ok(p) => p,
        Err(message) => return Err(vec![problem(At::new("", message))]),
    };
    schema::check_refs(&doc.root, &mut found);
    // with a reference that cannot resolve, building validators would only repeat it
    let build = found.is_empty();
    let mut raw = spec::operations(&doc.root, prefix, &mut found);
    raw.sort_by_key(|op| doc.line(&op.pointer));
    let schemas = match build.then(|| SchemaCompiler::new(&doc.root)).transpose() {
        Ok(s) => s,
        Err(message) => return Err(vec![problem(At::new("", message))]),
    };
    let operations: Vec<Operation> = raw
        .iter()
        .map(|op| operation(file, &doc, op, schemas.as_ref(), options.switches(op), &mut found))
        .collect();
    if let Some(s) = &schemas {
        s.build_components(&mut found);
    }
    let router = route_table(&raw, &mut found);
    if !found.is_empty() {
        let mut problems: Vec<Problem> = found.into_iter().map(problem).collect();
        problems.sort_by_key(|p| p.at.line);
        problems.dedup();
        return Err(problems);
    }
    Ok(CompiledSpec {
        file: file.to_path_buf(),
        operations,
        router,
        _components: schemas.map(|s| s.components()).unwrap_or_default(),
    })
}

/// A table's `prefix` as [`compile`] uses it: `""`, or `/a/b` of literal segments (one
/// trailing `/` dropped). Public so the config layer can report a bad value at its TOML line
/// before compiling.
pub fn check_prefix(prefix: &str) -> Result<&str, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() || (trimmed.starts_with('/') && router::Template::parse(trimmed).is_ok()) {
        Ok(trimmed)
    } else {
        Err(format!(
            "prefix {prefix:?} must be empty or a path like \"/api/v1\" (no templates)"
        ))
    }
}

fn operation(
    file: &Path,
    doc: &Document,
    op: &RawOperation,
    schemas: Option<&SchemaCompiler>,
    switches: Switches,
    found: &mut Vec<At>,
) -> Operation {
    let at = |pointer: &str| SpecLocation::new(file, doc.line(pointer), pointer);
    let off = switches.validate_off == Some(true);
    let patterns = match switches.allow_backtracking_patterns {
        Some(true) => Patterns::Budgeted,
        _ => Patterns::Linear,
    };
    let validation = match schemas {
        _ if off => Validation::off(),
        Some(s) => Validation::compile(op, s, patterns, found),
        None => Validation::default(),
    };
    Operation {
        id: op.id.clone(),
        method: op.method,
        path: op.path.clone(),
        path_params: op.template.params().map(str::to_string).collect(),
        location: at(&op.pointer),
        x_authgate: op.x_authgate.as_ref().map(|(v, p)| (v.clone(), at(p))),
        validation,
    }
}

/// The spec-path table; two operations that could answer the same request are a problem
/// naming both.
fn route_table(ops: &[RawOperation], found: &mut Vec<At>) -> Router {
    let (router, ambiguities) = Router::build(ops.iter().enumerate().map(|(i, op)| (&op.template, op.method, i)));
    for a in ambiguities {
        let (first, second) = (&ops[a.first], &ops[a.second]);
        found.push(At::new(
            &second.pointer,
            format!(
                "operations {:?} ({} {}) and {:?} ({} {}) match the same requests: rename a path segment or merge them",
                first.id, first.method, first.path, second.id, second.method, second.path
            ),
        ));
    }
    router
}

#[cfg(test)]
mod reading_tests;
#[cfg(test)]
mod tests;
