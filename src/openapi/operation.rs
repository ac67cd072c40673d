//! One compiled operation: what the route table needs from the spec (name, method, path,
//! `x-authgate`, where it is written) and its request checks.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::body::{BodyPlan, HeldBody};
use super::rejection::Rejection;
use super::spec::ParamIn;
use super::validate::{RequestHead, Validation};

/// A place in a spec file, for messages: `file:line`, or `file#/json/pointer` when no line
/// is known (never the case for a file that parsed, kept for callers that build one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecLocation {
    /// The spec file as named to [`super::compile`].
    pub file: PathBuf,
    /// 1-based line of the value (of its key, in a mapping).
    pub line: Option<usize>,
    /// The JSON pointer of the value, `""` for the document.
    pub pointer: String,
}

impl SpecLocation {
    pub(crate) fn new(file: &Path, line: Option<usize>, pointer: &str) -> SpecLocation {
        SpecLocation {
            file: file.to_path_buf(),
            line,
            pointer: pointer.to_string(),
        }
    }
}

impl fmt::Display for SpecLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}#{}", self.file.display(), self.pointer),
        }
    }
}

/// A spec operation, compiled: a route named by its `operationId`.
#[derive(Debug)]
pub struct Operation {
    pub(crate) id: String,
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) path_params: Vec<String>,
    pub(crate) location: SpecLocation,
    pub(crate) x_authgate: Option<(Value, SpecLocation)>,
    pub(crate) validation: Validation,
}

impl Operation {
    /// The `operationId`: the route's name and its metric label.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The documented method (`GET` also answers `HEAD`, §13).
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The path template as matched: the table's `prefix`, then the spec's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The names of the path's `{...}` segments, in order (what `org_param` may name).
    pub fn path_params(&self) -> &[String] {
        &self.path_params
    }

    /// Where the operation is written (`file:line` of its method key), for `check` messages
    /// about it (an overlay naming it, a route key it sets wrongly).
    pub fn location(&self) -> &SpecLocation {
        &self.location
    }

    /// The operation's `x-authgate` mapping as written (route keys the integrator validates
    /// like a `[[routes]]` entry's), with where it is written.
    pub fn x_authgate(&self) -> Option<(&Value, &SpecLocation)> {
        self.x_authgate.as_ref().map(|(v, l)| (v, l))
    }

    /// Whether this operation's bodies are held and checked against a schema (JSON or form);
    /// on every other operation bodies stream as before.
    pub fn needs_body(&self) -> bool {
        self.validation.needs_body()
    }

    /// Whether its validation is off (`validate = "off"` in its `x-authgate`, the table or an
    /// overlay): step 7a skips it whatever the table's mode.
    pub fn validation_off(&self) -> bool {
        self.validation.is_off()
    }

    /// Checks what the head of a request carries: parameters, whether a body is announced
    /// (by `Content-Length`/`Transfer-Encoding`) where one is required or forbidden, and its
    /// media type. `Ok` says what to do with the body. Never reads a body, so a request it
    /// refuses is refused before its body is read.
    pub fn check_head(&self, head: &RequestHead<'_>) -> Result<BodyPlan, Rejection> {
        self.validation.check_head(head)
    }

    /// [`Self::check_head`] for `validate = "report"`: the body plan even when the head
    /// failed (a body whose media type was accepted can still be checked and counted; one
    /// whose media type failed is [`BodyPlan::None`] and streams unchecked).
    pub fn check_head_report(&self, head: &RequestHead<'_>) -> (BodyPlan, Result<(), Rejection>) {
        self.validation.check_head_report(head)
    }

    /// Checks a body the head check said to hold ([`BodyPlan::Hold`]). The body itself is
    /// never changed: a valid one is forwarded byte for byte.
    pub fn check_body(&self, held: HeldBody, body: &[u8]) -> Result<(), Rejection> {
        self.validation.check_body(held, body)
    }

    /// The standalone JSON schema a held JSON body is checked against (the operation's
    /// schema with the spec's components beside it), built on demand for an independent
    /// re-check (the fuzz oracle); `None` for other held bodies.
    pub fn held_schema(&self, held: HeldBody) -> Option<Value> {
        self.validation.body_check()?.schema_of(held)
    }

    /// What is validated, for `authgate routes`: `path orgId; query limit, offset; body
    /// application/json (schema)`, `off` when its validation is, or `-` when nothing is.
    pub fn summary(&self) -> String {
        if self.validation_off() {
            return "off".into();
        }
        let mut parts = Vec::new();
        for (kind, label) in [
            (ParamIn::Path, "path"),
            (ParamIn::Query, "query"),
            (ParamIn::Header, "header"),
        ] {
            let names: Vec<&str> = self.validation.param_names(kind).collect();
            if !names.is_empty() {
                parts.push(format!("{label} {}", names.join(", ")));
            }
        }
        if let Some(b) = self.validation.body_check() {
            parts.push(format!("body {}", b.describe()));
        }
        if parts.is_empty() {
            return "-".into();
        }
        parts.join("; ")
    }
}
