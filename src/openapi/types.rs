//! Text to the value a schema checks: what parameters and form fields become before their
//! schema sees them (docs/reference.md, the OpenAPI section: parameters).
//!
//! Query, path and header values and form fields arrive as text; the schema describes the
//! value after the upstream's framework converted it. Which conversions apply is read from
//! every type the schema allows, through `$ref`, `allOf` (the types all branches allow),
//! `anyOf`/`oneOf` (the types any branch allows), type arrays and `const`/`enum` values:
//! FastAPI writes `anyOf: [{type: integer}, {type: "null"}]` for every optional typed
//! parameter, and a value of it must become a number.
//!
//! Numbers are read strictly, so that the gateway and the upstream read the same value:
//! an integer is `-?[0-9]+` (no `+5`, spaces, `_`, hex, `1e3` or `1.0`: `parseInt("1000e-1")`
//! is 1000), a number `-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?`. Text that is not one stays
//! text, and a schema that wants a number then says so.

use serde_json::{Number, Value};

use super::schema::SchemaCompiler;

/// The JSON types a schema lets a value be (`all` when it does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Types(u8);

const NULL: u8 = 1;
const BOOLEAN: u8 = 1 << 1;
const INTEGER: u8 = 1 << 2;
const NUMBER: u8 = 1 << 3;
const STRING: u8 = 1 << 4;
const ARRAY: u8 = 1 << 5;
const OBJECT: u8 = 1 << 6;
const ALL: u8 = (1 << 7) - 1;

/// Keywords that only mean something for numbers: a schema with one of them and no numeric
/// type checks nothing on text (the value stays a string, which they ignore).
const NUMERIC_KEYWORDS: [&str; 5] = [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// How deep `$ref`s and combinators are followed (a cycle ends here, as "anything").
const MAX_DEPTH: usize = 16;

impl Types {
    /// Anything (a schema that names no type).
    pub(crate) const ANY: Types = Types(ALL);

    fn named(name: &str) -> Types {
        Types(match name {
            "null" => NULL,
            "boolean" => BOOLEAN,
            "integer" => INTEGER,
            "number" => NUMBER | INTEGER,
            "string" => STRING,
            "array" => ARRAY,
            "object" => OBJECT,
            _ => 0,
        })
    }

    fn of_value(v: &Value) -> Types {
        Types(match v {
            Value::Null => NULL,
            Value::Bool(_) => BOOLEAN,
            Value::Number(n) if n.is_i64() || n.is_u64() => INTEGER | NUMBER,
            Value::Number(_) => NUMBER,
            Value::String(_) => STRING,
            Value::Array(_) => ARRAY,
            Value::Object(_) => OBJECT,
        })
    }

    fn union(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }

    fn intersect(self, other: Types) -> Types {
        Types(self.0 & other.0)
    }

    /// Whether the schema names a type at all (else it allows anything).
    pub(crate) fn is_any(self) -> bool {
        self.0 == ALL
    }

    /// A number may be written for it: an integer (`-?[0-9]+`) at least.
    pub(crate) fn integer(self) -> bool {
        self.0 & INTEGER != 0
    }

    /// A fraction or an exponent may be written for it.
    pub(crate) fn number(self) -> bool {
        self.0 & NUMBER != 0
    }

    pub(crate) fn boolean(self) -> bool {
        self.0 & BOOLEAN != 0
    }

    pub(crate) fn array(self) -> bool {
        self.0 & ARRAY != 0
    }

    pub(crate) fn object(self) -> bool {
        self.0 & OBJECT != 0
    }

    /// Only arrays (a named type, not "anything").
    pub(crate) fn only_array(self) -> bool {
        self.0 == ARRAY
    }
}

/// The types `schema` allows, `$ref`s and combinators followed.
pub(crate) fn types_of(schema: &Value, schemas: &SchemaCompiler) -> Types {
    types_at(schema, schemas, 0)
}

fn types_at(schema: &Value, schemas: &SchemaCompiler, depth: usize) -> Types {
    let map = match schema {
        Value::Bool(false) => return Types(0),
        Value::Object(map) if depth < MAX_DEPTH => map,
        _ => return Types::ANY,
    };
    let mut t = match map.get("type") {
        Some(Value::String(name)) => Types::named(name),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .fold(Types(0), |t, n| t.union(Types::named(n))),
        _ => Types::ANY,
    };
    if let Some(v) = map.get("const") {
        t = t.intersect(Types::of_value(v));
    }
    if let Some(Value::Array(values)) = map.get("enum") {
        t = t.intersect(values.iter().fold(Types(0), |acc, v| acc.union(Types::of_value(v))));
    }
    if map.contains_key("$ref") {
        let target = schemas.resolve(schema).filter(|r| !std::ptr::eq(*r, schema));
        t = t.intersect(target.map_or(Types::ANY, |r| types_at(r, schemas, depth + 1)));
    }
    for sub in map.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        t = t.intersect(types_at(sub, schemas, depth + 1));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = map.get(key) {
            let any = branches
                .iter()
                .fold(Types(0), |acc, b| acc.union(types_at(b, schemas, depth + 1)));
            t = t.intersect(any);
        }
    }
    t
}

/// The numeric keywords of `schema` (and of what it applies in place) when it allows no
/// number: such a schema checks nothing on text. Empty when it is fine.
pub(crate) fn untyped_numeric_keywords(schema: &Value, schemas: &SchemaCompiler) -> Vec<&'static str> {
    if types_of(schema, schemas).integer() && !types_of(schema, schemas).is_any() {
        return Vec::new();
    }
    let mut found = Vec::new();
    numeric_keywords(schema, schemas, 0, &mut found);
    found.sort_unstable();
    found.dedup();
    found
}

fn numeric_keywords(schema: &Value, schemas: &SchemaCompiler, depth: usize, out: &mut Vec<&'static str>) {
    let Value::Object(map) = schema else { return };
    if depth >= MAX_DEPTH {
        return;
    }
    out.extend(NUMERIC_KEYWORDS.iter().filter(|k| map.contains_key(**k)));
    for sub in in_place(schema, schemas) {
        numeric_keywords(sub, schemas, depth + 1, out);
    }
}

/// The subschemas `schema` applies to the same value: its `$ref`'s target and every entry
/// of its `allOf`, `anyOf` and `oneOf`.
fn in_place<'s>(schema: &'s Value, schemas: &'s SchemaCompiler) -> impl Iterator<Item = &'s Value> {
    let target = schema
        .get("$ref")
        .and(schemas.resolve(schema))
        .filter(|r| !std::ptr::eq(*r, schema));
    let lists = ["allOf", "anyOf", "oneOf"]
        .into_iter()
        .flat_map(move |k| schema.get(k).and_then(Value::as_array).into_iter().flatten());
    target.into_iter().chain(lists)
}

/// The subschemas that describe an array's items or an object's members, gathered through
/// `$ref` and the combinators (every branch: a member's types are read from all of them).
pub(crate) fn parts<'s>(schema: &'s Value, schemas: &'s SchemaCompiler, key: &str) -> Vec<&'s Value> {
    let mut out = Vec::new();
    parts_at(schema, schemas, key, 0, &mut out);
    out
}

fn parts_at<'s>(schema: &'s Value, schemas: &'s SchemaCompiler, key: &str, depth: usize, out: &mut Vec<&'s Value>) {
    let Value::Object(map) = schema else { return };
    if depth >= MAX_DEPTH {
        return;
    }
    if let Some(v) = map.get(key) {
        out.push(v);
    }
    for sub in in_place(schema, schemas) {
        parts_at(sub, schemas, key, depth + 1, out);
    }
}

/// The types an array's items may have (`items`, through `$ref` and combinators).
pub(crate) fn item_types(schema: &Value, schemas: &SchemaCompiler) -> Types {
    let items = parts(schema, schemas, "items");
    if items.is_empty() {
        return Types::ANY;
    }
    items.iter().fold(Types::ANY, |t, s| t.intersect(types_of(s, schemas)))
}

/// The declared properties of an object schema, with the types each may have (through
/// `$ref` and combinators; a name declared by several branches gets the types they share).
pub(crate) fn property_types(schema: &Value, schemas: &SchemaCompiler) -> Vec<(String, Types)> {
    let mut out: Vec<(String, Types)> = Vec::new();
    for props in parts(schema, schemas, "properties") {
        let Value::Object(props) = props else { continue };
        for (name, sub) in props {
            let t = types_of(sub, schemas);
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, existing)) => *existing = existing.intersect(t),
                None => out.push((name.clone(), t)),
            }
        }
    }
    out
}

/// Whether text is an integer as the contract reads one: `-?[0-9]+`.
pub(crate) fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether text is a number as the contract reads one: `-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?`.
pub(crate) fn is_number_text(text: &str) -> bool {
    let rest = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    digits(whole) && fraction.is_none_or(digits) && exponent_ok
}

/// Text to the value the schema checks, by the types it allows: a number (strict syntax,
/// leading zeros read as `parseInt` reads them), `true`/`false` as a boolean, else the
/// text itself. A number JSON cannot hold (`1e999`) stays text.
pub(crate) fn coerce(text: &str, types: Types) -> Value {
    if types.integer() && !types.is_any() && is_integer_text(text) {
        if let Some(n) = number(text) {
            return Value::Number(n);
        }
    }
    if types.number() && !types.is_any() && is_number_text(text) {
        if let Some(n) = number(text) {
            return Value::Number(n);
        }
    }
    if types.boolean() && !types.is_any() && (text == "true" || text == "false") {
        return Value::Bool(text == "true");
    }
    Value::String(text.to_string())
}

/// A number in the contract's syntax as JSON: leading zeros of the whole part dropped
/// (`007` is 7; JSON itself refuses them), an integer beyond 64 bits as a float.
fn number(text: &str) -> Option<Number> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", text),
    };
    let end = rest.find(['.', 'e', 'E']).unwrap_or(rest.len());
    let whole = rest[..end].trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let normal = format!("{sign}{whole}{}", &rest[end..]);
    if let Ok(i) = normal.parse::<i64>() {
        return Some(i.into());
    }
    serde_json::from_str::<Number>(&normal).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiler() -> SchemaCompiler {
        SchemaCompiler::new(&json!({"components": {"schemas": {
            "Limit": {"type": "integer", "maximum": 100},
            "MaybeLimit": {"anyOf": [{"$ref": "#/components/schemas/Limit"}, {"type": "null"}]},
            "Loop": {"$ref": "#/components/schemas/Loop"}
        }}}))
        .unwrap()
    }

    #[test]
    fn types_follow_refs_and_combinators() {
        let c = compiler();
        let t = |s: Value| types_of(&s, &c);
        assert!(t(json!({"type": "integer"})).integer());
        assert!(!t(json!({"type": "integer"})).number());
        assert!(t(json!({"type": "number"})).integer() && t(json!({"type": "number"})).number());
        // FastAPI's optional parameter
        let fastapi = t(json!({"anyOf": [{"type": "integer"}, {"type": "null"}]}));
        assert!(fastapi.integer() && !fastapi.is_any());
        assert!(t(json!({"$ref": "#/components/schemas/MaybeLimit"})).integer());
        assert!(t(json!({"type": ["boolean", "null"]})).boolean());
        assert!(t(json!({"oneOf": [{"type": "string"}, {"type": "number"}]})).number());
        assert!(t(json!({"allOf": [{"type": ["integer", "string"]}, {"type": "integer"}]})).integer());
        assert!(!t(json!({"allOf": [{"type": "string"}, {"minLength": 1}]})).integer());
        assert!(t(json!({"enum": [1, 2]})).integer());
        assert!(!t(json!({"enum": ["a"]})).integer());
        assert!(t(json!({"const": 1.5})).number());
        assert!(t(json!({"minimum": 1})).is_any());
        assert!(t(json!({"$ref": "#/components/schemas/Loop"})).is_any());
        assert!(t(json!({"type": "array", "items": {"type": "integer"}})).only_array());
    }

    #[test]
    fn untyped_numeric_keywords_are_found() {
        let c = compiler();
        let u = |s: Value| untyped_numeric_keywords(&s, &c);
        assert_eq!(u(json!({"maximum": 100})), vec!["maximum"]);
        assert_eq!(u(json!({"minimum": 1, "multipleOf": 2})), vec!["minimum", "multipleOf"]);
        assert_eq!(u(json!({"allOf": [{"exclusiveMaximum": 5}]})), vec!["exclusiveMaximum"]);
        assert_eq!(u(json!({"type": "string", "maximum": 1})), vec!["maximum"]);
        assert!(u(json!({"type": "integer", "maximum": 100})).is_empty());
        assert!(u(json!({"$ref": "#/components/schemas/MaybeLimit"})).is_empty());
        assert!(u(json!({"type": "string", "maxLength": 3})).is_empty());
        assert!(u(json!({})).is_empty());
    }

    #[test]
    fn number_syntax() {
        for int in ["0", "7", "-12", "007", "123456789012345678901234567890"] {
            assert!(is_integer_text(int) && is_number_text(int), "{int}");
        }
        for not_int in [
            "", "-", "+5", " 5", "5 ", "1_000", "0x10", "1e3", "1.0", "1000e-1", "--1", "١",
        ] {
            assert!(!is_integer_text(not_int), "{not_int}");
        }
        for num in ["1.5", "-0.25", "1e3", "1E+3", "1000e-1", "2.5e-10"] {
            assert!(is_number_text(num), "{num}");
        }
        for not_num in [".5", "5.", "1e", "1e+", "+1.5", "1.5.5", "inf", "NaN", "1,5", "1 e3"] {
            assert!(!is_number_text(not_num), "{not_num}");
        }
    }

    #[test]
    fn coercion_by_the_allowed_types() {
        let c = compiler();
        let int = types_of(&json!({"type": "integer"}), &c);
        let num = types_of(&json!({"type": "number"}), &c);
        let opt = types_of(&json!({"anyOf": [{"type": "integer"}, {"type": "null"}]}), &c);
        let flag = types_of(&json!({"type": "boolean"}), &c);
        assert_eq!(coerce("42", int), json!(42));
        assert_eq!(coerce("007", int), json!(7));
        assert_eq!(coerce("-0", int), json!(0));
        assert_eq!(coerce("1000e-1", int), json!("1000e-1"));
        assert_eq!(coerce("1000e-1", num), json!(100.0));
        assert_eq!(coerce("1.5", int), json!("1.5"));
        assert_eq!(coerce("+5", num), json!("+5"));
        assert_eq!(coerce("1e999", num), json!("1e999"));
        assert_eq!(coerce("5", opt), json!(5));
        assert_eq!(coerce("null", opt), json!("null"));
        assert_eq!(coerce("true", flag), json!(true));
        assert_eq!(coerce("5", Types::ANY), json!("5"));
        assert!(coerce("123456789012345678901234567890", int).is_number());
    }

    #[test]
    fn members_and_items() {
        let c = compiler();
        let s = json!({"allOf": [
            {"type": "object", "properties": {"lat": {"type": "number"}, "tag": {"type": "string"}}},
            {"properties": {"n": {"$ref": "#/components/schemas/Limit"}}}
        ]});
        let props = property_types(&s, &c);
        let names: Vec<&str> = props.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["lat", "tag", "n"]);
        assert!(props[2].1.integer());
        let a = json!({"type": "array", "items": {"$ref": "#/components/schemas/MaybeLimit"}});
        assert!(item_types(&a, &c).integer());
        assert!(item_types(&json!({"type": "array"}), &c).is_any());
    }
}
