//! The parts of an OpenAPI 3.1 document the gateway uses, read from the parsed JSON value.
//!
//! Read by hand rather than into `#[derive(Deserialize)]` structs: OpenAPI objects have many
//! fields the gateway ignores, and reading field by field lets every problem carry the JSON
//! pointer of the value at fault (the compiler turns it into `file:line`), collecting all of
//! them instead of stopping at the first.

use serde_json::{Map, Value};

use super::document::escape_pointer;
use super::router::Template;

/// A problem at a JSON pointer of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At {
    pub(crate) pointer: String,
    pub(crate) message: String,
}

impl At {
    pub(crate) fn new(pointer: impl Into<String>, message: impl Into<String>) -> At {
        At {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamIn {
    Path,
    Query,
    Header,
    /// Not validated: the gateway does not parse cookies.
    Cookie,
}

/// A parameter, `$ref`s followed, path-item parameters merged under the operation's.
#[derive(Debug, Clone)]
pub(crate) struct RawParam {
    pub(crate) name: String,
    pub(crate) location: ParamIn,
    pub(crate) required: bool,
    /// `None` with `content` instead of `schema`.
    pub(crate) schema: Option<Value>,
    /// With `content` instead of `schema`: the schema of its JSON media type (the value is
    /// JSON text); `None` for any other media type (only `required` is checked).
    pub(crate) content_json: Option<Value>,
    /// `explode` as written, else OpenAPI's default (true for `form`, false otherwise).
    pub(crate) explode: bool,
    /// `style` as written, else OpenAPI's default for the location (`form` for query,
    /// `simple` for path and header).
    pub(crate) style: String,
    pub(crate) pointer: String,
}

/// One media type of a request body.
#[derive(Debug, Clone)]
pub(crate) struct RawMedia {
    /// The content key as written (`application/json`, `application/*`, ...).
    pub(crate) media: String,
    pub(crate) schema: Option<Value>,
    /// The media type's `encoding` map (form bodies: per-property style, explode and
    /// content type).
    pub(crate) encoding: Option<Value>,
    pub(crate) pointer: String,
}

/// A request body, `$ref` followed.
#[derive(Debug, Clone)]
pub(crate) struct RawBody {
    pub(crate) required: bool,
    pub(crate) content: Vec<RawMedia>,
}

/// One operation of the spec, before its validators are built.
#[derive(Debug, Clone)]
pub(crate) struct RawOperation {
    pub(crate) id: String,
    pub(crate) method: &'static str,
    /// The path as matched: the table's prefix, then the spec's path.
    pub(crate) path: String,
    pub(crate) template: Template,
    pub(crate) pointer: String,
    pub(crate) params: Vec<RawParam>,
    pub(crate) body: Option<RawBody>,
    pub(crate) x_authgate: Option<(Value, String)>,
}

/// Path item keys that are operations, with the method each stands for.
const OPERATION_KEYS: [(&str, &str); 8] = [
    ("get", "GET"),
    ("put", "PUT"),
    ("post", "POST"),
    ("delete", "DELETE"),
    ("options", "OPTIONS"),
    ("head", "HEAD"),
    ("patch", "PATCH"),
    ("trace", "TRACE"),
];

/// Refuses anything but OpenAPI 3.1: 3.0 schemas are not JSON Schema 2020-12 (`nullable`,
/// boolean `exclusiveMinimum`), so validating them as such would pass or refuse the wrong
/// bodies; Swagger 2.0 differs throughout.
pub(crate) fn check_version(root: &Value) -> Result<(), At> {
    if !root.is_object() {
        return Err(At::new("", "expected an OpenAPI document (a mapping at the top level)"));
    }
    if root.get("swagger").is_some() {
        return Err(At::new(
            "/swagger",
            "Swagger 2.0 is not supported: convert the spec to OpenAPI 3.1",
        ));
    }
    match root.get("openapi") {
        Some(Value::String(v)) if v.starts_with("3.1.") => Ok(()),
        Some(Value::String(v)) if v.starts_with("3.0") => Err(At::new(
            "/openapi",
            format!("OpenAPI {v} is not supported: only 3.1 (its schemas are JSON Schema 2020-12; 3.0's nullable and boolean exclusiveMinimum are not)"),
        )),
        Some(v) => Err(At::new("/openapi", format!("OpenAPI version {v} is not supported: only 3.1.x"))),
        None => Err(At::new("", "no `openapi` version field: expected an OpenAPI 3.1 document")),
    }
}

/// Reads every operation under `paths`, with `prefix` prepended to each path.
pub(crate) fn operations(root: &Value, prefix: &str, problems: &mut Vec<At>) -> Vec<RawOperation> {
    let Some(paths) = root.get("paths") else {
        return Vec::new();
    };
    let Some(paths) = paths.as_object() else {
        problems.push(At::new("/paths", "`paths` must be a mapping"));
        return Vec::new();
    };
    let mut ops = Vec::new();
    for (path, item) in paths {
        let pointer = format!("/paths/{}", escape_pointer(path));
        let full = format!("{prefix}{path}");
        let template = match Template::parse(&full) {
            Ok(t) => t,
            Err(e) => {
                problems.push(At::new(&pointer, e));
                continue;
            }
        };
        path_item(root, item, &full, &template, &pointer, problems, &mut ops);
    }
    duplicate_ids(&ops, problems);
    ops
}

/// The operations of one path item.
fn path_item(
    root: &Value,
    item: &Value,
    path: &str,
    template: &Template,
    pointer: &str,
    problems: &mut Vec<At>,
    ops: &mut Vec<RawOperation>,
) {
    let Some(item) = item.as_object() else {
        problems.push(At::new(pointer, "a path item must be a mapping"));
        return;
    };
    if item.contains_key("$ref") {
        problems.push(At::new(
            format!("{pointer}/$ref"),
            "a path item `$ref` is not supported: write the operations inline",
        ));
        return;
    }
    let shared = parameters(root, item, pointer, problems);
    for (key, method) in OPERATION_KEYS {
        let Some(op) = item.get(key) else { continue };
        let op_pointer = format!("{pointer}/{key}");
        let Some(op) = op.as_object() else {
            problems.push(At::new(&op_pointer, "an operation must be a mapping"));
            continue;
        };
        let Some(id) = operation_id(op, method, path, &op_pointer, problems) else {
            continue;
        };
        let own = parameters(root, op, &op_pointer, problems);
        let params = merge_params(shared.clone(), own);
        check_path_params(template, &params, method, path, &op_pointer, problems);
        let body = op
            .get("requestBody")
            .and_then(|b| request_body(root, b, &format!("{op_pointer}/requestBody"), problems));
        let x_authgate = x_authgate(op, &op_pointer, problems);
        ops.push(RawOperation {
            id,
            method,
            path: path.to_string(),
            template: template.clone(),
            pointer: op_pointer,
            params,
            body,
            x_authgate,
        });
    }
}

fn operation_id(
    op: &Map<String, Value>,
    method: &str,
    path: &str,
    pointer: &str,
    problems: &mut Vec<At>,
) -> Option<String> {
    match op.get("operationId") {
        Some(Value::String(id)) if !id.trim().is_empty() => Some(id.clone()),
        Some(_) => {
            problems.push(At::new(
                format!("{pointer}/operationId"),
                "operationId must be a non-empty string",
            ));
            None
        }
        None => {
            problems.push(At::new(
                pointer,
                format!("operation {method} {path} has no operationId: every operation becomes a route named by it"),
            ));
            None
        }
    }
}

fn duplicate_ids(ops: &[RawOperation], problems: &mut Vec<At>) {
    for (i, op) in ops.iter().enumerate() {
        if let Some(first) = ops[..i].iter().find(|o| o.id == op.id) {
            problems.push(At::new(
                format!("{}/operationId", op.pointer),
                format!(
                    "operationId {:?} of {} {} is also the operationId of {} {}: route names must be unique",
                    op.id, op.method, op.path, first.method, first.path
                ),
            ));
        }
    }
}

fn x_authgate(op: &Map<String, Value>, pointer: &str, problems: &mut Vec<At>) -> Option<(Value, String)> {
    let value = op.get("x-authgate")?;
    let pointer = format!("{pointer}/x-authgate");
    if !value.is_object() {
        problems.push(At::new(pointer, "x-authgate must be a mapping of route keys"));
        return None;
    }
    Some((value.clone(), pointer))
}

/// Operation parameters replace path-item parameters of the same name and location.
fn merge_params(shared: Vec<RawParam>, own: Vec<RawParam>) -> Vec<RawParam> {
    let mut out: Vec<RawParam> = shared
        .into_iter()
        .filter(|s| !own.iter().any(|o| o.name == s.name && o.location == s.location))
        .collect();
    out.extend(own);
    out
}

/// Every `{name}` of the path has a path parameter, and every path parameter a `{name}`.
fn check_path_params(
    template: &Template,
    params: &[RawParam],
    method: &str,
    path: &str,
    pointer: &str,
    problems: &mut Vec<At>,
) {
    for name in template.params() {
        if !params.iter().any(|p| p.location == ParamIn::Path && p.name == name) {
            problems.push(At::new(
                pointer,
                format!("{method} {path}: {{{name}}} in the path has no path parameter named {name:?}"),
            ));
        }
    }
    for p in params.iter().filter(|p| p.location == ParamIn::Path) {
        if !template.params().any(|n| n == p.name) {
            problems.push(At::new(
                &p.pointer,
                format!(
                    "{method} {path}: path parameter {:?} is not a {{...}} segment of the path",
                    p.name
                ),
            ));
        }
    }
}

/// The `parameters` list of a path item or operation.
fn parameters(root: &Value, owner: &Map<String, Value>, pointer: &str, problems: &mut Vec<At>) -> Vec<RawParam> {
    let Some(list) = owner.get("parameters") else {
        return Vec::new();
    };
    let Some(list) = list.as_array() else {
        problems.push(At::new(format!("{pointer}/parameters"), "`parameters` must be a list"));
        return Vec::new();
    };
    let mut out: Vec<RawParam> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let p_pointer = format!("{pointer}/parameters/{i}");
        let Some(param) = parameter(root, p, &p_pointer, problems) else {
            continue;
        };
        if out.iter().any(|o| o.name == param.name && o.location == param.location) {
            problems.push(At::new(
                &p_pointer,
                format!("parameter {:?} is listed twice", param.name),
            ));
            continue;
        }
        out.push(param);
    }
    out
}

fn parameter(root: &Value, value: &Value, pointer: &str, problems: &mut Vec<At>) -> Option<RawParam> {
    let (value, pointer) = match resolve(root, value, pointer, "#/components/parameters/") {
        Ok(found) => found,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    let Some(name) = value.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        problems.push(At::new(&pointer, "a parameter needs a non-empty `name`"));
        return None;
    };
    let location = match value.get("in").and_then(Value::as_str) {
        Some("path") => ParamIn::Path,
        Some("query") => ParamIn::Query,
        Some("header") => ParamIn::Header,
        Some("cookie") => ParamIn::Cookie,
        other => {
            problems.push(At::new(
                &pointer,
                format!("parameter {name:?}: `in` must be path, query, header or cookie, not {other:?}"),
            ));
            return None;
        }
    };
    let flag = |key: &str| value.get(key).and_then(Value::as_bool);
    let style = match value.get("style").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None if matches!(location, ParamIn::Query | ParamIn::Cookie) => "form".into(),
        None => "simple".into(),
    };
    Some(RawParam {
        name: name.to_string(),
        location,
        // path parameters are always required (OpenAPI), whatever the flag says
        required: location == ParamIn::Path || flag("required").unwrap_or(false),
        schema: value.get("schema").cloned(),
        content_json: json_content(value),
        explode: flag("explode").unwrap_or(style == "form"),
        style,
        pointer,
    })
}

/// The schema of a parameter's `content` when its (one) media type is JSON.
fn json_content(param: &Value) -> Option<Value> {
    let content = param.get("content")?.as_object()?;
    let (media, m) = content.iter().next()?;
    let (kind, subtype) = super::media::essence(media.as_bytes())?;
    super::media::is_json(&kind, &subtype).then(|| m.get("schema").cloned())?
}

fn request_body(root: &Value, value: &Value, pointer: &str, problems: &mut Vec<At>) -> Option<RawBody> {
    let (value, pointer) = match resolve(root, value, pointer, "#/components/requestBodies/") {
        Ok(found) => found,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    let content = match value.get("content").and_then(Value::as_object) {
        Some(c) if !c.is_empty() => c,
        _ => {
            problems.push(At::new(
                &pointer,
                "a requestBody needs a non-empty `content` mapping of media types",
            ));
            return None;
        }
    };
    let content = content
        .iter()
        .map(|(media, m)| {
            let m_pointer = format!("{pointer}/content/{}", escape_pointer(media));
            RawMedia {
                media: media.clone(),
                schema: m.get("schema").cloned(),
                encoding: m.get("encoding").cloned(),
                pointer: format!("{m_pointer}/schema"),
            }
        })
        .collect();
    Some(RawBody {
        required: value.get("required").and_then(Value::as_bool).unwrap_or(false),
        content,
    })
}

/// Follows a local `$ref` (a chain of them, at most 8) to an object under `under`.
fn resolve<'v>(root: &'v Value, value: &'v Value, pointer: &str, under: &str) -> Result<(&'v Value, String), At> {
    let mut value = value;
    let mut pointer = pointer.to_string();
    for _ in 0..8 {
        let Some(target) = value.get("$ref") else {
            return Ok((value, pointer));
        };
        let Some(target) = target.as_str().filter(|t| t.starts_with(under)) else {
            return Err(At::new(
                format!("{pointer}/$ref"),
                format!("$ref must point under {under}, not {target}"),
            ));
        };
        let fragment = fragment_pointer(target);
        value = root.pointer(&fragment).ok_or_else(|| {
            At::new(
                format!("{pointer}/$ref"),
                format!("$ref {target:?} points to nothing in this file"),
            )
        })?;
        pointer = fragment;
    }
    Err(At::new(pointer, "more than 8 $refs in a chain (a loop?)"))
}

/// The JSON pointer of a local `$ref` (`#/a%20b/c` -> `/a b/c`: the fragment is URI-encoded).
pub(crate) fn fragment_pointer(target: &str) -> String {
    let fragment = target.strip_prefix('#').unwrap_or(target);
    percent_encoding::percent_decode_str(fragment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(doc: Value, prefix: &str) -> (Vec<RawOperation>, Vec<At>) {
        let mut problems = Vec::new();
        let ops = operations(&doc, prefix, &mut problems);
        (ops, problems)
    }

    #[test]
    fn versions() {
        assert_eq!(check_version(&json!({"openapi": "3.1.0"})), Ok(()));
        assert_eq!(check_version(&json!({"openapi": "3.1.1"})), Ok(()));
        let e = check_version(&json!({"openapi": "3.0.3"})).unwrap_err();
        assert_eq!(e.pointer, "/openapi");
        assert!(
            e.message.starts_with("OpenAPI 3.0.3 is not supported: only 3.1"),
            "{}",
            e.message
        );
        assert_eq!(
            check_version(&json!({"swagger": "2.0"})).unwrap_err().message,
            "Swagger 2.0 is not supported: convert the spec to OpenAPI 3.1"
        );
        assert_eq!(
            check_version(&json!({"openapi": 3.1})).unwrap_err().message,
            "OpenAPI version 3.1 is not supported: only 3.1.x"
        );
        assert_eq!(check_version(&json!([])).unwrap_err().pointer, "");
        assert_eq!(
            check_version(&json!({})).unwrap_err().message,
            "no `openapi` version field: expected an OpenAPI 3.1 document"
        );
    }

    #[test]
    fn operations_with_params_body_and_x_authgate() {
        let doc = json!({
            "paths": {"/orgs/{orgId}/login-links": {
                "parameters": [{"name": "orgId", "in": "path", "schema": {"type": "string"}},
                               {"name": "trace", "in": "header", "required": true}],
                "post": {
                    "operationId": "createLoginLink",
                    "parameters": [{"$ref": "#/components/parameters/Trace"}],
                    "requestBody": {"$ref": "#/components/requestBodies/Link"},
                    "x-authgate": {"limits": ["partner", "login-links"]}
                }
            }},
            "components": {
                "parameters": {"Trace": {"name": "trace", "in": "header", "schema": {"type": "integer"}}},
                "requestBodies": {"Link": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}}
            }
        });
        let (ops, problems) = read(doc, "/partner/v1");
        assert_eq!(problems, vec![]);
        let op = &ops[0];
        assert_eq!(
            (op.id.as_str(), op.method, op.path.as_str()),
            ("createLoginLink", "POST", "/partner/v1/orgs/{orgId}/login-links")
        );
        assert_eq!(op.pointer, "/paths/~1orgs~1{orgId}~1login-links/post");
        // the operation's `trace` replaces the path item's
        assert_eq!(op.params.len(), 2);
        let trace = op.params.iter().find(|p| p.name == "trace").unwrap();
        assert!(!trace.required);
        assert_eq!(trace.pointer, "/components/parameters/Trace");
        assert!(op
            .params
            .iter()
            .any(|p| p.name == "orgId" && p.required && p.location == ParamIn::Path));
        let body = op.body.as_ref().unwrap();
        assert!(body.required);
        assert_eq!(body.content[0].media, "application/json");
        assert_eq!(
            body.content[0].pointer,
            "/components/requestBodies/Link/content/application~1json/schema"
        );
        assert_eq!(
            op.x_authgate.as_ref().unwrap().0,
            json!({"limits": ["partner", "login-links"]})
        );
        assert_eq!(
            op.x_authgate.as_ref().unwrap().1,
            "/paths/~1orgs~1{orgId}~1login-links/post/x-authgate"
        );
    }

    #[test]
    fn all_problems_are_collected() {
        let doc = json!({"paths": {
            "/a/{x}": {"get": {"responses": {}}, "post": {"operationId": "dup"}},
            "/b": {"get": {"operationId": "dup", "parameters": [{"name": "y", "in": "path"}]}},
            "/c/{n}.json": {"get": {"operationId": "c"}},
            "/d": {"get": {"operationId": "d", "x-authgate": [1],
                           "parameters": [{"name": "q", "in": "body"}, {"name": "k", "in": "query"}, {"name": "k", "in": "query"}],
                           "requestBody": {"content": {}}}},
            "/e": {"$ref": "#/components/pathItems/E"},
        }});
        let (ops, problems) = read(doc, "");
        let messages: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.pointer.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(messages, vec![
            ("/paths/~1a~1{x}/get", "operation GET /a/{x} has no operationId: every operation becomes a route named by it"),
            ("/paths/~1a~1{x}/post", "POST /a/{x}: {x} in the path has no path parameter named \"x\""),
            ("/paths/~1b/get/parameters/0", "GET /b: path parameter \"y\" is not a {...} segment of the path"),
            ("/paths/~1c~1{n}.json", "path \"/c/{n}.json\": segment \"{n}.json\" mixes text and a template (only whole-segment {name} is supported)"),
            ("/paths/~1d/get/parameters/0", "parameter \"q\": `in` must be path, query, header or cookie, not Some(\"body\")"),
            ("/paths/~1d/get/parameters/2", "parameter \"k\" is listed twice"),
            ("/paths/~1d/get/requestBody", "a requestBody needs a non-empty `content` mapping of media types"),
            ("/paths/~1d/get/x-authgate", "x-authgate must be a mapping of route keys"),
            ("/paths/~1e/$ref", "a path item `$ref` is not supported: write the operations inline"),
            ("/paths/~1b/get/operationId", "operationId \"dup\" of GET /b is also the operationId of POST /a/{x}: route names must be unique"),
        ]);
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn refs_must_resolve_locally() {
        let doc = json!({
            "paths": {"/a": {"get": {"operationId": "a", "parameters": [
                {"$ref": "#/components/parameters/Missing"},
                {"$ref": "https://example.com/p.yaml#/P"},
                {"$ref": "#/components/parameters/Loop"}
            ]}}},
            "components": {"parameters": {"Loop": {"$ref": "#/components/parameters/Loop"}}}
        });
        let (_, problems) = read(doc, "");
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "$ref \"#/components/parameters/Missing\" points to nothing in this file",
                "$ref must point under #/components/parameters/, not \"https://example.com/p.yaml#/P\"",
                "more than 8 $refs in a chain (a loop?)",
            ]
        );
    }

    #[test]
    fn fragments_are_uri_decoded() {
        assert_eq!(
            fragment_pointer("#/components/schemas/a%20b"),
            "/components/schemas/a b"
        );
        assert_eq!(
            fragment_pointer("#/components/schemas/a~1b"),
            "/components/schemas/a~1b"
        );
    }
}
