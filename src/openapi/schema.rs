//! JSON Schema validators for a spec's parameters and bodies, built once at compile time.
//!
//! A schema in a spec refers to others by local `$ref` (`#/components/schemas/Org`), relative
//! to the spec document. Each validator is built from a standalone copy of its schema that
//! carries the spec's `components` beside it, so those references resolve inside the copy:
//! no registry, no retrieval. Remote `$ref`s are refused before anything is built, and the
//! `jsonschema` crate is built without its retrieval features (see Cargo.toml), so it could
//! not fetch one anyway.

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::{Map, Value};

use super::spec::{fragment_pointer, At};

/// Keys whose values are data, not schemas or spec objects: a `$ref` inside them is text.
const DATA_KEYS: [&str; 5] = ["example", "examples", "default", "const", "enum"];

/// Refuses every retrieval, so a reference the checks missed fails the build instead of
/// reaching for the network or the disk.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri} is not in the spec (the gateway never fetches schemas)").into())
    }
}

/// Builds validators for one spec.
#[derive(Debug)]
pub(crate) struct SchemaCompiler {
    /// The spec's `components`, cleaned of fragment-only `$id`s (see [`strip_fragment_ids`]).
    components: Option<Value>,
}

impl SchemaCompiler {
    pub(crate) fn new(root: &Value) -> SchemaCompiler {
        let components = root.get("components").filter(|c| c.is_object()).map(|c| {
            let mut c = c.clone();
            strip_fragment_ids(&mut c);
            c
        });
        SchemaCompiler { components }
    }

    /// The schema as a standalone document under which the spec's local `$ref`s resolve: the
    /// schema itself, with the spec's `components` added beside its keywords (an unknown
    /// keyword to JSON Schema, but a location `#/components/...` can point into).
    pub(crate) fn standalone(&self, schema: &Value) -> Value {
        let mut schema = schema.clone();
        strip_fragment_ids(&mut schema);
        let Some(components) = &self.components else {
            return schema;
        };
        match schema {
            Value::Object(mut map) if !map.contains_key("components") => {
                map.insert("components".into(), components.clone());
                Value::Object(map)
            }
            // a boolean schema has no references; a schema with its own `components`
            // keyword keeps it and is wrapped
            Value::Bool(_) => schema,
            other => {
                let mut map = Map::new();
                map.insert("allOf".into(), Value::Array(vec![other]));
                map.insert("components".into(), components.clone());
                Value::Object(map)
            }
        }
    }

    /// A draft 2020-12 validator with format assertion on (`uuid`, `email`, `date-time` are
    /// checked, not just annotated), and the standalone schema it was built from.
    pub(crate) fn build(&self, schema: &Value) -> Result<(Validator, Value), String> {
        let standalone = self.standalone(schema);
        let validator = validator_options()
            .build(&standalone)
            .map_err(|e| format!("the schema cannot be compiled: {e}"))?;
        Ok((validator, standalone))
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
            let rest = pointer.strip_prefix("/components")?;
            schema = self.components.as_ref()?.pointer(rest)?;
        }
        None
    }
}

/// The options every validator (and the fuzz oracle) uses.
pub(crate) fn validator_options() -> jsonschema::ValidationOptions<'static> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_retriever(NoRetrieval)
}

/// Removes `$id`s that are only a fragment (`$id: '#/components/schemas/Org'`, as some
/// generators write them). They are not valid 2020-12 identifiers, and they name the schema
/// by its place in the spec, which is what a local `$ref` already does.
fn strip_fragment_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map
                .get("$id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with('#'))
            {
                map.remove("$id");
            }
            for (key, v) in map.iter_mut() {
                if !DATA_KEYS.contains(&key.as_str()) {
                    strip_fragment_ids(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_fragment_ids),
        _ => {}
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
mod tests {
    use super::*;
    use serde_json::json;

    fn root() -> Value {
        json!({
            "components": {"schemas": {
                "Org": {"$id": "#/components/schemas/Org", "type": "object",
                        "required": ["name"], "properties": {"name": {"$ref": "#/components/schemas/Name"}}},
                "Name": {"type": "string", "minLength": 1},
                "Id": {"$ref": "#/components/schemas/Uuid"},
                "Uuid": {"type": "string", "format": "uuid"}
            }}
        })
    }

    #[test]
    fn local_refs_resolve_in_the_standalone_copy() {
        let c = SchemaCompiler::new(&root());
        let (v, standalone) = c.build(&json!({"$ref": "#/components/schemas/Org"})).unwrap();
        assert!(v.is_valid(&json!({"name": "Acme"})));
        assert!(!v.is_valid(&json!({"name": ""})));
        assert!(!v.is_valid(&json!({})));
        // the fragment-only $id is gone; the oracle can rebuild from the standalone copy
        assert!(standalone["components"]["schemas"]["Org"].get("$id").is_none());
        assert!(jsonschema::is_valid(&standalone, &json!({"name": "x"})));
    }

    #[test]
    fn formats_are_asserted() {
        let c = SchemaCompiler::new(&root());
        let (v, _) = c.build(&json!({"$ref": "#/components/schemas/Id"})).unwrap();
        assert!(v.is_valid(&json!("a1b2c3d4-e5f6-7890-abcd-ef1234567890")));
        assert!(!v.is_valid(&json!("not-a-uuid")));
        let (email, _) = c.build(&json!({"type": "string", "format": "email"})).unwrap();
        assert!(email.is_valid(&json!("owner@acmetours.com")));
        assert!(!email.is_valid(&json!("owner")));
        let (dt, _) = c.build(&json!({"type": "string", "format": "date-time"})).unwrap();
        assert!(dt.is_valid(&json!("2026-03-15T10:30:00.000Z")));
        assert!(!dt.is_valid(&json!("2026-03-15")));
    }

    #[test]
    fn a_schema_with_its_own_components_keyword_is_wrapped() {
        let c = SchemaCompiler::new(&root());
        let s = c.standalone(&json!({"components": 1, "$ref": "#/components/schemas/Name"}));
        assert_eq!(s["allOf"][0]["components"], json!(1));
        assert!(s["components"]["schemas"]["Name"].is_object());
        assert_eq!(c.standalone(&json!(true)), json!(true));
    }

    #[test]
    fn resolve_follows_refs_for_type_sniffing() {
        let r = root();
        let c = SchemaCompiler::new(&r);
        assert_eq!(
            c.resolve(&json!({"$ref": "#/components/schemas/Id"})).unwrap()["format"],
            json!("uuid")
        );
        assert_eq!(
            c.resolve(&json!({"type": "integer"})).unwrap()["type"],
            json!("integer")
        );
        assert_eq!(c.resolve(&json!({"$ref": "#/components/schemas/Nope"})), None);
    }

    #[test]
    fn remote_and_dangling_refs_are_problems() {
        let doc = json!({
            "paths": {"/a": {"post": {"requestBody": {"content": {"application/json": {"schema": {
                "properties": {
                    "a": {"$ref": "https://example.com/s.json"},
                    "b": {"$ref": "#/components/schemas/Missing"},
                    "c": {"$ref": "#/paths/~1a"},
                    "d": {"$ref": "#/components/schemas/Ok", "example": {"$ref": "http://x"}},
                    "$ref": {"type": "string"}
                }}}}}}}},
            "components": {"schemas": {"Ok": {"$dynamicRef": "other.json#meta"}}},
            "x-tool": {"$ref": "http://ignored"}
        });
        let mut problems = Vec::new();
        check_refs(&doc, &mut problems);
        let got: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.pointer.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(got, vec![
            ("/components/schemas/Ok/$dynamicRef", "remote $ref \"other.json#meta\" is not supported: the gateway never fetches; copy it under #/components/"),
            ("/paths/~1a/post/requestBody/content/application~1json/schema/properties/a/$ref", "remote $ref \"https://example.com/s.json\" is not supported: the gateway never fetches; copy it under #/components/"),
            ("/paths/~1a/post/requestBody/content/application~1json/schema/properties/b/$ref", "$ref \"#/components/schemas/Missing\" points to nothing in this file"),
            ("/paths/~1a/post/requestBody/content/application~1json/schema/properties/c/$ref", "local $ref \"#/paths/~1a\" must point under #/components/"),
        ]);
    }

    #[test]
    fn a_remote_ref_that_slipped_through_is_not_fetched() {
        let c = SchemaCompiler::new(&json!({}));
        let err = c.build(&json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert!(err.starts_with("the schema cannot be compiled"), "{err}");
    }
}
