//! The spec text as a JSON value, plus the line each value starts on.
//!
//! Both YAML and JSON specs go through the YAML 1.2 loader (JSON is YAML 1.2), so a problem
//! found later by JSON pointer can still be reported as `file:line`. The loader rejects
//! duplicate keys and bounds alias expansion; this layer adds a nesting limit and refuses
//! what JSON cannot hold (non-scalar keys, `.inf`/`.nan`, several documents).

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// Deeper nesting than this is refused: no real spec comes close, and it keeps the
/// recursive conversion (and everything that later walks the value) off the stack's edge.
const MAX_DEPTH: usize = 128;

/// A parsed spec: the JSON value and, for each JSON pointer, the line it starts on.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) root: Value,
    lines: HashMap<String, usize>,
}

impl Document {
    /// The 1-based line of the value at `pointer`, or of its nearest ancestor that has one
    /// (a problem about a missing key is reported on the object that lacks it).
    pub(crate) fn line(&self, pointer: &str) -> Option<usize> {
        let mut p = pointer;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind('/')?;
            p = &p[..cut];
        }
    }
}

/// Why the text is not a document: a 1-based line and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// Parses a YAML or JSON spec into a [`Document`].
pub(crate) fn parse(text: &str) -> Result<Document, ParseError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| ParseError {
        line: e.marker().line(),
        message: format!("not valid YAML or JSON: {}", e.info()),
    })?;
    let mut docs = docs.into_iter();
    let Some(first) = docs.next() else {
        return Err(ParseError {
            line: 1,
            message: "the file is empty: expected an OpenAPI document".into(),
        });
    };
    if let Some(second) = docs.next() {
        return Err(ParseError {
            line: second.span.start.line(),
            message: "the file holds more than one YAML document: expected one OpenAPI document".into(),
        });
    }
    let mut lines = HashMap::new();
    let mut pointer = String::new();
    let root = convert(&first, &mut pointer, &mut lines, 0)?;
    lines.insert(String::new(), first.span.start.line().max(1));
    Ok(Document { root, lines })
}

/// Converts one node; `pointer` is its JSON pointer (restored before returning).
fn convert(
    node: &MarkedYaml<'_>,
    pointer: &mut String,
    lines: &mut HashMap<String, usize>,
    depth: usize,
) -> Result<Value, ParseError> {
    let line = node.span.start.line();
    if depth > MAX_DEPTH {
        return Err(ParseError {
            line,
            message: format!("nested more than {MAX_DEPTH} levels deep"),
        });
    }
    match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar, line),
        YamlData::Representation(text, ..) => Ok(Value::String(text.to_string())),
        YamlData::Tagged(_, inner) => convert(inner, pointer, lines, depth + 1),
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                lines.insert(pointer.clone(), item.span.start.line());
                out.push(convert(item, pointer, lines, depth + 1)?);
                pointer.truncate(len);
            }
            Ok(Value::Array(out))
        }
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let name = key_text(key)?;
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_pointer(&name));
                // the key's line: a block mapping's value starts on the next line
                lines.insert(pointer.clone(), key.span.start.line());
                let converted = convert(value, pointer, lines, depth + 1)?;
                pointer.truncate(len);
                if out.insert(name.clone(), converted).is_some() {
                    return Err(ParseError {
                        line: key.span.start.line(),
                        message: format!("duplicate key {name:?}"),
                    });
                }
            }
            Ok(Value::Object(out))
        }
        YamlData::Alias(_) | YamlData::BadValue => Err(ParseError {
            line,
            message: "a value that cannot be read (an unresolved alias or a mistyped tag)".into(),
        }),
    }
}

/// A scalar as JSON; YAML's `.inf`/`.nan` have no JSON form.
fn scalar_value(scalar: &Scalar<'_>, line: usize) -> Result<Value, ParseError> {
    Ok(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
            Some(n) => Value::Number(n),
            None => {
                return Err(ParseError {
                    line,
                    message: "a number JSON cannot represent (.inf or .nan)".into(),
                })
            }
        },
        Scalar::String(s) => Value::String(s.to_string()),
    })
}

/// A mapping key as a JSON object key: scalars by their text (`200:` is `"200"`).
fn key_text(key: &MarkedYaml<'_>) -> Result<String, ParseError> {
    match &key.data {
        YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Ok(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Ok(b.to_string()),
        YamlData::Value(Scalar::Null) => Ok("null".into()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Ok(f.into_inner().to_string()),
        YamlData::Representation(text, ..) => Ok(text.to_string()),
        YamlData::Tagged(_, inner) => key_text(inner),
        _ => Err(ParseError {
            line: key.span.start.line(),
            message: "a mapping key that is not a scalar (JSON keys are strings)".into(),
        }),
    }
}

/// Escapes one JSON pointer reference token (RFC 6901: `~` -> `~0`, `/` -> `~1`).
pub(crate) fn escape_pointer(token: &str) -> String {
    if !token.contains(['~', '/']) {
        return token.to_string();
    }
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_becomes_json_with_lines() {
        let text = "openapi: 3.1.0\npaths:\n  /orgs:\n    get:\n      operationId: listOrgs\n      responses:\n        200:\n          description: ok\n";
        let doc = parse(text).unwrap();
        assert_eq!(doc.root["paths"]["/orgs"]["get"]["operationId"], json!("listOrgs"));
        assert_eq!(
            doc.root["paths"]["/orgs"]["get"]["responses"]["200"]["description"],
            json!("ok")
        );
        assert_eq!(doc.line(""), Some(1));
        assert_eq!(doc.line("/paths/~1orgs"), Some(3));
        assert_eq!(doc.line("/paths/~1orgs/get"), Some(4));
        assert_eq!(doc.line("/paths/~1orgs/get/operationId"), Some(5));
        // a missing key is reported on its nearest ancestor
        assert_eq!(doc.line("/paths/~1orgs/get/requestBody/content"), Some(4));
    }

    #[test]
    fn json_is_read_with_lines_too() {
        let text = "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {\n    \"/a\": {\"get\": {\"operationId\": \"x\"}}\n  },\n  \"n\": [1, 2.5, true, null]\n}\n";
        let doc = parse(text).unwrap();
        assert_eq!(doc.root["n"], json!([1, 2.5, true, null]));
        assert_eq!(doc.line("/paths/~1a/get"), Some(4));
        assert_eq!(doc.line("/n/1"), Some(6));
    }

    #[test]
    fn yaml_1_2_scalars() {
        let doc = parse("a: yes\nb: on\nc: '1'\nd: 0x10\ne: ~\nf: 1e3\n").unwrap();
        assert_eq!(
            doc.root,
            json!({"a": "yes", "b": "on", "c": "1", "d": 16, "e": null, "f": 1000.0})
        );
    }

    #[test]
    fn refusals_name_the_line() {
        let err = |t: &str| parse(t).unwrap_err();
        assert_eq!(err("a: 1\na: 2\n").line, 2);
        assert!(
            err("a: 1\na: 2\n").message.contains("duplicate"),
            "{:?}",
            err("a: 1\na: 2\n")
        );
        assert!(err("a: [1, 2\n").message.starts_with("not valid YAML or JSON"));
        assert_eq!(err("").message, "the file is empty: expected an OpenAPI document");
        assert_eq!(err("a: 1\n---\nb: 2\n").line, 3);
        assert_eq!(err("x:\n  y: .inf\n").line, 2);
        assert_eq!(err("? [a]\n: 1\n").line, 1);
        // `200` and `"200"` are different YAML keys but the same JSON key
        assert!(err("200: a\n'200': b\n").message.contains("duplicate key \"200\""));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("nested more than 128"));
        let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn aliases_expand_within_the_loader_budget() {
        let doc = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(doc.root["b"], json!({"k": 1}));
        // the billion-laughs shape is refused by the loader's alias budget, not expanded
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        assert!(parse(&bomb).is_err());
    }

    #[test]
    fn pointer_escaping() {
        assert_eq!(escape_pointer("/orgs/{id}"), "~1orgs~1{id}");
        assert_eq!(escape_pointer("a~b"), "a~0b");
        assert_eq!(escape_pointer("plain"), "plain");
    }
}
