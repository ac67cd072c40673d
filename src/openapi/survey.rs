//! What a schema costs and needs, read off the spec before any validator is built
//! (docs/reference.md, the OpenAPI section: "cost bounds").
//!
//! For every schema an operation validates with, and every `$ref` target of the spec:
//! - its **fan-out**: the most subschemas applied to one value at once (`$ref`, `allOf`,
//!   `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `dependentSchemas` apply theirs to the same
//!   value). `jsonschema`'s error collection is eager and walks every branch, so a schema whose
//!   fan-out is large is checked with `is_valid` alone and refused with one bounded error;
//! - the `pattern`s that need a backtracking engine (look-around, back-references), which
//!   the linear engine cannot run;
//! - how many schema objects it reaches, so that a large shared component is compiled once
//!   for the whole spec rather than into every operation's validator.
//!
//! The `$ref` graph may have cycles (recursive schemas); what a target reaches is computed
//! once per strongly connected component of that graph.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::spec::fragment_pointer;

/// Keys whose values are data, not schemas: a `$ref` or `pattern` inside them is text.
pub(crate) const DATA_KEYS: [&str; 5] = ["example", "examples", "default", "const", "enum"];

/// Keywords that apply their subschemas to the value itself (not to its members).
const IN_PLACE_LISTS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
const IN_PLACE_ONE: [&str; 4] = ["not", "if", "then", "else"];

/// Fan-out counts saturate here: anything beyond is "too many".
const SATURATED: u64 = u64::MAX / 4;

/// What a schema reaches, `$ref`s followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Survey {
    /// The largest in-place fan-out of any schema object reached (1 for a plain schema).
    pub(crate) fanout: u64,
    /// `pattern` values that need a backtracking regex engine.
    pub(crate) backtracking: BTreeSet<String>,
    /// `patternProperties` keys that need one (never allowed: only `pattern` is budgeted).
    pub(crate) backtracking_keys: BTreeSet<String>,
    /// Schema objects reached (an over-count where graphs share targets).
    pub(crate) size: usize,
    /// `unevaluatedProperties`/`unevaluatedItems`/`$dynamicRef`/`$recursiveRef` is used: their
    /// annotations cross `$ref`s, so such a spec's references are never split apart.
    pub(crate) dynamic: bool,
}

impl Survey {
    fn absorb(&mut self, other: &Survey) {
        self.fanout = self.fanout.max(other.fanout);
        self.backtracking.extend(other.backtracking.iter().cloned());
        self.backtracking_keys.extend(other.backtracking_keys.iter().cloned());
        self.size = self.size.saturating_add(other.size);
        self.dynamic |= other.dynamic;
    }
}

/// Whether a regex (ECMA-262, as JSON Schema writes it) needs a backtracking engine: it does
/// not compile for the linear `regex` engine (after the same translation `jsonschema` uses)
/// but does for `fancy-regex`. An invalid pattern is not counted (building the validator
/// reports it).
pub(crate) fn needs_backtracking(pattern: &str) -> bool {
    let Ok(translated) = jsonschema_regex::to_rust_regex(pattern) else {
        return false;
    };
    regex::Regex::new(&translated).is_err() && fancy_regex::Regex::new(&translated).is_ok()
}

/// Every `$ref` target of a spec and what each reaches; built once per spec.
#[derive(Debug, Default)]
pub(crate) struct RefGraph {
    /// Target pointer (decoded, `/components/...`) to its index.
    index: HashMap<String, usize>,
    /// What each target reaches, `$ref`s followed.
    reach: Vec<Survey>,
    /// The spec uses annotation-crossing keywords somewhere.
    pub(crate) dynamic: bool,
}

/// A schema object's own survey (no `$ref` followed) and the targets it refers to.
#[derive(Debug, Default)]
struct Local {
    survey: Survey,
    refs: Vec<String>,
}

impl RefGraph {
    /// Surveys every `$ref` target of `doc` (targets that do not resolve are skipped:
    /// `check_refs` reports them).
    pub(crate) fn new(doc: &Value) -> RefGraph {
        let mut targets = Vec::new();
        collect_refs(doc, &mut targets);
        targets.sort();
        targets.dedup();
        let mut index = HashMap::new();
        let mut values = Vec::new();
        for t in targets {
            if let Some(v) = doc.pointer(&t) {
                index.insert(t, values.len());
                values.push(v);
            }
        }
        let mut fanouts = Fanouts::new(doc);
        let locals: Vec<Local> = values.iter().map(|v| local(v, &mut fanouts)).collect();
        let edges: Vec<Vec<usize>> = locals
            .iter()
            .map(|l| l.refs.iter().filter_map(|r| index.get(r).copied()).collect())
            .collect();
        let reach = reach_by_component(&locals, &edges);
        let dynamic = reach.iter().any(|s| s.dynamic) || mentions_dynamic(doc);
        RefGraph { index, reach, dynamic }
    }

    /// What `schema` reaches: its own objects, then every target it refers to (a target no
    /// `$ref` of the document names is walked here).
    pub(crate) fn survey(&self, doc: &Value, schema: &Value) -> Survey {
        let mut fanouts = Fanouts::new(doc);
        let own = local(schema, &mut fanouts);
        let mut out = own.survey;
        let mut pending = own.refs;
        let mut walked = BTreeSet::new();
        while let Some(r) = pending.pop() {
            if let Some(&i) = self.index.get(&r) {
                out.absorb(&self.reach[i]);
            } else if let Some(target) = doc.pointer(&r).filter(|_| walked.insert(r.clone())) {
                let l = local(target, &mut fanouts);
                out.absorb(&l.survey);
                pending.extend(l.refs);
            }
        }
        out
    }

    /// What the target at `pointer` reaches (`None` for a pointer no `$ref` names).
    pub(crate) fn reach(&self, pointer: &str) -> Option<&Survey> {
        self.index.get(pointer).map(|&i| &self.reach[i])
    }

    /// Every `$ref` target that resolves, as a decoded pointer, with its index (`0..n`).
    pub(crate) fn targets(&self) -> impl Iterator<Item = (&str, usize)> {
        self.index.iter().map(|(t, &i)| (t.as_str(), i))
    }
}

/// Every `$ref` target's decoded pointer.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" || key == "$dynamicRef" {
                    if let Some(target) = v.as_str().filter(|t| t.starts_with('#')) {
                        out.push(fragment_pointer(target));
                    }
                } else if !DATA_KEYS.contains(&key.as_str()) {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn mentions_dynamic(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            matches!(
                k.as_str(),
                "unevaluatedProperties" | "unevaluatedItems" | "$dynamicRef" | "$recursiveRef"
            ) || (!DATA_KEYS.contains(&k.as_str()) && mentions_dynamic(v))
        }),
        Value::Array(items) => items.iter().any(mentions_dynamic),
        _ => false,
    }
}

/// The in-place fan-out of schema objects, memoised by address (the document does not move
/// while a spec compiles) and by `$ref` target.
struct Fanouts<'d> {
    doc: &'d Value,
    by_target: HashMap<String, Option<u64>>,
}

impl<'d> Fanouts<'d> {
    fn new(doc: &'d Value) -> Fanouts<'d> {
        Fanouts {
            doc,
            by_target: HashMap::new(),
        }
    }

    /// 1 for the object itself, plus the fan-out of each subschema it applies in place.
    /// An in-place cycle (`A: {allOf: [{$ref: A}]}`) never ends: saturated.
    fn of(&mut self, schema: &Value) -> u64 {
        let Value::Object(map) = schema else { return 1 };
        let mut n: u64 = 1;
        if let Some(target) = map.get("$ref").and_then(Value::as_str).filter(|t| t.starts_with('#')) {
            n = n.saturating_add(self.of_target(&fragment_pointer(target)));
        }
        for key in IN_PLACE_LISTS {
            for sub in map.get(key).and_then(Value::as_array).into_iter().flatten() {
                n = n.saturating_add(self.of(sub));
            }
        }
        for key in IN_PLACE_ONE {
            if let Some(sub) = map.get(key) {
                n = n.saturating_add(self.of(sub));
            }
        }
        for sub in map
            .get("dependentSchemas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            n = n.saturating_add(self.of(sub.1));
        }
        n.min(SATURATED)
    }

    fn of_target(&mut self, pointer: &str) -> u64 {
        match self.by_target.get(pointer) {
            Some(Some(n)) => return *n,
            Some(None) => return SATURATED, // in progress: an in-place cycle
            None => {}
        }
        let Some(target) = self.doc.pointer(pointer) else {
            return 1;
        };
        self.by_target.insert(pointer.to_string(), None);
        let n = self.of(target);
        self.by_target.insert(pointer.to_string(), Some(n));
        n
    }
}

/// Walks a schema's own objects (no `$ref` followed): fan-outs, patterns, size, references.
fn local(schema: &Value, fanouts: &mut Fanouts<'_>) -> Local {
    let mut out = Local::default();
    walk(schema, fanouts, &mut out);
    out
}

fn walk(value: &Value, fanouts: &mut Fanouts<'_>, out: &mut Local) {
    match value {
        Value::Object(map) => {
            out.survey.size += 1;
            out.survey.fanout = out.survey.fanout.max(fanouts.of(value));
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref" | "$dynamicRef", Value::String(t)) if t.starts_with('#') => {
                        out.refs.push(fragment_pointer(t));
                    }
                    ("pattern", Value::String(p)) if needs_backtracking(p) => {
                        out.survey.backtracking.insert(p.clone());
                    }
                    ("patternProperties", Value::Object(props)) => {
                        for (p, sub) in props {
                            if needs_backtracking(p) {
                                out.survey.backtracking_keys.insert(p.clone());
                            }
                            walk(sub, fanouts, out);
                        }
                    }
                    ("unevaluatedProperties" | "unevaluatedItems" | "$recursiveRef", _) => {
                        out.survey.dynamic = true;
                        walk(v, fanouts, out);
                    }
                    (k, _) if DATA_KEYS.contains(&k) => {}
                    _ => walk(v, fanouts, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, fanouts, out)),
        _ => {}
    }
}

/// What each target reaches: the strongly connected components of the `$ref` graph
/// (Tarjan's algorithm, iterative), each component's survey the union of its members' and of
/// the components it points to. Tarjan finishes a component after every component it
/// reaches, so one pass in finishing order suffices.
fn reach_by_component(locals: &[Local], edges: &[Vec<usize>]) -> Vec<Survey> {
    let components = tarjan(edges);
    let mut component_of = vec![0; locals.len()];
    for (c, members) in components.iter().enumerate() {
        for &m in members {
            component_of[m] = c;
        }
    }
    let mut reach: Vec<Survey> = vec![Survey::default(); components.len()];
    for (c, members) in components.iter().enumerate() {
        let mut survey = Survey::default();
        let mut seen = BTreeSet::new();
        for &m in members {
            survey.absorb(&locals[m].survey);
            for &next in &edges[m] {
                let nc = component_of[next];
                if nc != c && seen.insert(nc) {
                    survey.absorb(&reach[nc]);
                }
            }
        }
        reach[c] = survey;
    }
    (0..locals.len()).map(|t| reach[component_of[t]].clone()).collect()
}

/// Strongly connected components, each listed after every component it has an edge to.
fn tarjan(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut calls = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = calls.last_mut() {
            if let Some(&w) = edges[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_are_classified_by_engine() {
        for linear in ["^[a-z]+$", "\\d{3}-\\w+", "^(a+)+$", "[\\p{L}]+", "^\\S*$"] {
            assert!(!needs_backtracking(linear), "{linear}");
        }
        for fancy in ["^(?=.*[A-Z]).{8,}$", "(?!admin)\\w+", "(a)\\1", "(?<=x)y", "^(?<!a)b"] {
            assert!(needs_backtracking(fancy), "{fancy}");
        }
        // invalid: left to the validator build to report
        assert!(!needs_backtracking("("));
    }

    /// `L(i)` applies `L(i+1)` and `M(i+1)`, which applies `L(i+2)`: Fibonacci growth.
    fn fanout_doc(depth: usize) -> Value {
        let mut schemas = serde_json::Map::new();
        for i in 0..depth {
            let next = format!("#/components/schemas/L{}", i + 1);
            let second = format!("#/components/schemas/M{}", i + 1);
            schemas.insert(format!("L{i}"), json!({"allOf": [{"$ref": next}, {"$ref": second}]}));
            schemas.insert(
                format!("M{i}"),
                json!({"allOf": [{"$ref": format!("#/components/schemas/L{}", i + 1)}]}),
            );
        }
        schemas.insert(format!("L{depth}"), json!({"type": "object"}));
        schemas.insert(format!("M{depth}"), json!({"type": "object"}));
        json!({"components": {"schemas": schemas}})
    }

    #[test]
    fn fan_out_counts_in_place_applications() {
        let doc = json!({"components": {"schemas": {
            "A": {"type": "string"},
            "B": {"allOf": [{"$ref": "#/components/schemas/A"}, {"minLength": 1}]},
            "C": {"properties": {"x": {"$ref": "#/components/schemas/B"}}},
            "Loop": {"anyOf": [{"$ref": "#/components/schemas/Loop"}]},
            "Tree": {"properties": {"kids": {"items": {"$ref": "#/components/schemas/Tree"}}}}
        }}});
        let g = RefGraph::new(&doc);
        let survey = |s: Value| g.survey(&doc, &s);
        assert_eq!(survey(json!({"type": "integer"})).fanout, 1);
        // B: itself, its allOf entries, the $ref's target
        assert_eq!(survey(json!({"$ref": "#/components/schemas/B"})).fanout, 5);
        // a member's fan-out counts where it is reached
        assert_eq!(survey(json!({"$ref": "#/components/schemas/C"})).fanout, 5);
        assert_eq!(survey(json!({"$ref": "#/components/schemas/Loop"})).fanout, SATURATED);
        // recursion through members is not in place
        assert_eq!(survey(json!({"$ref": "#/components/schemas/Tree"})).fanout, 2);
        assert_eq!(g.reach("/components/schemas/Tree").unwrap().size, 4);
        // two references per level, 21 levels
        let deep = fanout_doc(21);
        let g = RefGraph::new(&deep);
        assert!(g.survey(&deep, &json!({"$ref": "#/components/schemas/L0"})).fanout > 20_000);
    }

    #[test]
    fn reach_follows_cycles_and_unions_patterns() {
        let doc = json!({"components": {"schemas": {
            "A": {"properties": {"b": {"$ref": "#/components/schemas/B"}, "p": {"pattern": "(?=x)"}}},
            "B": {"properties": {"a": {"$ref": "#/components/schemas/A"}, "c": {"$ref": "#/components/schemas/C"}}},
            "C": {"patternProperties": {"(a)\\1": {"type": "string"}}, "enum": [{"pattern": "(?=y)"}]}
        }}});
        let g = RefGraph::new(&doc);
        let b = g.reach("/components/schemas/B").unwrap();
        assert_eq!(b.backtracking, BTreeSet::from(["(?=x)".to_string()]));
        assert_eq!(b.backtracking_keys, BTreeSet::from(["(a)\\1".to_string()]));
        assert!(!b.dynamic && !g.dynamic);
        assert_eq!(g.reach("/components/schemas/C").unwrap().backtracking, BTreeSet::new());
        let dynamic = json!({"components": {"schemas": {"A": {"unevaluatedProperties": false}}}});
        assert!(RefGraph::new(&dynamic).dynamic);
    }

    #[test]
    fn components_are_listed_after_what_they_reach() {
        // 0 -> 1 -> 2 -> 1, 3 alone
        let edges = vec![vec![1], vec![2], vec![1], vec![]];
        let c = tarjan(&edges);
        let pos = |n: usize| c.iter().position(|m| m.contains(&n)).unwrap();
        assert_eq!(pos(1), pos(2));
        assert!(pos(1) < pos(0));
        assert_eq!(c.len(), 3);
    }
}
