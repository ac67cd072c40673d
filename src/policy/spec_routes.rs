//! Routes compiled from the upstream's OpenAPI spec (`[[openapi]]`, docs/reference.md#openapi).
//!
//! Hand-written `[[routes]]` are tried first; then each spec in config order. Inside a spec
//! the path picks the spec path first (a literal beats a template at the leftmost segment
//! where two differ) and the method then picks the operation: a documented path with an
//! undocumented method is a 405 with `Allow`, a routing outcome that comes before any
//! authentication. Each operation is a route of the table (named by its `operationId`), so
//! auth, limits and ownership run on it exactly as on a `[[routes]]` entry; its request
//! checks (step 7a) come from the spec.

use std::sync::Arc;

use crate::openapi::{CompiledSpec, Operation, RouteOutcome};

/// `[[openapi]] validate`: what step 7a does with a request its operation would reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidateMode {
    /// 400/415 at the edge; nothing of the request reaches the upstream.
    Enforce,
    /// Log and count the failure, forward the request (to try a spec on live traffic).
    Report,
    /// No checks: the spec only routes.
    Off,
}

/// One `[[openapi]]` table, compiled: its operations are routes `first..first + n` of the
/// route table, in spec order.
#[derive(Debug, Clone)]
pub struct SpecRoutes {
    spec: Arc<CompiledSpec>,
    first: usize,
    validate: ValidateMode,
    held_body_max: u64,
}

/// The default `[[openapi]] held_body_max`: pingora 0.9 forwards at most 64 KiB of a body a
/// filter read before the upstream request (its retry buffer), so no held body can be larger.
pub const HELD_BODY_MAX: u64 = 64 * 1024;

impl SpecRoutes {
    /// `spec`'s operations numbered from route index `first`; bodies held up to
    /// `held_body_max` bytes.
    pub fn new(spec: Arc<CompiledSpec>, first: usize, validate: ValidateMode, held_body_max: u64) -> SpecRoutes {
        SpecRoutes {
            spec,
            first,
            validate,
            held_body_max,
        }
    }

    /// The compiled spec (for `authgate routes`).
    pub fn spec(&self) -> &CompiledSpec {
        &self.spec
    }

    /// Route index of the spec's first operation.
    pub fn first(&self) -> usize {
        self.first
    }

    /// What step 7a does on this spec's operations (an operation whose own validation is
    /// off is never held or checked: see [`Operation::validation_off`]).
    pub fn validate(&self) -> ValidateMode {
        self.validate
    }

    /// What step 7a does on one operation of this spec: the table's mode, or `Off` where the
    /// operation's `x-authgate` or overlay turned its validation off.
    pub fn validate_of(&self, op: &Operation) -> ValidateMode {
        if op.validation_off() {
            ValidateMode::Off
        } else {
            self.validate
        }
    }

    /// `[[openapi]] held_body_max`: the largest body its operations hold and check. Over it,
    /// `enforce` answers 413 and `report` forwards the body unchecked, counted as
    /// `body_not_checked` (docs/reference.md, the OpenAPI section).
    pub fn held_body_max(&self) -> u64 {
        self.held_body_max
    }

    /// Whether route `index` is one of this spec's operations.
    pub fn holds(&self, index: usize) -> bool {
        self.operation(index).is_some()
    }

    /// The operation that is route `index`, if this spec holds it.
    pub fn operation(&self, index: usize) -> Option<&Operation> {
        index
            .checked_sub(self.first)
            .and_then(|i| self.spec.operations().get(i))
    }
}

/// A request routed to a spec operation.
#[derive(Debug, Clone)]
pub struct SpecMatch<'r, 'p> {
    /// The operation (its checks run at step 7a).
    pub op: &'r Operation,
    pub validate: ValidateMode,
    /// `(name, raw bytes)` of each `{name}` path segment, in path order.
    pub captures: Vec<(&'r str, &'p [u8])>,
}

/// What the specs say about a request no `[[routes]]` entry took.
#[derive(Debug)]
pub enum SpecOutcome<'r, 'p> {
    /// Route index and the match.
    Matched(usize, SpecMatch<'r, 'p>),
    /// A documented path with an undocumented method: the `Allow` value.
    MethodNotAllowed(&'r str),
    NoMatch,
}

/// Routes through the specs in config order: the first spec that has the operation wins; a
/// 405 is the answer only when no later spec routes the request either.
pub fn route<'r, 'p>(specs: &'r [SpecRoutes], method: &str, path: &'p [u8], semicolons: bool) -> SpecOutcome<'r, 'p> {
    let mut not_allowed = None;
    for s in specs {
        match s.spec.find(method, path, semicolons) {
            RouteOutcome::Match { operation, captures } => {
                if let Some(op) = s.spec.operations().get(operation) {
                    let m = SpecMatch {
                        op,
                        validate: s.validate_of(op),
                        captures,
                    };
                    return SpecOutcome::Matched(s.first + operation, m);
                }
            }
            RouteOutcome::MethodNotAllowed { allow } => {
                not_allowed.get_or_insert(allow);
            }
            RouteOutcome::NoMatch => {}
        }
    }
    not_allowed.map_or(SpecOutcome::NoMatch, SpecOutcome::MethodNotAllowed)
}
