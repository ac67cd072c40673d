//! JSON Schema validators for a spec's parameters and bodies, built once at compile time.
//!
//! A schema in a spec refers to others by local `$ref` (`#/components/schemas/Org`), relative
//! to the spec document. The document (cleaned: fragment-only `$id`s dropped, identical
//! `allOf`/`anyOf` branches merged) is registered once, under [`SPEC_URI`], in a
//! `jsonschema` registry every validator of the spec shares; a schema's local references are
//! made absolute into it. Nothing is copied per validator, and nothing is retrieved: remote
//! `$ref`s are refused before anything is built, and every retrieval fails.
//!
//! Components are shared compiled too (docs/reference.md, the OpenAPI section: "cost
//! bounds"): a `$ref` to a target that reaches more than [`INLINE_REACH`] schema objects is
//! compiled once for the whole spec, as its own validator, and every schema that refers to it
//! delegates to that one ([`REF_KEYWORD`]); smaller targets are compiled into each validator
//! that uses them (the cheaper path per request). So memory grows with the spec, not with
//! operations x components. A spec whose annotations must cross references
//! (`unevaluatedProperties`, `$dynamicRef`) is compiled without delegation.
//!
//! Each validator knows its cost ([`super::survey`]): past [`COLLECT_FANOUT`] subschemas on
//! one value its failures are not collected (one bounded error instead), and past
//! [`MAX_FANOUT`] the spec is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use jsonschema::paths::Location;
use jsonschema::{Draft, Keyword, PatternOptions, Registry, Retrieve, Uri, ValidationError, Validator};
use serde_json::{Map, Value};

use super::enums;
use super::patterns;
use super::rejection::MAX_ERRORS;
use super::spec::{fragment_pointer, At};
use super::survey::{RefGraph, Survey, DATA_KEYS};
use super::wording::{self, Failure};

/// The URI the spec document is registered under; local references are made absolute to it.
pub(crate) const SPEC_URI: &str = "urn:authgate:spec";
/// The keyword a delegated reference becomes (a `$`-name no spec may use for itself).
const REF_KEYWORD: &str = "$authgateRef";
/// A target that reaches at most this many schema objects is compiled into each validator.
const INLINE_REACH: usize = 64;
/// At most this many subschemas on one value, a failure's errors are collected.
pub(crate) const COLLECT_FANOUT: u64 = 16;
/// More subschemas on one value than this, and the spec is refused.
pub(crate) const MAX_FANOUT: u64 = 10_000;
/// The words of a value refused without its errors collected.
pub(crate) const NOT_COLLECTED: &str = "does not match its schema";

/// Refuses every retrieval, so a reference the checks missed fails the build instead of
/// reaching for the network or the disk.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri} is not in the spec (the gateway never fetches schemas)").into())
    }
}

/// How a validator runs `pattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Patterns {
    /// The linear engine only; a pattern that needs backtracking is a `check` error.
    Linear,
    /// `allow_backtracking_patterns`: backtracking patterns on the per-request budget.
    Budgeted,
}

impl Patterns {
    fn slot(self) -> usize {
        match self {
            Patterns::Linear => 0,
            Patterns::Budgeted => 1,
        }
    }
}

/// The compiled validators of shared targets, by target and [`Patterns`] mode; filled
/// while the spec compiles, read-only afterwards. Delegating keywords hold it weakly (a
/// component may refer to itself); the compiled spec holds it.
#[derive(Debug, Default)]
pub(crate) struct Components {
    slots: Vec<[OnceLock<Validator>; 2]>,
}

/// Builds validators for one spec.
pub(crate) struct SchemaCompiler {
    doc: Arc<Value>,
    registry: Registry<'static>,
    graph: RefGraph,
    /// Target pointer to its slot in `components`, and back.
    index: Arc<HashMap<String, usize>>,
    targets: Vec<String>,
    components: Arc<Components>,
    /// Targets a delegating keyword asked for and not yet built.
    wanted: Arc<Mutex<Vec<(usize, Patterns)>>>,
    delegate: bool,
}

impl std::fmt::Debug for SchemaCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCompiler")
            .field("targets", &self.index.len())
            .finish()
    }
}

/// One compiled schema, and what checking a value against it may cost.
#[derive(Debug)]
pub(crate) struct SchemaCheck {
    validator: Validator,
    /// Its fan-out is small enough to collect every failure.
    collect: bool,
    /// The schema as written (cleaned), for [`SchemaCompiler::standalone`].
    source: Value,
    doc: Arc<Value>,
}

impl SchemaCompiler {
    /// Prepares a spec's document; `Err` when `jsonschema` cannot index it.
    pub(crate) fn new(root: &Value) -> Result<SchemaCompiler, String> {
        let mut doc = root.clone();
        clean(&mut doc);
        let graph = RefGraph::new(&doc);
        let doc = Arc::new(doc);
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .retriever(NoRetrieval)
            .add(SPEC_URI, Arc::clone(&doc))
            .and_then(|r| r.prepare())
            .map_err(|e| format!("the spec's schemas cannot be indexed: {e}"))?;
        // a target's slot is its index in the graph
        let mut targets = vec![String::new(); graph.targets().count()];
        for (t, i) in graph.targets() {
            targets[i] = t.to_string();
        }
        let index: HashMap<String, usize> = graph.targets().map(|(t, i)| (t.to_string(), i)).collect();
        let components = Components {
            slots: (0..index.len()).map(|_| Default::default()).collect(),
        };
        Ok(SchemaCompiler {
            delegate: !graph.dynamic,
            doc,
            registry,
            graph,
            index: Arc::new(index),
            targets,
            components: Arc::new(components),
            wanted: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The shared compiled targets, for the compiled spec to keep.
    pub(crate) fn components(&self) -> Arc<Components> {
        Arc::clone(&self.components)
    }

    /// A draft 2020-12 validator with format assertion on (`uuid`, `email`, `date-time` are
    /// checked, not just annotated). `Err` names why the schema cannot be checked as the
    /// contract asks (backtracking patterns without the opt-in, an unbounded fan-out), or
    /// what `jsonschema` could not compile.
    pub(crate) fn build(&self, schema: &Value, patterns: Patterns) -> Result<SchemaCheck, String> {
        let mut source = schema.clone();
        clean(&mut source);
        let survey = self.graph.survey(&self.doc, &source);
        check_cost(&survey, patterns)?;
        let rewritten = self.rewrite(&source);
        let validator = self
            .options(patterns)
            .build(&rewritten)
            .map_err(|e| compile_error(&e))?;
        Ok(SchemaCheck {
            validator,
            collect: survey.fanout <= COLLECT_FANOUT,
            source,
            doc: Arc::clone(&self.doc),
        })
    }

    /// Builds every shared target a delegating keyword asked for (and what those ask for).
    /// Problems are placed at the target.
    pub(crate) fn build_components(&self, problems: &mut Vec<At>) {
        loop {
            let next = self.wanted.lock().map(|mut w| w.pop()).unwrap_or(None);
            let Some((slot, patterns)) = next else { break };
            let cell = &self.components.slots[slot][patterns.slot()];
            if cell.get().is_some() {
                continue;
            }
            let pointer = &self.targets[slot];
            let Some(target) = self.doc.pointer(pointer) else {
                continue;
            };
            match self.options(patterns).build(&self.rewrite(target)) {
                Ok(v) => {
                    let _ = cell.set(v);
                }
                Err(e) => problems.push(At::new(pointer.as_str(), compile_error(&e))),
            }
        }
    }

    fn options(&self, patterns: Patterns) -> jsonschema::ValidationOptions<'_> {
        let index = Arc::clone(&self.index);
        let components = Arc::downgrade(&self.components);
        let wanted = Arc::clone(&self.wanted);
        let options = validator_options().with_registry(&self.registry).with_keyword(
            REF_KEYWORD,
            move |_: &Map<String, Value>, value: &Value, _: Location| {
                delegate_to(value, &index, &components, &wanted, patterns)
            },
        );
        match patterns {
            Patterns::Linear => options,
            Patterns::Budgeted => options.with_keyword("pattern", patterns::budgeted_pattern),
        }
    }

    /// The schema with its local references made absolute into the registered spec, and
    /// those to large targets turned into delegations.
    fn rewrite(&self, schema: &Value) -> Value {
        let mut out = schema.clone();
        rewrite_refs(&mut out, &|pointer| {
            self.delegate && self.graph.reach(pointer).is_some_and(|s| s.size > INLINE_REACH)
        });
        out
    }

    /// The schema as a standalone document under which the spec's local `$ref`s resolve: the
    /// schema itself, with the spec's `components` added beside its keywords (an unknown
    /// keyword to JSON Schema, but a location `#/components/...` can point into). For an
    /// independent re-check (the fuzz oracle): built on demand, never kept.
    pub(crate) fn standalone(schema: &Value, doc: &Value) -> Value {
        let Some(components) = doc.get("components").filter(|c| c.is_object()) else {
            return schema.clone();
        };
        match schema {
            Value::Object(map) if !map.contains_key("components") => {
                let mut map = map.clone();
                map.insert("components".into(), components.clone());
                Value::Object(map)
            }
            // a boolean schema has no references; a schema with its own `components`
            // keyword keeps it and is wrapped
            Value::Bool(_) => schema.clone(),
            other => {
                let mut map = Map::new();
                map.insert("allOf".into(), Value::Array(vec![other.clone()]));
                map.insert("components".into(), components.clone());
                Value::Object(map)
            }
        }
    }

    /// Follows a schema's local `$ref` chain (at most 8) to the schema that says its `type`,
    /// for coercing parameter strings. `None` when a link does not resolve.
    pub(crate) fn resolve<'a>(&'a self, schema: &'a Value) -> Option<&'a Value> {
        let mut schema = schema;
        for _ in 0..8 {
            let Some(target) = schema.get("$ref").and_then(Value::as_str) else {
                return Some(schema);
            };
            let pointer = fragment_pointer(target);
            if !pointer.starts_with("/components/") {
                return None;
            }
            schema = self.doc.pointer(&pointer)?;
        }
        None
    }
}

impl SchemaCheck {
    /// Whether `value` passes.
    pub(crate) fn is_valid(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }

    /// What is wrong with a value that failed [`Self::is_valid`]: at most [`MAX_ERRORS`]
    /// failures, collected only where the fan-out allows, else one bounded failure.
    pub(crate) fn failures(&self, value: &Value) -> Vec<Failure> {
        if !self.collect {
            return vec![Failure {
                pointer: String::new(),
                message: NOT_COLLECTED.into(),
            }];
        }
        let mut out = Vec::new();
        for e in self.validator.iter_errors(value) {
            out.extend(wording::failures(&e));
            if out.len() >= MAX_ERRORS {
                break;
            }
        }
        out.truncate(MAX_ERRORS);
        out
    }

    /// The standalone schema (see [`SchemaCompiler::standalone`]).
    pub(crate) fn standalone(&self) -> Value {
        SchemaCompiler::standalone(&self.source, &self.doc)
    }
}

/// What a spec must not ask of a validator, whatever it says.
fn check_cost(survey: &Survey, patterns: Patterns) -> Result<(), String> {
    if let Some(key) = survey.backtracking_keys.iter().next() {
        return Err(format!(
            "patternProperties {:?} needs a backtracking regex engine (look-around or a back-reference), which the gateway runs only for `pattern`: rewrite it",
            wording::clip(key, 100)
        ));
    }
    if let (Patterns::Linear, Some(p)) = (patterns, survey.backtracking.iter().next()) {
        return Err(format!(
            "pattern {:?} needs a backtracking regex engine (look-around or a back-reference): rewrite it, or set allow_backtracking_patterns = true in the operation's x-authgate (each request then gets a budget of backtracking steps)",
            wording::clip(p, 100)
        ));
    }
    if survey.fanout > MAX_FANOUT {
        return Err(format!(
            "the schema applies more than {MAX_FANOUT} subschemas to one value ($ref, allOf, anyOf, oneOf nested in each other): every request would pay for all of them; simplify it"
        ));
    }
    Ok(())
}

fn compile_error(e: &ValidationError<'_>) -> String {
    format!("the schema cannot be compiled: {e}")
}

/// The options every validator starts from: draft 2020-12, formats asserted, no retrieval,
/// the linear regex engine, and `enum` in constant time per value ([`enums`]).
pub(crate) fn validator_options() -> jsonschema::ValidationOptions<'static> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_retriever(NoRetrieval)
        .with_pattern_options(PatternOptions::regex())
        .with_keyword("enum", enums::enum_keyword)
}

/// A delegating keyword: the shared validator of one target.
struct Delegated {
    components: Weak<Components>,
    slot: usize,
    patterns: Patterns,
}

impl Delegated {
    fn validator(&self) -> Option<Arc<Components>> {
        self.components.upgrade()
    }
}

impl<'i> Keyword<'i> for Delegated {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        match self.iter_errors(instance).next() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        let Some(components) = self.validator() else {
            return false;
        };
        components.slots[self.slot][self.patterns.slot()]
            .get()
            .is_some_and(|v| v.is_valid(instance))
    }

    /// The target's failures, each carried as a custom error whose message holds the
    /// failing value's pointer relative to this one ([`wording::failures`] reads it back).
    fn iter_errors(&self, instance: &'i Value) -> Box<dyn Iterator<Item = ValidationError<'i>> + 'i> {
        let Some(components) = self.validator() else {
            return Box::new(std::iter::once(ValidationError::custom(NOT_COLLECTED)));
        };
        let Some(v) = components.slots[self.slot][self.patterns.slot()].get() else {
            return Box::new(std::iter::once(ValidationError::custom(NOT_COLLECTED)));
        };
        let mut out = Vec::new();
        for e in v.iter_errors(instance) {
            out.extend(wording::failures(&e).into_iter().map(|f| wording::relative(&f)));
            if out.len() >= MAX_ERRORS {
                break;
            }
        }
        out.truncate(MAX_ERRORS);
        Box::new(
            out.into_iter()
                .map(|m| -> ValidationError<'i> { ValidationError::custom(m) }),
        )
    }
}

fn delegate_to<'a>(
    value: &'a Value,
    index: &HashMap<String, usize>,
    components: &Weak<Components>,
    wanted: &Mutex<Vec<(usize, Patterns)>>,
    patterns: Patterns,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let slot = value
        .as_str()
        .and_then(|p| index.get(p))
        .copied()
        .ok_or_else(|| ValidationError::custom("a reference the spec does not hold"))?;
    if let Ok(mut w) = wanted.lock() {
        w.push((slot, patterns));
    }
    Ok(Box::new(Delegated {
        components: components.clone(),
        slot,
        patterns,
    }))
}

/// Makes local references absolute into [`SPEC_URI`]; a reference `delegate` picks becomes
/// [`REF_KEYWORD`] with the target's decoded pointer (its sibling keywords stay).
fn rewrite_refs(value: &mut Value, delegate: &dyn Fn(&str) -> bool) {
    match value {
        Value::Object(map) => {
            for key in ["$ref", "$dynamicRef"] {
                let Some(Value::String(target)) = map.get(key) else {
                    continue;
                };
                if !target.starts_with('#') {
                    continue;
                }
                let pointer = fragment_pointer(target);
                if key == "$ref" && delegate(&pointer) {
                    map.remove(key);
                    map.insert(REF_KEYWORD.into(), Value::String(pointer));
                } else {
                    let absolute = format!("{SPEC_URI}{target}");
                    map.insert(key.into(), Value::String(absolute));
                }
            }
            for (key, v) in map.iter_mut() {
                if !DATA_KEYS.contains(&key.as_str()) {
                    rewrite_refs(v, delegate);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, delegate)),
        _ => {}
    }
}

/// The document as validators see it: fragment-only `$id`s removed (see
/// [`strip_fragment_id`]) and identical entries of an `allOf` or `anyOf` merged (the same
/// schema twice checks nothing more, but doubles the work at every level it nests: the
/// audit's `L0 = {allOf: [{$ref: L1}, {$ref: L1}]}` to depth 21). `oneOf` is left alone:
/// there two identical branches mean "never valid".
fn clean(value: &mut Value) {
    match value {
        Value::Object(map) => {
            strip_fragment_id(map);
            for key in ["allOf", "anyOf"] {
                if let Some(Value::Array(items)) = map.get_mut(key) {
                    let mut kept: Vec<Value> = Vec::with_capacity(items.len());
                    for item in items.drain(..) {
                        if !kept.contains(&item) {
                            kept.push(item);
                        }
                    }
                    *items = kept;
                }
            }
            for (key, v) in map.iter_mut() {
                if !DATA_KEYS.contains(&key.as_str()) {
                    clean(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(clean),
        _ => {}
    }
}

/// Removes a `$id` that is only a fragment (`$id: '#/components/schemas/Org'`, as some
/// generators write them). It is not a valid 2020-12 identifier, and it names the schema by
/// its place in the spec, which is what a local `$ref` already does.
fn strip_fragment_id(map: &mut Map<String, Value>) {
    if map
        .get("$id")
        .and_then(Value::as_str)
        .is_some_and(|id| id.starts_with('#'))
    {
        map.remove("$id");
    }
}

/// Every `$ref` / `$dynamicRef` in the spec is local, under `#/components/`, and points to
/// something: the gateway resolves them from the file alone.
pub(crate) fn check_refs(root: &Value, problems: &mut Vec<At>) {
    let mut pointer = String::new();
    walk_refs(root, root, &mut pointer, problems);
}

fn walk_refs(root: &Value, value: &Value, pointer: &mut String, problems: &mut Vec<At>) {
    match value {
        Value::Object(map) => {
            for key in ["$ref", "$dynamicRef"] {
                if let Some(Value::String(target)) = map.get(key) {
                    if let Err(message) = check_ref(root, target) {
                        problems.push(At::new(format!("{pointer}/{}", key), message));
                    }
                }
            }
            for (key, v) in map {
                if DATA_KEYS.contains(&key.as_str()) || key.starts_with("x-") {
                    continue;
                }
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&super::document::escape_pointer(key));
                walk_refs(root, v, pointer, problems);
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk_refs(root, v, pointer, problems);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

fn check_ref(root: &Value, target: &str) -> Result<(), String> {
    if !target.starts_with('#') {
        return Err(format!(
            "remote $ref {target:?} is not supported: the gateway never fetches; copy it under #/components/"
        ));
    }
    if !target.starts_with("#/components/") {
        return Err(format!("local $ref {target:?} must point under #/components/"));
    }
    if root.pointer(&fragment_pointer(target)).is_none() {
        return Err(format!("$ref {target:?} points to nothing in this file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
