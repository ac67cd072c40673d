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
