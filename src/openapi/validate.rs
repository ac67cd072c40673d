//! An operation's request checks (docs/reference.md, pipeline step 7a), compiled once, run per request.
//!
//! The head check (parameters, body presence, media type) runs on the request head alone,
//! so a request that fails it is refused before its body is read; it collects every failure
//! of the head, in the order path, query, header, body presence, media type. The body check
//! runs on a held body only when the head check asked for it ([`BodyPlan::Hold`]).

use http::HeaderMap;

use super::body::{self, BodyCheck, BodyPlan, HeldBody};
use super::params::{header_values, ParamCheck};
use super::patterns::REQUEST_BUDGET;
use super::rejection::{Collector, Rejection};
use super::schema::{Patterns, SchemaCompiler};
use super::spec::{At, ParamIn, RawOperation};
use crate::path_text::decode_segment;

/// The parts of a request head the checks read.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The path captures of the match, `(name, raw bytes)` (as [`super::RouteOutcome::Match`]
    /// gives them); they are percent-decoded here.
    pub captures: &'a [(&'a str, &'a [u8])],
    /// The raw query, the bytes after `?` (`None` without one).
    pub query: Option<&'a [u8]>,
    /// The request headers (header parameters, `Content-Type`, `Content-Length`,
    /// `Transfer-Encoding`).
    pub headers: &'a HeaderMap,
}

/// The compiled checks of one operation (`Default`: none, for a spec that will not compile).
#[derive(Debug, Default)]
pub(crate) struct Validation {
    params: Vec<ParamCheck>,
    body: Option<BodyCheck>,
    /// `validate = "off"` for this operation: nothing is checked, every body streams.
    off: bool,
}

impl Validation {
    /// The checks of an operation whose validation is off.
    pub(crate) fn off() -> Validation {
        Validation {
            off: true,
            ..Validation::default()
        }
    }

    /// Whether this operation's validation is off (its spec routes it, nothing more).
    pub(crate) fn is_off(&self) -> bool {
        self.off
    }

    /// Builds every validator of the operation; problems name the schema at fault.
    /// `patterns` says whether its `pattern`s may need backtracking (on a budget).
    pub(crate) fn compile(
        op: &RawOperation,
        schemas: &SchemaCompiler,
        patterns: Patterns,
        problems: &mut Vec<At>,
    ) -> Validation {
        let mut params = Vec::new();
        for raw in &op.params {
            match ParamCheck::compile(raw, schemas, patterns) {
                Ok(Some(check)) => params.push(check),
                Ok(None) => {}
                Err(e) => problems.push(At::new(format!("{}/schema", raw.pointer), e)),
            }
        }
        // path, then query, then header: the order failures are reported in
        params.sort_by_key(|p| match p.location {
            ParamIn::Path => 0,
            ParamIn::Query => 1,
            ParamIn::Header | ParamIn::Cookie => 2,
        });
        let body = op
            .body
            .as_ref()
            .map(|b| BodyCheck::compile(b, schemas, patterns, problems));
        Validation {
            params,
            body,
            off: false,
        }
    }

    /// Whether the operation has a request body schema it checks (bodies are held only then).
    pub(crate) fn needs_body(&self) -> bool {
        self.body.as_ref().is_some_and(BodyCheck::has_schema)
    }

    /// The checked parameters of one location, by name.
    pub(crate) fn param_names(&self, location: ParamIn) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(move |p| p.location == location)
            .map(|p| p.name.as_str())
    }

    pub(crate) fn body_check(&self) -> Option<&BodyCheck> {
        self.body.as_ref()
    }

    /// Parameters, body presence and media type.
    pub(crate) fn check_head(&self, head: &RequestHead<'_>) -> Result<BodyPlan, Rejection> {
        let (plan, verdict) = self.check_head_report(head);
        verdict.map(|()| plan)
    }

    /// As [`Self::check_head`], but the body plan comes with the verdict, so report mode can
    /// still check a body whose head failed.
    pub(crate) fn check_head_report(&self, head: &RequestHead<'_>) -> (BodyPlan, Result<(), Rejection>) {
        if self.off {
            return (BodyPlan::Stream, Ok(()));
        }
        let mut out = Collector::default();
        let mut budget = REQUEST_BUDGET;
        for p in &self.params {
            match p.location {
                ParamIn::Path => {
                    let raw = head
                        .captures
                        .iter()
                        .find(|(n, _)| *n == p.name)
                        .map(|(_, v)| decode_segment(v));
                    let values: Vec<&[u8]> = raw.as_deref().into_iter().collect();
                    p.check_values(&values, &mut out, &mut budget);
                }
                ParamIn::Query => p.check_query(head.query, &mut out, &mut budget),
                ParamIn::Header | ParamIn::Cookie => {
                    p.check_values(&header_values(head.headers, &p.name), &mut out, &mut budget)
                }
            }
        }
        let plan = match &self.body {
            Some(b) => b.head(head.headers, &mut out, budget),
            None => body::head_without_body(head.headers, &mut out),
        };
        (plan, out.finish())
    }

    /// A body held as [`BodyPlan::Hold`] asked.
    pub(crate) fn check_body(&self, held: HeldBody, body: &[u8]) -> Result<(), Rejection> {
        if self.off {
            return Ok(());
        }
        let mut out = Collector::default();
        match &self.body {
            Some(b) => b.body(held, body, &mut out),
            None => body::no_body_expected(body, &mut out),
        }
        if out.is_empty() {
            return Ok(());
        }
        out.finish()
    }
}
