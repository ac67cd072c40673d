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

fn compiler(doc: &Value) -> SchemaCompiler {
    SchemaCompiler::new(doc).unwrap()
}

fn linear(c: &SchemaCompiler, schema: Value) -> SchemaCheck {
    c.build(&schema, Patterns::Linear).unwrap()
}

fn messages(check: &SchemaCheck, value: Value) -> Vec<(String, String)> {
    assert!(!check.is_valid(&value));
    check
        .failures(&value)
        .into_iter()
        .map(|f| (f.pointer, f.message))
        .collect()
}

#[test]
fn local_refs_resolve_in_the_shared_document() {
    let c = compiler(&root());
    let v = linear(&c, json!({"$ref": "#/components/schemas/Org"}));
    assert!(v.is_valid(&json!({"name": "Acme"})));
    assert!(!v.is_valid(&json!({"name": ""})));
    assert!(!v.is_valid(&json!({})));
    // the standalone copy (for an independent re-check) holds the cleaned components
    let standalone = v.standalone();
    assert!(standalone["components"]["schemas"]["Org"].get("$id").is_none());
    assert!(jsonschema::is_valid(&standalone, &json!({"name": "x"})));
    assert!(!jsonschema::is_valid(&standalone, &json!({"name": ""})));
}

#[test]
fn formats_are_asserted() {
    let c = compiler(&root());
    let v = linear(&c, json!({"$ref": "#/components/schemas/Id"}));
    assert!(v.is_valid(&json!("a1b2c3d4-e5f6-7890-abcd-ef1234567890")));
    assert!(!v.is_valid(&json!("not-a-uuid")));
    let email = linear(&c, json!({"type": "string", "format": "email"}));
    assert!(email.is_valid(&json!("owner@acmetours.com")));
    assert!(!email.is_valid(&json!("owner")));
    let dt = linear(&c, json!({"type": "string", "format": "date-time"}));
    assert!(dt.is_valid(&json!("2026-03-15T10:30:00.000Z")));
    assert!(!dt.is_valid(&json!("2026-03-15")));
}

#[test]
fn a_schema_with_its_own_components_keyword_is_wrapped() {
    let r = root();
    let s = SchemaCompiler::standalone(&json!({"components": 1, "$ref": "#/components/schemas/Name"}), &r);
    assert_eq!(s["allOf"][0]["components"], json!(1));
    assert!(s["components"]["schemas"]["Name"].is_object());
    assert_eq!(SchemaCompiler::standalone(&json!(true), &r), json!(true));
}

#[test]
fn resolve_follows_refs_for_type_sniffing() {
    let c = compiler(&root());
    let id = json!({"$ref": "#/components/schemas/Id"});
    assert_eq!(c.resolve(&id).unwrap()["format"], json!("uuid"));
    let int = json!({"type": "integer"});
    assert_eq!(c.resolve(&int).unwrap()["type"], json!("integer"));
    assert_eq!(c.resolve(&json!({"$ref": "#/components/schemas/Nope"})), None);
}

/// A component graph where every schema reaches every other (each refers to the next):
/// the shape that made every operation compile (and keep) the whole spec.
fn chain(n: usize) -> Value {
    let mut schemas = Map::new();
    for i in 0..n {
        schemas.insert(
            format!("S{i}"),
            json!({"type": "object", "required": ["v"], "properties": {
                "v": {"type": "integer", "maximum": 10},
                "next": {"$ref": format!("#/components/schemas/S{}", (i + 1) % n)}
            }}),
        );
    }
    json!({"components": {"schemas": schemas}})
}

#[test]
fn large_targets_are_compiled_once_and_shared() {
    let doc = chain(40);
    let c = compiler(&doc);
    let checks: Vec<SchemaCheck> = (0..5)
        .map(|i| linear(&c, json!({"$ref": format!("#/components/schemas/S{i}")})))
        .collect();
    let mut problems = Vec::new();
    c.build_components(&mut problems);
    assert_eq!(problems, vec![]);
    // every target was built once, for the linear engine only
    let built = c.components.slots.iter().filter(|s| s[0].get().is_some()).count();
    assert_eq!(built, 40);
    assert!(c.components.slots.iter().all(|s| s[1].get().is_none()));
    let v = &checks[0];
    assert!(v.is_valid(&json!({"v": 1, "next": {"v": 2}})));
    // failures found behind the delegated references keep their full pointers
    assert_eq!(
        messages(v, json!({"v": 1, "next": {"v": 2, "next": {"v": 11, "next": {}}}})),
        vec![
            ("/next/next/next/v".to_string(), "is required".to_string()),
            ("/next/next/v".to_string(), "must be at most 10".to_string()),
        ]
    );
}

#[test]
fn small_targets_are_compiled_in_place() {
    let c = compiler(&root());
    let _ = linear(&c, json!({"$ref": "#/components/schemas/Org"}));
    assert!(c.wanted.lock().unwrap().is_empty(), "nothing delegated");
}

#[test]
fn identical_all_of_branches_are_merged_and_the_audit_shape_stays_cheap() {
    let mut schemas = Map::new();
    for i in 0..21 {
        let next = format!("#/components/schemas/L{}", i + 1);
        schemas.insert(format!("L{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
    }
    schemas.insert("L21".into(), json!({"type": "object"}));
    let doc = json!({"components": {"schemas": schemas}});
    let c = compiler(&doc);
    let v = linear(&c, json!({"$ref": "#/components/schemas/L0"}));
    assert!(v.is_valid(&json!({})));
    // 22 levels of one reference each: past the collection limit, so one bounded failure
    assert_eq!(messages(&v, json!(1)), vec![(String::new(), NOT_COLLECTED.to_string())]);
    // oneOf keeps its twins: they make it unsatisfiable, and merging would change that
    let one_of = linear(&c, json!({"oneOf": [{"type": "string"}, {"type": "string"}]}));
    assert!(!one_of.is_valid(&json!("x")));
}

#[test]
fn what_a_spec_may_not_ask_is_refused() {
    let mut schemas = Map::new();
    for i in 0..16 {
        let next = format!("#/components/schemas/L{}", i + 1);
        schemas.insert(
            format!("L{i}"),
            json!({"anyOf": [{"$ref": next}, {"allOf": [{"$ref": next}]}]}),
        );
    }
    schemas.insert("L16".into(), json!({"type": "object"}));
    let doc = json!({"components": {"schemas": schemas}});
    let c = compiler(&doc);
    let err = c
        .build(&json!({"$ref": "#/components/schemas/L0"}), Patterns::Linear)
        .unwrap_err();
    assert!(
        err.starts_with("the schema applies more than 10000 subschemas"),
        "{err}"
    );

    let c = compiler(&json!({}));
    let look = json!({"type": "string", "pattern": "^(?=.*\\d).+$"});
    let err = c.build(&look, Patterns::Linear).unwrap_err();
    assert!(
        err.starts_with("pattern \"^(?=.*\\\\d).+$\" needs a backtracking regex engine"),
        "{err}"
    );
    let budgeted = c.build(&look, Patterns::Budgeted).unwrap();
    let ((yes, no), _) = patterns::with_budget(patterns::REQUEST_BUDGET, || {
        (budgeted.is_valid(&json!("a1")), budgeted.is_valid(&json!("ab")))
    });
    assert_eq!((yes, no), (true, false));
    let keys = json!({"patternProperties": {"(?!x)": {}}});
    assert!(c
        .build(&keys, Patterns::Budgeted)
        .unwrap_err()
        .starts_with("patternProperties"));
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
    let c = compiler(&json!({}));
    let err = c
        .build(&json!({"$ref": "https://example.com/s.json"}), Patterns::Linear)
        .unwrap_err();
    assert!(err.starts_with("the schema cannot be compiled"), "{err}");
}
