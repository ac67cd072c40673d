//! Spec and body shapes for the OpenAPI cost bounds (docs/reference.md, the OpenAPI section:
//! "cost bounds"), shared by `benches/openapi.rs` and `examples/openapi_compile.rs`.
#![allow(dead_code)]

use serde_json::{json, Map, Value};

/// A spec of `ops` operations (half `POST` with a body, half `GET` with query parameters) and
/// about `bytes` bytes of JSON: each body is a component object; with `chain`, every
/// component also refers to the next one, so each operation reaches every component (the
/// worst case for per-operation validators).
pub fn big_spec(ops: usize, bytes: usize, chain: bool) -> String {
    let components = (bytes / 4_300).max(1);
    let mut schemas = Map::new();
    for i in 0..components {
        schemas.insert(format!("Obj{i}"), component(i, components, chain));
    }
    let mut paths = Map::new();
    for i in 0..ops.div_ceil(2) {
        paths.insert(
            format!("/things{i}/{{id}}"),
            json!({
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}],
                "post": {
                    "operationId": format!("create{i}"),
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"$ref": format!("#/components/schemas/Obj{}", i % components)}}}},
                    "responses": {"200": {"description": "ok"}}
                },
                "get": {
                    "operationId": format!("list{i}"),
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                        {"name": "sort", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}}
                    ],
                    "responses": {"200": {"description": "ok"}}
                }
            }),
        );
    }
    let spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "big", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    format!("{spec:#}")
}

/// One component of about 2.5 KB: twenty properties of the usual kinds.
fn component(i: usize, n: usize, chain: bool) -> Value {
    let mut props = Map::new();
    for p in 0..18 {
        let schema = match p % 6 {
            0 => {
                json!({"type": "string", "minLength": 1, "maxLength": 200, "description": "a name of the thing, as the customer writes it"})
            }
            1 => json!({"type": "integer", "minimum": 0, "maximum": 1_000_000, "description": "a count"}),
            2 => json!({"type": "string", "enum": ["draft", "active", "archived", "deleted", "pending"]}),
            3 => json!({"type": "string", "format": "date-time", "description": "when it happened, RFC 3339"}),
            4 => json!({"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 50}),
            _ => json!({"type": ["string", "null"], "pattern": "^[a-z0-9-]{1,64}$"}),
        };
        props.insert(format!("field_{p}"), schema);
    }
    if chain {
        props.insert(
            "next".into(),
            json!({"$ref": format!("#/components/schemas/Obj{}", (i + 1) % n)}),
        );
    }
    props.insert(
        "shared".into(),
        json!({"$ref": format!("#/components/schemas/Obj{}", (i * 7 + 3) % n)}),
    );
    json!({
        "type": "object",
        "description": format!("Thing number {i}: an object with the usual mix of fields, documented at some length so that the spec weighs what real ones do."),
        "required": ["field_0", "field_1"],
        "properties": props,
        "additionalProperties": false
    })
}

/// One operation `POST /shape` whose JSON body is checked against `schema` (with
/// `components` beside it, and `x_authgate` as the operation's `x-authgate`).
pub fn one_operation(schema: Value, components: Value, x_authgate: Value) -> String {
    let spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "shape", "version": "1"},
        "paths": {"/shape": {"post": {
            "operationId": "shape",
            "x-authgate": x_authgate,
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema}}},
            "responses": {"200": {"description": "ok"}}
        }}},
        "components": components,
    });
    spec.to_string()
}

/// A look-around pattern that backtracks catastrophically on a run of `a`s, allowed by the
/// operation's `x-authgate`, and a 1 KB body of such strings.
pub fn lookaround() -> (String, Vec<u8>) {
    let schema = json!({"type": "object", "properties": {"codes": {"type": "array", "items": {
        "type": "string", "pattern": "^(?=a)(a|a)*\\1?b$"}}}});
    let spec = one_operation(schema, json!({}), json!({"allow_backtracking_patterns": true}));
    let codes: Vec<String> = (0..24).map(|_| "a".repeat(38)).collect();
    let body = serde_json::to_vec(&json!({"codes": codes})).unwrap_or_default();
    (spec, body)
}

/// A 100,000-value `enum` of strings and numbers (so no hash set applies) and a 64 KiB body
/// of values it does not hold.
pub fn big_enum() -> (String, Vec<u8>) {
    let values: Vec<Value> = (0..100_000)
        .map(|i| {
            if i % 2 == 0 {
                json!(format!("value-{i}"))
            } else {
                json!(i)
            }
        })
        .collect();
    let schema = json!({"type": "array", "items": {"enum": values}});
    let spec = one_operation(schema, json!({}), json!({}));
    let mut body = b"[".to_vec();
    while body.len() < 64 * 1024 - 16 {
        body.extend_from_slice(b"\"miss\",");
    }
    body.extend_from_slice(b"\"miss\"]");
    (spec, body)
}

/// The audit's `$ref` fan-out: `L0 = {allOf: [{$ref: L1}, {$ref: L1}]}` to depth 21, with
/// `variant` the second reference is to an equal schema by another name, which merging
/// identical branches does not catch; and a 1-byte invalid body.
pub fn ref_fanout(variant: bool) -> (String, Vec<u8>) {
    let mut schemas = Map::new();
    for i in 0..21 {
        let next = format!("#/components/schemas/L{}", i + 1);
        let second = if variant {
            format!("#/components/schemas/M{}", i + 1)
        } else {
            next.clone()
        };
        schemas.insert(format!("L{i}"), json!({"allOf": [{"$ref": next}, {"$ref": second}]}));
        schemas.insert(
            format!("M{}", i + 1),
            json!({"allOf": [{"$ref": format!("#/components/schemas/L{}", i + 1)}]}),
        );
    }
    schemas.insert("L21".into(), json!({"type": "object", "required": ["a"]}));
    let spec = one_operation(
        json!({"$ref": "#/components/schemas/L0"}),
        json!({"schemas": schemas}),
        json!({}),
    );
    (spec, b"1".to_vec())
}

/// A 64 KiB body of objects each missing a required property and carrying a wrong type:
/// thousands of failures, of which ten are put into words.
pub fn many_failures() -> (String, Vec<u8>) {
    let schema = json!({"type": "array", "items": {"type": "object", "required": ["id"],
        "properties": {"n": {"type": "integer"}}}});
    let spec = one_operation(schema, json!({}), json!({}));
    let mut body = b"[".to_vec();
    while body.len() < 64 * 1024 - 16 {
        body.extend_from_slice(br#"{"n":"x"},"#);
    }
    body.extend_from_slice(br#"{"n":"x"}]"#);
    (spec, body)
}
