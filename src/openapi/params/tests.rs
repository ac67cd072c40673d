use super::*;
use serde_json::json;

/// A parameter named `limit` in `location` with `schema` (and the given style/explode),
/// compiled against a spec whose components hold `Limit` and FastAPI's optional integer.
fn param(location: ParamIn, schema: Value, style: Option<&str>, explode: Option<bool>) -> Result<ParamCheck, String> {
    let style = style.map_or_else(
        || if location == ParamIn::Query { "form" } else { "simple" }.to_string(),
        str::to_string,
    );
    let raw = RawParam {
        name: "limit".into(),
        location,
        required: false,
        schema: Some(schema),
        content_json: None,
        explode: explode.unwrap_or(style == "form"),
        style,
        pointer: String::new(),
    };
    let schemas = SchemaCompiler::new(&json!({"components": {"schemas": {
        "Limit": {"type": "integer", "maximum": 100},
        "Optional": {"anyOf": [{"type": "integer", "maximum": 100}, {"type": "null"}]}
    }}}))
    .unwrap();
    ParamCheck::compile(&raw, &schemas, Patterns::Linear).map(Option::unwrap)
}

fn failures(out: Collector) -> Vec<String> {
    match out.finish() {
        Ok(()) => vec![],
        Err(r) => r.errors.into_iter().map(|e| e.message).collect(),
    }
}

/// Checks `query` against a query parameter `limit` with `schema`.
fn q(schema: Value, query: &str) -> Vec<String> {
    q_styled(schema, None, None, query)
}

fn q_styled(schema: Value, style: Option<&str>, explode: Option<bool>, query: &str) -> Vec<String> {
    let c = param(ParamIn::Query, schema, style, explode).unwrap();
    let mut out = Collector::default();
    c.check_query(Some(query.as_bytes()), &mut out, &mut patterns::REQUEST_BUDGET.clone());
    failures(out)
}

fn one(m: &str) -> Vec<String> {
    vec![m.to_string()]
}

#[test]
fn numbers_are_read_strictly() {
    let s = json!({"type": "integer", "minimum": 1, "maximum": 100});
    assert_eq!(q(s.clone(), "limit=10"), Vec::<String>::new());
    assert_eq!(q(s.clone(), "limit=010"), Vec::<String>::new());
    assert_eq!(q(s.clone(), "limit=500"), one("must be at most 100"));
    assert_eq!(q(s.clone(), "limit=0"), one("must be at least 1"));
    for bad in [
        "abc", "1.5", "1000e-1", "1e2", "", "%205", "5%20", "0x10", "%2B1", "1_0", "inf", "NaN", "--1",
    ] {
        assert_eq!(
            q(s.clone(), &format!("limit={bad}")),
            one("must be an integer"),
            "{bad:?}"
        );
    }
    let n = json!({"type": "number", "maximum": 100});
    assert_eq!(q(n.clone(), "limit=1.5e1"), Vec::<String>::new());
    assert_eq!(q(n.clone(), "limit=1000e-1"), Vec::<String>::new());
    assert_eq!(q(n.clone(), "limit=1001e-1"), one("must be at most 100"));
    assert_eq!(q(n.clone(), "limit=.5"), one("must be a number"));
    assert_eq!(
        q(json!({"$ref": "#/components/schemas/Limit"}), "limit=101"),
        one("must be at most 100")
    );
}

#[test]
fn every_type_the_schema_allows_is_followed() {
    // FastAPI's optional parameter: it was refused whatever the value
    let fastapi = json!({"anyOf": [{"type": "integer", "maximum": 100}, {"type": "null"}]});
    assert_eq!(q(fastapi.clone(), "limit=5"), Vec::<String>::new());
    assert_eq!(
        q(fastapi.clone(), "limit=500"),
        one("must match one of the allowed schemas")
    );
    assert_eq!(
        q(fastapi.clone(), "limit=x"),
        one("must match one of the allowed schemas")
    );
    assert_eq!(
        q(json!({"$ref": "#/components/schemas/Optional"}), "limit=7"),
        Vec::<String>::new()
    );
    assert_eq!(
        q(json!({"type": ["integer", "null"], "maximum": 3}), "limit=4"),
        one("must be at most 3")
    );
    assert_eq!(
        q(
            json!({"oneOf": [{"type": "boolean"}, {"type": "integer"}]}),
            "limit=true"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        q(
            json!({"allOf": [{"$ref": "#/components/schemas/Limit"}, {"minimum": 5}]}),
            "limit=4"
        ),
        one("must be at least 5")
    );
}

#[test]
fn numeric_keywords_without_a_numeric_type_are_refused_at_compile() {
    for schema in [
        json!({"maximum": 100}),
        json!({"type": "string", "minimum": 1}),
        json!({"allOf": [{"multipleOf": 5}]}),
        json!({"type": "array", "items": {"exclusiveMaximum": 3}}),
    ] {
        let err = param(ParamIn::Query, schema.clone(), None, None).unwrap_err();
        assert!(err.starts_with("parameter \"limit\": "), "{schema}: {err}");
        assert!(err.contains("no integer or number type"), "{err}");
    }
    assert!(param(
        ParamIn::Query,
        json!({"$ref": "#/components/schemas/Optional"}),
        None,
        None
    )
    .is_ok());
    assert!(param(ParamIn::Query, json!({"type": "string", "maxLength": 3}), None, None).is_ok());
}

#[test]
fn a_scalar_is_given_once_by_its_plain_name() {
    let s = json!({"type": "integer", "maximum": 100});
    let brackets = one("must be given once, without brackets (a name with [] is read as a list)");
    for bracketed in [
        "limit[]=500",
        "limit%5B%5D=5",
        "limit[0]=5",
        "limit[x]=5",
        "limit[=5",
        "limit=5&limit[]=6",
    ] {
        assert_eq!(q(s.clone(), bracketed), brackets, "{bracketed}");
    }
    assert_eq!(q(s.clone(), "limit=1&limit=2"), one("must be given once"));
    assert_eq!(q(s.clone(), "limit=1&%6Cimit=2"), one("must be given once"));
    assert_eq!(q(s.clone(), "limits=500&limit_=500&x[limit]=500"), Vec::<String>::new());
}

#[test]
fn arrays_in_each_style() {
    let s = json!({"type": "array", "items": {"type": "integer", "maximum": 5}, "maxItems": 3});
    assert_eq!(q(s.clone(), "limit=1&limit=2"), Vec::<String>::new());
    assert_eq!(q(s.clone(), "limit[]=1&limit[]=2&limit[2]=3"), Vec::<String>::new());
    assert_eq!(q(s.clone(), "limit[]=9"), one("/0 must be at most 5"));
    assert_eq!(
        q(s.clone(), "limit=1&limit=2&limit=3&limit=4"),
        one("must have at most 3 items")
    );
    let not_item = one("is a list: give it as name=a&name=b (or name[]=a, name[0]=a)");
    for bad in ["limit[x]=1", "limit[21]=1", "limit[0][0]=1", "limit[=1"] {
        assert_eq!(q(s.clone(), bad), not_item, "{bad}");
    }
    assert_eq!(
        q_styled(s.clone(), Some("form"), Some(false), "limit=1,2, 3"),
        Vec::<String>::new()
    );
    assert_eq!(
        q_styled(s.clone(), Some("form"), Some(false), "limit=1,x"),
        one("/1 must be an integer")
    );
    assert_eq!(
        q_styled(s.clone(), Some("form"), Some(false), "limit=1&limit=2"),
        one("must be given once")
    );
    assert_eq!(
        q_styled(s.clone(), Some("pipeDelimited"), Some(false), "limit=1|2"),
        Vec::<String>::new()
    );
    assert_eq!(
        q_styled(s.clone(), Some("spaceDelimited"), Some(false), "limit=1%202"),
        Vec::<String>::new()
    );
    let h = param(ParamIn::Header, s.clone(), None, None).unwrap();
    let mut out = Collector::default();
    h.check_values(&[b"1, 2", b"3"], &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert_eq!(failures(out), Vec::<String>::new());
}

#[test]
fn objects_follow_their_style() {
    let point = json!({"type": "object", "required": ["lat"], "properties": {
        "lat": {"type": "number", "maximum": 90}, "tags": {"type": "array", "items": {"type": "string"}}
    }});
    // form + explode: the members are top-level names
    assert_eq!(q(point.clone(), "lat=10&tags=a&tags=b&other=1"), Vec::<String>::new());
    assert_eq!(q(point.clone(), "lat=91"), one("/lat must be at most 90"));
    assert_eq!(q(point.clone(), "tags=a"), one("/lat is required"));
    assert_eq!(q(point.clone(), "lat=1&lat=2"), one("member lat: must be given once"));
    // deepObject
    let deep = |query: &str| q_styled(point.clone(), Some("deepObject"), None, query);
    assert_eq!(deep("limit[lat]=10&limit[tags]=a&limit[tags]=b"), Vec::<String>::new());
    assert_eq!(deep("limit[lat]=x"), one("/lat must be a number"));
    assert_eq!(
        deep("limit=1"),
        one("must be given as name[member]=value (one level of brackets)")
    );
    assert_eq!(
        deep("limit[a][b]=1"),
        one("must be given as name[member]=value (one level of brackets)")
    );
    assert_eq!(deep("lat=1"), Vec::<String>::new(), "not given");
    // a member's name is never echoed long
    let long = format!("limit[{}]=1&limit[{}]=2", "k".repeat(500), "k".repeat(500));
    let got = q_styled(
        json!({"type": "object", "properties": {}}),
        Some("deepObject"),
        None,
        &long,
    );
    assert_eq!(got, one(&format!("member {}…: must be given once", "k".repeat(100))));
    // form, no explode: one list of pairs
    assert_eq!(
        q_styled(point.clone(), Some("form"), Some(false), "limit=lat,5"),
        Vec::<String>::new()
    );
    assert_eq!(
        q_styled(point.clone(), Some("form"), Some(false), "limit=lat"),
        one("must be a list of name,value pairs")
    );
    // path and header: simple
    let h = param(ParamIn::Header, point.clone(), None, Some(true)).unwrap();
    let mut out = Collector::default();
    h.check_values(&[b"lat=95"], &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert_eq!(failures(out), one("/lat must be at most 90"));
}

#[test]
fn required_is_checked_on_what_the_style_sends() {
    let mut raw = RawParam {
        name: "point".into(),
        location: ParamIn::Query,
        required: true,
        schema: Some(json!({"type": "object", "properties": {"lat": {"type": "number"}, "lng": {"type": "number"}}})),
        content_json: None,
        explode: true,
        style: "form".into(),
        pointer: String::new(),
    };
    let schemas = SchemaCompiler::new(&json!({})).unwrap();
    let check = |raw: &RawParam, query: &str| {
        let c = ParamCheck::compile(raw, &schemas, Patterns::Linear).unwrap().unwrap();
        let mut out = Collector::default();
        c.check_query(Some(query.as_bytes()), &mut out, &mut patterns::REQUEST_BUDGET.clone());
        failures(out)
    };
    assert_eq!(check(&raw, "lng=2"), Vec::<String>::new());
    assert_eq!(check(&raw, "point=1"), one("is required"));
    raw.style = "deepObject".into();
    assert_eq!(check(&raw, "point[lng]=2"), Vec::<String>::new());
    assert_eq!(check(&raw, "lng=2"), one("is required"));
    // a free-form exploded object: nothing tells its members, so presence cannot be read
    raw.style = "form".into();
    raw.schema = Some(json!({"type": "object"}));
    assert_eq!(check(&raw, ""), Vec::<String>::new());
}

#[test]
fn strings_booleans_enums_patterns_formats() {
    assert_eq!(q(json!({"type": "boolean"}), "limit=true"), Vec::<String>::new());
    assert_eq!(q(json!({"type": "boolean"}), "limit=yes"), one("must be a boolean"));
    assert_eq!(
        q(json!({"type": "string", "enum": ["asc", "desc"]}), "limit=up"),
        one("must be one of: \"asc\", \"desc\"")
    );
    assert_eq!(
        q(json!({"type": "string", "pattern": "^[a-z]+$"}), "limit=A"),
        one("must match the pattern ^[a-z]+$")
    );
    assert_eq!(
        q(json!({"type": "string", "minLength": 2}), "limit=a"),
        one("must be at least 2 characters long")
    );
    assert_eq!(
        q(json!({"type": "string", "format": "uuid"}), "limit=x"),
        one("must be a valid uuid")
    );
    assert_eq!(
        q(json!({"type": "string", "format": "email"}), "limit=a@b.co"),
        Vec::<String>::new()
    );
    // a string-typed parameter keeps "10" a string
    assert_eq!(
        q(json!({"type": "string", "maxLength": 1}), "limit=10"),
        one("must be at most 1 characters long")
    );
}

#[test]
fn presence_repetition_and_encoding() {
    let s = json!({"type": "integer"});
    let required = RawParam {
        name: "limit".into(),
        location: ParamIn::Query,
        required: true,
        schema: Some(s),
        content_json: None,
        explode: true,
        style: "form".into(),
        pointer: String::new(),
    };
    let c = ParamCheck::compile(&required, &SchemaCompiler::new(&json!({})).unwrap(), Patterns::Linear)
        .unwrap()
        .unwrap();
    let mut out = Collector::default();
    c.check_query(None, &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert_eq!(failures(out), one("is required"));
    let p = param(ParamIn::Path, json!({"type": "string"}), None, None).unwrap();
    let mut out = Collector::default();
    p.check_values(&[&[0xff][..]], &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert_eq!(failures(out), one("must be valid UTF-8"));
    let h = param(ParamIn::Header, json!({"type": "integer"}), None, None).unwrap();
    let mut out = Collector::default();
    h.check_values(&[b"1", b"2"], &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert_eq!(failures(out), one("must be given once"));
}

#[test]
fn json_content_parameters() {
    let raw = RawParam {
        name: "filter".into(),
        location: ParamIn::Query,
        required: false,
        schema: None,
        content_json: Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}})),
        explode: true,
        style: "form".into(),
        pointer: String::new(),
    };
    let c = ParamCheck::compile(&raw, &SchemaCompiler::new(&json!({})).unwrap(), Patterns::Linear)
        .unwrap()
        .unwrap();
    let check = |query: &str| {
        let mut out = Collector::default();
        c.check_query(Some(query.as_bytes()), &mut out, &mut patterns::REQUEST_BUDGET.clone());
        failures(out)
    };
    assert_eq!(check("filter=%7B%22n%22%3A1%7D"), Vec::<String>::new());
    assert_eq!(check("filter=%7B%22n%22%3A%22x%22%7D"), one("/n must be an integer"));
    assert_eq!(check("filter=%7B"), one("must be valid JSON"));
}

#[test]
fn other_styles_are_presence_only() {
    let c = param(
        ParamIn::Query,
        json!({"type": "array", "items": {"type": "integer"}}),
        Some("deepObject"),
        Some(false),
    )
    .unwrap();
    let mut out = Collector::default();
    c.check_query(Some(b"limit[x]=a"), &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert!(out.finish().is_ok());
    let label = param(ParamIn::Path, json!({"type": "integer"}), Some("label"), None).unwrap();
    let mut out = Collector::default();
    label.check_values(&[b".5"], &mut out, &mut patterns::REQUEST_BUDGET.clone());
    assert!(out.finish().is_ok());
}

#[test]
fn cookies_and_reserved_headers_are_not_checked() {
    let mut raw = RawParam {
        name: "Content-Type".into(),
        location: ParamIn::Header,
        required: true,
        schema: None,
        content_json: None,
        explode: false,
        style: "simple".into(),
        pointer: String::new(),
    };
    let schemas = SchemaCompiler::new(&json!({})).unwrap();
    assert!(ParamCheck::compile(&raw, &schemas, Patterns::Linear).unwrap().is_none());
    raw.location = ParamIn::Cookie;
    raw.name = "session".into();
    assert!(ParamCheck::compile(&raw, &schemas, Patterns::Linear).unwrap().is_none());
}

#[test]
fn header_values_are_every_field_line() {
    let mut h = HeaderMap::new();
    h.append("x-trace", "a".parse().unwrap());
    h.append("X-Trace", "b".parse().unwrap());
    assert_eq!(header_values(&h, "x-trace"), vec![&b"a"[..], &b"b"[..]]);
}
