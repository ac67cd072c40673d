//! The fuzz checks: one `pub fn <target>(data: &[u8])` per cargo-fuzz target.
//!
//! Included by `fuzz/fuzz_targets/<target>.rs` and by `tests/e2e/fuzz_regressions.rs`, so the
//! regression test runs exactly what the fuzzer runs. A check fails by panicking. Each
//! target compares authgate against a small, independent oracle (ring for signatures,
//! ipnet for CIDRs, a plain re-statement of the contract for paths, routes and the journal)
//! besides "never panics".

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use authgate::config::load::{parse_directory, settings_from_text};
use authgate::config::{Problems, Settings};
use authgate::journal;
use authgate::openapi::{
    self, BodyPlan, CompiledSpec, HeldBody, Operation, Rejection, RequestHead, RouteOutcome, MAX_ERRORS,
};
use authgate::policy::client_ip::{resolve, ClientIp, ClientIpPolicy, IpSource};
use authgate::policy::identity::valid_id;
use authgate::policy::ip_set::{parse_net, IpSet};
use authgate::policy::jwt::{verify, IdClaim, JwtPolicy, KeySet, TokenError, VerifiedToken, VerifyKey, MAX_TOKEN_LEN};
use authgate::policy::method::{check_method, check_query, MethodProblem};
use authgate::policy::path::{check, check_semicolons, decode_segment, path_of, PathProblem};
use authgate::policy::pipeline::request_line;
use authgate::policy::routes::{AuthKind, ErrorFormat, Pattern, Route, RouteTable};
use authgate::policy::token_cache::TokenCache;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use ipnet::{IpNet, Ipv4Net};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The shipped files: the routes, `[jwt]` and `[client_ip]` the targets run against.
pub const SHIPPED_CONFIG: &str = include_str!("../config/authgate.toml");
pub const SHIPPED_POLICY: &str = include_str!("../config/partners.toml");

/// "Now" for token checks (2027-01-15); the seed tokens are minted around it.
pub const NOW: f64 = 1_800_000_000.0;
/// Much later: every token with an `exp` has expired by then.
pub const LATER: f64 = NOW + 400_000_000.0;
/// The HS256 secret of kid `hs-1` (the seeds are signed with it).
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The shipped `config/authgate.toml`, validated (it must have no problems).
pub fn shipped() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        // its [[openapi]] specs are read relative to it: name the file where it is (the
        // repository root in tests, fuzz/ under cargo fuzz)
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut path = root.join("config/authgate.toml");
        if !path.exists() {
            path = root.join("../config/authgate.toml");
        }
        let (settings, problems) = settings_from_text(&path, SHIPPED_CONFIG);
        assert!(problems.is_empty(), "config/authgate.toml: {problems}");
        settings.expect("config/authgate.toml parses")
    })
}

fn shipped_toml() -> &'static toml::Value {
    static V: OnceLock<toml::Value> = OnceLock::new();
    V.get_or_init(|| toml::from_str(SHIPPED_CONFIG).expect("config/authgate.toml is TOML"))
}

// ------------------------------------------------------------------------------------------
// jwt_verify: the input is the token (the text after `Bearer `).
// ------------------------------------------------------------------------------------------

/// How the oracle checks a signature, independently of jsonwebtoken.
enum Oracle {
    Hmac(&'static [u8]),
    Ring(&'static dyn ring::signature::VerificationAlgorithm, Vec<u8>),
}

impl Oracle {
    fn verifies(&self, message: &[u8], s64: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(s64) else {
            return false;
        };
        match self {
            Oracle::Hmac(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::verify(&key, message, &sig).is_ok()
            }
            Oracle::Ring(alg, raw) => ring::signature::UnparsedPublicKey::new(*alg, raw)
                .verify(message, &sig)
                .is_ok(),
        }
    }
}

struct KeyRef {
    kid: &'static str,
    alg: Algorithm,
    oracle: Oracle,
}

struct JwtWorld {
    /// Key sets with, for each, what the oracle knows about its keys.
    sets: Vec<(KeySet, Vec<KeyRef>)>,
    policies: Vec<JwtPolicy>,
}

const RS1: &[u8] = include_bytes!("../tests/fixtures/keys/test-only-rs256-1.pub.pem");
const RS2: &[u8] = include_bytes!("../tests/fixtures/keys/test-only-rs256-2.pub.pem");
const ES1: &[u8] = include_bytes!("../tests/fixtures/keys/test-only-es256-1.pub.pem");
const ED1: &[u8] = include_bytes!("../tests/fixtures/keys/test-only-ed25519-1.pub.pem");
const ED2: &[u8] = include_bytes!("../tests/fixtures/keys/test-only-ed25519-2.pub.pem");

/// One DER TLV with the expected tag: (contents, what follows).
fn der_tlv(d: &[u8], tag: u8) -> (&[u8], &[u8]) {
    assert_eq!(d[0], tag, "DER tag");
    let (len, head) = match d[1] {
        n if n < 0x80 => (usize::from(n), 2),
        n => {
            let k = usize::from(n & 0x7f);
            (
                d[2..2 + k].iter().fold(0usize, |a, &b| (a << 8) | usize::from(b)),
                2 + k,
            )
        }
    };
    (&d[head..head + len], &d[head + len..])
}

/// The subjectPublicKey bits of an SPKI PEM: what ring takes (RSAPublicKey DER, the EC
/// point, the raw Ed25519 key).
fn spki_key(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is text");
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body.trim()).expect("PEM body is base64");
    let (spki, _) = der_tlv(&der, 0x30);
    let (_algorithm, rest) = der_tlv(spki, 0x30);
    let (bits, _) = der_tlv(rest, 0x03);
    assert_eq!(bits[0], 0, "no unused bits");
    bits[1..].to_vec()
}

fn key(kid: &'static str, alg: Algorithm, material: &'static [u8]) -> (VerifyKey, KeyRef) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256};
    let (key, oracle) = match alg {
        Algorithm::HS256 => (DecodingKey::from_secret(material), Oracle::Hmac(material)),
        Algorithm::RS256 => (
            DecodingKey::from_rsa_pem(material).expect("RSA PEM"),
            Oracle::Ring(&RSA_PKCS1_2048_8192_SHA256, spki_key(material)),
        ),
        Algorithm::ES256 => (
            DecodingKey::from_ec_pem(material).expect("EC PEM"),
            Oracle::Ring(&ECDSA_P256_SHA256_FIXED, spki_key(material)),
        ),
        Algorithm::EdDSA => (
            DecodingKey::from_ed_pem(material).expect("Ed25519 PEM"),
            Oracle::Ring(&ED25519, spki_key(material)),
        ),
        other => panic!("no oracle for {other:?}"),
    };
    let vk = VerifyKey::new(kid, vec![alg], &key).expect("a key that fits its algorithm");
    (vk, KeyRef { kid, alg, oracle })
}

fn key_set(keys: Vec<(VerifyKey, KeyRef)>) -> (KeySet, Vec<KeyRef>) {
    let (vks, refs): (Vec<_>, Vec<_>) = keys.into_iter().unzip();
    (KeySet::new(vks), refs)
}

fn jwt_world() -> &'static JwtWorld {
    static W: OnceLock<JwtWorld> = OnceLock::new();
    W.get_or_init(|| {
        let all = key_set(vec![
            key("hs-1", Algorithm::HS256, HS_SECRET),
            key("rs-1", Algorithm::RS256, RS1),
            key("rs-2", Algorithm::RS256, RS2),
            key("es-1", Algorithm::ES256, ES1),
            key("ed-1", Algorithm::EdDSA, ED1),
            key("ed-2", Algorithm::EdDSA, ED2),
        ]);
        // one key: a token without `kid` is verified with it
        let only = key_set(vec![key("ed-1", Algorithm::EdDSA, ED1)]);
        let strict = JwtPolicy {
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            issuer: None,
            audience: vec![],
            leeway_secs: 0.0,
            require_exp: true,
            partner_claim: "partner".into(),
            org_claim: "org".into(),
            key_id_claim: "kid".into(),
            org_must_be_listed: true,
            require_key_id: true,
        };
        JwtWorld {
            sets: vec![all, only],
            policies: vec![shipped().fixed.jwt.clone(), strict],
        }
    })
}

/// Whether the token has the shape `verify` must insist on before anything else.
fn well_formed(token: &str) -> bool {
    let charset = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    let parts: Vec<&str> = token.split('.').collect();
    charset && parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
}

fn id_claim(v: Option<&Value>) -> IdClaim {
    match v {
        None => IdClaim::Absent,
        Some(Value::String(s)) => IdClaim::Str(s.as_str().into()),
        Some(_) => IdClaim::NotAString,
    }
}

/// A token `verify` accepted: re-check everything the contract asks, independently.
fn accepted(token: &str, refs: &[KeyRef], policy: &JwtPolicy, now: f64, v: &VerifiedToken) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = URL_SAFE_NO_PAD.decode(parts[0]).expect("accepted header is base64url");
    let header: Value = serde_json::from_slice(&header).expect("accepted header is JSON");
    let header = header.as_object().expect("accepted header is an object");
    let alg_text = header
        .get("alg")
        .and_then(Value::as_str)
        .expect("accepted header has alg");
    let alg: Algorithm = alg_text.parse().expect("accepted alg is an algorithm");
    assert!(policy.algorithms.contains(&alg), "alg {alg:?} is not allowed");
    assert!(
        !header.contains_key("crit") && !header.contains_key("b64"),
        "crit/b64 accepted"
    );
    let key = match header.get("kid") {
        Some(Value::String(kid)) => refs
            .iter()
            .find(|r| r.kid == kid)
            .unwrap_or_else(|| panic!("unknown kid {kid:?} accepted")),
        None | Some(Value::Null) => {
            assert_eq!(refs.len(), 1, "a token without kid was accepted with several keys");
            &refs[0]
        }
        Some(other) => panic!("kid {other} accepted"),
    };
    assert_eq!(key.alg, alg, "alg does not match the key's");
    let signed = &token[..parts[0].len() + 1 + parts[1].len()];
    assert!(
        key.oracle.verifies(signed.as_bytes(), parts[2]),
        "signature accepted by authgate but refused by ring (kid {})",
        key.kid
    );
    let claims = URL_SAFE_NO_PAD.decode(parts[1]).expect("accepted payload is base64url");
    let claims: Value = serde_json::from_slice(&claims).expect("accepted claims are JSON");
    let claims = claims.as_object().expect("accepted claims are an object");
    if let Some(iss) = &policy.issuer {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(iss.as_str()), "iss");
    }
    if !policy.audience.is_empty() {
        let ours = |s: &str| policy.audience.iter().any(|a| a == s);
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => ours(s),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(ours),
            _ => false,
        };
        assert!(ok, "aud not ours");
    }
    let date = |name: &str| match claims.get(name) {
        None => None,
        Some(Value::Number(n)) => Some(n.as_f64().expect("a number")),
        Some(other) => panic!("{name} = {other} accepted"),
    };
    assert_eq!(v.exp, date("exp"));
    assert_eq!(v.nbf, date("nbf"));
    assert_eq!(v.iat, date("iat"));
    let leeway = policy.leeway_secs;
    match v.exp {
        Some(exp) => assert!(now <= exp + leeway, "expired token accepted"),
        None => assert!(!policy.require_exp, "token without exp accepted"),
    }
    if let Some(nbf) = v.nbf {
        assert!(now + leeway >= nbf, "token before nbf accepted");
    }
    if let Some(iat) = v.iat {
        assert!(iat <= now + leeway, "token issued in the future accepted");
    }
    assert_eq!(v.partner, id_claim(claims.get(&policy.partner_claim)));
    assert_eq!(v.org, id_claim(claims.get(&policy.org_claim)));
    let key_id = match claims.get(&policy.key_id_claim) {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => panic!("key id claim {other} accepted"),
    };
    assert_eq!(v.key_id.as_deref(), key_id);
}

/// An accepted token's key id is present under `require_key_id` and is a valid id.
fn key_id_rules(policy: &JwtPolicy, v: &VerifiedToken) {
    let key_id = v.key_id.as_deref();
    assert!(
        key_id.is_some() || !policy.require_key_id,
        "token without a key id accepted"
    );
    assert!(key_id.is_none_or(valid_id), "key id {key_id:?} accepted");
}

fn verdict(token: &str, refs: &[KeyRef], policy: &JwtPolicy, now: f64, got: &Result<VerifiedToken, TokenError>) {
    if token.len() > MAX_TOKEN_LEN {
        assert_eq!(got, &Err(TokenError::TooLarge), "token over 8 KiB");
        return;
    }
    if !well_formed(token) {
        assert_eq!(got, &Err(TokenError::Malformed), "not three non-empty base64url parts");
        return;
    }
    match got {
        Ok(v) => {
            accepted(token, refs, policy, now, v);
            key_id_rules(policy, v);
        }
        Err(TokenError::TooLarge) => panic!("TooLarge for a token of {} bytes", token.len()),
        Err(TokenError::DuplicateHeader) => panic!("verify cannot see headers"),
        Err(_) => {}
    }
}

/// `verify`'s verdicts on the input at `NOW`, for (all keys, shipped `[jwt]`), (all keys,
/// strict), (one EdDSA key, shipped), (one EdDSA key, strict): for tests and triage.
pub fn jwt_verdicts(data: &[u8]) -> Vec<Result<VerifiedToken, TokenError>> {
    let token = String::from_utf8_lossy(data);
    let world = jwt_world();
    world
        .sets
        .iter()
        .flat_map(|(keys, _)| world.policies.iter().map(|p| verify(&token, keys, p, NOW)))
        .collect()
}

/// Verifies the input as a token with every key set and policy, checks each verdict
/// against the oracle, and checks that the token cache answers exactly as `verify` does,
/// on a miss and on a hit, now and much later.
pub fn jwt_verify(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let world = jwt_world();
    for (keys, refs) in &world.sets {
        for policy in &world.policies {
            let cache = TokenCache::new(16);
            for now in [NOW, LATER] {
                let direct = verify(&token, keys, policy, now);
                verdict(&token, refs, policy, now, &direct);
                assert_eq!(verify(&token, keys, policy, now), direct, "verify is not deterministic");
                for round in ["miss", "hit"] {
                    let cached = cache.verify(&token, keys, policy, now).map(|v| (*v).clone());
                    assert_eq!(cached, direct, "token cache ({round}) disagrees with verify at {now}");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// xff: line 1 = the TCP peer (used when it parses), line 2 = CF-Connecting-IP, lines 3.. =
// X-Forwarded-For lines. Every line is also fed to `parse_net`.
// ------------------------------------------------------------------------------------------

struct XffWorld {
    /// Trusted-proxy lists: authgate's set and the oracle's nets.
    trusted: Vec<(IpSet, Vec<IpNet>)>,
    peers: Vec<IpAddr>,
}

/// The oracle's reading of an allow-list entry: a CIDR or a bare address.
fn ref_net(text: &str) -> Option<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .ok()
        .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from))
}

/// IPv4-mapped IPv6 prefixes of /96 or longer are IPv4 prefixes (documented in ip_set.rs).
fn ref_canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if let Some(v4) = n.network().to_ipv4_mapped() {
            if n.prefix_len() >= 96 {
                if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

fn ref_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| match (ref_canonical(*n), ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
        (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
        _ => false,
    })
}

fn xff_world() -> &'static XffWorld {
    static W: OnceLock<XffWorld> = OnceLock::new();
    W.get_or_init(|| {
        let shipped_list: Vec<String> = shipped_toml()["client_ip"]["trusted_proxies"]
            .as_array()
            .expect("client_ip.trusted_proxies")
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect();
        let lists: Vec<Vec<String>> = vec![
            shipped_list,
            [
                "10.0.0.0/8",
                "127.0.0.0/8",
                "::ffff:198.51.100.0/120",
                "2001:db8::/32",
                "fe80::/10",
                "192.0.2.77",
            ]
            .map(String::from)
            .to_vec(),
            ["0.0.0.0/0", "::/0"].map(String::from).to_vec(),
        ];
        let trusted = lists
            .iter()
            .map(|l| {
                let set = IpSet::new(l.iter().map(|e| parse_net(e).expect("a valid trusted proxy")));
                let nets = l.iter().map(|e| ref_net(e).expect("a valid trusted proxy")).collect();
                (set, nets)
            })
            .collect();
        let peers = [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.2",
            "192.0.2.1",
            "192.0.2.77",
            "2001:db8::7",
            "10.1.2.3",
        ]
        .iter()
        .map(|p| p.parse().expect("an address"))
        .collect();
        XffWorld { trusted, peers }
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One list element: `None` if empty (skipped), `Some(None)` if not a bare address.
fn ref_entry(raw: &[u8]) -> Option<Option<IpAddr>> {
    let t = trim_ows(raw);
    if t.is_empty() {
        return None;
    }
    Some(
        std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical()),
    )
}

/// `[client_ip]` (docs/reference.md#client_ip), restated plainly.
fn ref_resolve(source: IpSource, nets: &[IpNet], peer: IpAddr, xff: &[&[u8]], cf: Option<&[u8]>) -> ClientIp {
    let peer = peer.to_canonical();
    if source == IpSource::Peer || !ref_contains(nets, peer) {
        return ClientIp::Known(peer);
    }
    if source == IpSource::CfConnectingIp {
        return match cf {
            None => ClientIp::Known(peer),
            Some(v) => match ref_entry(v).flatten() {
                Some(ip) => ClientIp::Known(ip),
                None => ClientIp::Unknown,
            },
        };
    }
    // all entries, left to right, lines joined in order; walk from the right
    let entries: Vec<&[u8]> = xff.iter().flat_map(|l| l.split(|&b| b == b',')).collect();
    let mut leftmost = None;
    for raw in entries.iter().rev() {
        match ref_entry(raw) {
            None => continue,
            Some(None) => return ClientIp::Unknown,
            Some(Some(ip)) if !ref_contains(nets, ip) => return ClientIp::Known(ip),
            Some(Some(ip)) => leftmost = Some(ip),
        }
    }
    ClientIp::Known(leftmost.unwrap_or(peer))
}

pub fn xff(data: &[u8]) {
    let world = xff_world();
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let cf = lines.get(1).copied();
    let xff_lines: &[&[u8]] = lines.get(2..).unwrap_or(&[]);
    let mut peers = world.peers.clone();
    if let Some(peer) = std::str::from_utf8(lines[0]).ok().and_then(|s| s.trim().parse().ok()) {
        peers.push(peer);
    }
    // every address the input spells, on its own
    let spelled: Vec<IpAddr> = lines
        .iter()
        .flat_map(|l| l.split(|&b| b == b','))
        .filter_map(|e| ref_entry(e).flatten())
        .collect();

    for (set, nets) in &world.trusted {
        for source in [IpSource::XForwardedFor, IpSource::CfConnectingIp, IpSource::Peer] {
            let policy = ClientIpPolicy {
                source,
                trusted_proxies: set.clone(),
            };
            for &peer in &peers {
                let got = resolve(&policy, peer, xff_lines.iter().copied(), cf);
                let canonical = peer.to_canonical();
                if source == IpSource::Peer || !set.contains(peer) {
                    assert_eq!(got, ClientIp::Known(canonical), "untrusted peer or source = peer");
                }
                if let ClientIp::Known(ip) = got {
                    assert!(
                        ip == canonical || spelled.contains(&ip),
                        "{ip} is neither the peer nor an address of the input"
                    );
                }
                let want = ref_resolve(source, nets, peer, xff_lines, cf);
                assert_eq!(got, want, "{source:?} peer {peer}");
            }
        }
    }

    // the lines as allow-list entries: parse_net and IpSet against ipnet
    let mut parsed = Vec::new();
    for line in &lines {
        let text = String::from_utf8_lossy(line);
        let got = parse_net(&text).ok();
        assert_eq!(got, ref_net(&text), "parse_net({text:?})");
        parsed.extend(got);
    }
    let set = IpSet::new(parsed.iter().copied());
    assert_eq!(set.len(), parsed.len());
    let mut probes = spelled;
    probes.extend(&world.peers);
    for n in &parsed {
        probes.extend([n.network(), n.broadcast(), n.addr()]);
    }
    for ip in probes {
        assert_eq!(
            set.contains(ip),
            ref_contains(&parsed, ip),
            "IpSet {parsed:?} contains {ip}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// path_route: the input is `METHOD SP target` (a method of 1-24 bytes before the first
// space), or a bare target, tried with every method of METHODS. The method rule, path hygiene,
// the `;` rule, the `_method` rule, the shipped routes, and the same bytes as a route pattern.
// ------------------------------------------------------------------------------------------

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "DELETE", "get", "Post"];

/// The input as (methods to try, request target).
fn request_of(data: &[u8]) -> (Vec<String>, &[u8]) {
    match data.iter().position(|&b| b == b' ') {
        Some(i) if (1..=24).contains(&i) => (vec![String::from_utf8_lossy(&data[..i]).into_owned()], &data[i + 1..]),
        _ => (METHODS.map(String::from).to_vec(), data),
    }
}

/// The `_method` rule restated: a query parameter whose name, form-decoded and read as PHP
/// reads names (leading spaces dropped, ` `, `.` and a first `[` as `_`, `x[...]` as `x`), is
/// `_method` in any case.
fn ref_override(target: &[u8]) -> bool {
    let Some(q) = target.iter().position(|&b| b == b'?') else {
        return false;
    };
    target[q + 1..].split(|&b| b == b'&' || b == b';').any(|param| {
        let raw = param.split(|&b| b == b'=').next().unwrap_or_default();
        let plus: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        let decoded = ref_decode(&plus);
        let mut name: &[u8] = &decoded;
        while name.first() == Some(&b' ') {
            name = &name[1..];
        }
        if let Some(open) = name.iter().position(|&b| b == b'[') {
            if open > 0 && name[open..].contains(&b']') {
                name = &name[..open];
            }
        }
        let php: Vec<u8> = name
            .iter()
            .map(|&b| {
                if b == b' ' || b == b'.' || b == b'[' {
                    b'_'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect();
        php == b"_method"
    })
}

/// Step 0 on the request line (method, hygiene, `;` off, `_method`), restated in order, for
/// the shipped config (`allow_path_semicolons` off).
fn request_line_checks(method: &str, target: &[u8]) {
    let path = path_of(target);
    let lower = method.bytes().any(|b| b.is_ascii_lowercase());
    assert_eq!(check_method(method).is_err(), lower, "method {method:?}");
    let strict = check_semicolons(path, false);
    if strict.is_ok() {
        let low = path.to_ascii_lowercase();
        assert!(
            !low.contains(&b';') && !low.windows(3).any(|w| w == b"%3b"),
            "';' accepted"
        );
    } else {
        assert_eq!(strict, Err(PathProblem::Semicolon));
    }
    if check_semicolons(path, true).is_ok() && path.starts_with(b"/") {
        let body = &path[1..];
        assert!(
            !body.split(|&b| b == b'/').any(|s| s.first() == Some(&b';')),
            "empty before ';'"
        );
    }
    assert_eq!(
        check_query(target).is_err(),
        ref_override(target),
        "_method in {target:?}"
    );
    // the expected denial, spelt as authgate's `Denial` prints it (the type is crate-private)
    let want = if lower {
        Err(format!("BadMethod({:?})", MethodProblem::Lowercase))
    } else if let Err(p) = check(path) {
        Err(format!("BadPath({p:?})"))
    } else if strict.is_err() {
        Err(format!("BadPath({:?})", PathProblem::Semicolon))
    } else if ref_override(target) {
        Err(format!("BadMethod({:?})", MethodProblem::OverrideParameter))
    } else {
        // accepted: the raw path, the target before its first '?'
        Ok(path)
    };
    let got = request_line(&shipped().fixed, method, target).map_err(|d| format!("{d:?}"));
    assert_eq!(got, want, "request line {method:?} {target:?}");
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-decoding as the upstream does it: well-formed escapes decoded, anything else kept.
fn ref_decode(seg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'%' {
            if let (Some(h), Some(l)) = (
                seg.get(i + 1).copied().and_then(hex),
                seg.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
        }
        out.push(seg[i]);
        i += 1;
    }
    out
}

/// What `check` promises about a path it accepts.
fn assert_clean(path: &[u8]) {
    assert!(path.starts_with(b"/"), "accepted path does not start with '/'");
    assert!(!path.contains(&b'\\'), "accepted path has a backslash");
    let lower = path.to_ascii_lowercase();
    for bad in [&b"%2f"[..], b"%5c", b"%00"] {
        assert!(!lower.windows(3).any(|w| w == bad), "accepted path has {bad:?}");
    }
    let segs: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    for (i, seg) in segs.iter().enumerate() {
        if seg.is_empty() {
            assert_eq!(i + 1, segs.len(), "accepted path has an empty segment");
            continue;
        }
        let decoded = ref_decode(seg);
        assert_eq!(&*decode_segment(seg), &decoded[..], "decode_segment");
        assert!(decoded != b"." && decoded != b"..", "accepted dot segment");
        assert!(
            std::str::from_utf8(&decoded).is_ok(),
            "accepted path is not UTF-8 once decoded"
        );
        let before = seg.split(|&b| b == b';').next().unwrap_or_default();
        let before = ref_decode(before);
        assert!(before != b"." && before != b"..", "accepted dot segment before ';'");
    }
}

/// A capture is one segment's whole, non-empty part before its first `;` (the same bytes,
/// in place).
fn assert_capture(path: &[u8], c: &[u8]) {
    assert!(
        !c.is_empty() && !c.contains(&b'/') && !c.contains(&b';'),
        "capture {c:?}"
    );
    let start = (c.as_ptr() as usize)
        .checked_sub(path.as_ptr() as usize)
        .filter(|s| s + c.len() <= path.len())
        .expect("the capture lies in the path");
    assert_eq!(path[start - 1], b'/', "capture starts a segment");
    assert!(
        start + c.len() == path.len() || matches!(path[start + c.len()], b'/' | b';'),
        "capture ends a segment or its part before ';'"
    );
}

struct RefRoute {
    pattern: String,
    method: Option<String>,
    org_param: Option<String>,
}

fn ref_routes() -> &'static [RefRoute] {
    static R: OnceLock<Vec<RefRoute>> = OnceLock::new();
    R.get_or_init(|| {
        let s = |v: &toml::Value, k: &str| v.get(k).and_then(toml::Value::as_str).map(String::from);
        shipped_toml()["routes"]
            .as_array()
            .expect("[[routes]]")
            .iter()
            .map(|r| RefRoute {
                pattern: s(r, "path").expect("route path"),
                method: s(r, "method"),
                org_param: s(r, "org_param"),
            })
            .collect()
    })
}

/// Route matching (docs/reference.md#routes), restated: each segment read up to its first
/// `;`, compared percent-decoded and ASCII case-insensitively, `{x}` one non-empty segment, a
/// trailing `/**` zero or more, one trailing `/` ignored, a GET route takes HEAD, first match
/// wins.
fn ref_find<'p>(method: &str, path: &'p [u8]) -> Option<(usize, Option<&'p [u8]>)> {
    let body = path.strip_prefix(b"/")?;
    let body = body.strip_suffix(b"/").unwrap_or(body);
    let parts: Vec<&[u8]> = if body.is_empty() {
        vec![]
    } else {
        body.split(|&b| b == b'/')
            .map(|seg| seg.split(|&b| b == b';').next().unwrap_or_default())
            .collect()
    };
    'routes: for (i, r) in ref_routes().iter().enumerate() {
        if r.method
            .as_deref()
            .is_some_and(|m| m != method && !(m == "GET" && method == "HEAD"))
        {
            continue;
        }
        let mut segs: Vec<&str> = r.pattern[1..].split('/').filter(|s| !s.is_empty()).collect();
        let rest = segs.last() == Some(&"**");
        if rest {
            segs.pop();
        }
        if parts.len() < segs.len() || (!rest && parts.len() != segs.len()) {
            continue;
        }
        let mut capture = None;
        for (seg, part) in segs.iter().zip(&parts) {
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    if part.is_empty() {
                        continue 'routes;
                    }
                    if r.org_param.as_deref() == Some(name) {
                        capture = Some(*part);
                    }
                }
                None => {
                    if !ref_decode(part).eq_ignore_ascii_case(seg.as_bytes()) {
                        continue 'routes;
                    }
                }
            }
        }
        return Some((i, capture));
    }
    None
}

/// The same path with every segment decoded where that changes no segment boundary (no `/`,
/// no new `;`) and leaves nothing to decode again, then lower-cased: the upstream reads it the
/// same way.
fn normalised(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for seg in path[1..].split(|&b| b == b'/') {
        out.push(b'/');
        let d = ref_decode(seg);
        let seg = if d.contains(&b'%') || d.contains(&b'/') || d.contains(&b';') {
            seg
        } else {
            &d[..]
        };
        out.extend(seg.to_ascii_lowercase());
    }
    out
}

fn route_of(table: &RouteTable, method: &str, path: &[u8]) -> Option<usize> {
    table.find(method, path).map(|m| m.route.index)
}

fn with_slash(path: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    p.push(b'/');
    p
}

/// Pattern::parse on the input as text: what it accepts follows the documented grammar,
/// and an accepted pattern matches its own text (params filled in), in any ASCII case.
fn pattern_checks(text: &str) {
    let Ok(pattern) = Pattern::parse(text) else {
        return;
    };
    let body = text.strip_prefix('/').expect("accepted pattern starts with '/'");
    let segs: Vec<&str> = if body.is_empty() {
        vec![]
    } else {
        body.split('/').collect()
    };
    let mut params = Vec::new();
    let mut concrete = Vec::new();
    let mut rest = false;
    for (i, seg) in segs.iter().enumerate() {
        assert!(!seg.is_empty(), "accepted pattern {text:?} has an empty segment");
        if *seg == "**" {
            assert_eq!(i + 1, segs.len(), "'**' not last in {text:?}");
            rest = true;
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            assert!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit()),
                "bad parameter name accepted in {text:?}"
            );
            assert!(!params.contains(&name), "duplicate parameter accepted in {text:?}");
            assert_eq!(pattern.param_index(name), Some(params.len()));
            concrete.push(format!("v{}", params.len()));
            params.push(name);
        } else {
            assert!(
                !seg.contains(['{', '}', '*', '%', '?', '#', '\\', ';']) && *seg != "." && *seg != "..",
                "literal {seg:?} accepted in {text:?}"
            );
            concrete.push((*seg).to_string());
        }
    }
    let own = format!("/{}", concrete.join("/"));
    let route = Route {
        index: 0,
        name: "fuzz".into(),
        org_param: params.first().and_then(|p| pattern.param_index(p)),
        pattern,
        method: Some("GET".into()),
        auth: AuthKind::Partner,
        limits: vec![],
        learn_org_pointer: None,
        api_key: None,
        error_format: ErrorFormat::Dto,
    };
    let table = RouteTable::new(vec![route]);
    let m = table
        .find("GET", own.as_bytes())
        .unwrap_or_else(|| panic!("{text:?} does not match {own:?}"));
    assert_eq!(m.org_capture, params.first().map(|_| &b"v0"[..]), "capture of {own:?}");
    assert!(table.find("POST", own.as_bytes()).is_none(), "method ignored");
    assert!(table.find("HEAD", own.as_bytes()).is_some(), "a GET route takes HEAD");
    let upper = own.to_ascii_uppercase();
    assert!(table.find("GET", upper.as_bytes()).is_some(), "{text:?} vs {upper:?}");
    let longer = if own == "/" {
        "/x".to_string()
    } else {
        format!("{own}/x")
    };
    assert_eq!(
        table.find("GET", longer.as_bytes()).is_some(),
        rest,
        "{text:?} vs {longer:?}"
    );
}

pub fn path_route(data: &[u8]) {
    let (methods, target) = request_of(data);
    let path = path_of(target);
    assert!(target.starts_with(path) && !path.contains(&b'?'), "path_of");
    let verdict = check(path);
    if verdict.is_ok() {
        assert_clean(path);
    }
    // one trailing slash changes nothing
    if path.starts_with(b"/") && !path.ends_with(b"/") {
        assert_eq!(
            check(&with_slash(path)).is_ok(),
            verdict.is_ok(),
            "check with a trailing '/'"
        );
    }

    let table = &shipped().fixed.routes;
    assert_eq!(
        table.hand_written(),
        ref_routes().len(),
        "[[routes]] of the shipped config (spec routes are the openapi_validate target's)"
    );
    for method in methods.iter().map(String::as_str) {
        request_line_checks(method, target);
        // routing never panics, on any bytes
        let m = table.find(method, path);
        if let Some(c) = m.as_ref().and_then(|m| m.org_capture) {
            assert_capture(path, c);
        }
        if verdict.is_err() {
            continue;
        }
        let got = m.map(|m| (m.route.index, m.org_capture));
        assert_eq!(
            got,
            ref_find(method, path),
            "{method} {:?}",
            String::from_utf8_lossy(path)
        );
        let index = got.map(|g| g.0);
        if !path.ends_with(b"/") {
            assert_eq!(route_of(table, method, &with_slash(path)), index, "trailing '/'");
        }
        let upper = path.to_ascii_uppercase();
        assert_eq!(route_of(table, method, &upper), index, "upper case");
        let norm = normalised(path);
        assert_eq!(
            route_of(table, method, &norm),
            index,
            "{method} {:?} decoded as {:?}",
            String::from_utf8_lossy(path),
            String::from_utf8_lossy(&norm)
        );
    }

    pattern_checks(&String::from_utf8_lossy(target));
}

// ------------------------------------------------------------------------------------------
// config_load: the input as gateway config text and as policy-file text.
// ------------------------------------------------------------------------------------------

fn assert_problems(problems: &Problems, file: &Path, text: &str) {
    let last_line = text.bytes().filter(|&b| b == b'\n').count() + 1;
    for p in &problems.0 {
        assert_eq!(p.file, file, "problem names another file");
        assert!(!p.message.trim().is_empty(), "problem without a message");
        if let Some(line) = p.line {
            assert!((1..=last_line).contains(&line), "line {line} of {last_line}: {p}");
        }
    }
    let _ = problems.to_string();
}

pub fn config_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = Path::new("/fuzz/authgate.toml");
    let (settings, problems) = settings_from_text(config, &text);
    assert_problems(&problems, config, &text);
    match &settings {
        None => assert!(!problems.is_empty(), "no settings and no problem"),
        Some(s) => {
            if problems.is_empty() {
                assert!(!s.fixed.routes.is_empty(), "a valid config without routes");
                for (i, r) in s.fixed.routes.iter().enumerate() {
                    assert_eq!(r.index, i, "route index");
                    assert!(r.limits.iter().all(|&l| l < s.limits.len()), "route limit index");
                    assert_eq!(r.api_key.is_some(), r.auth == AuthKind::ApiKey);
                }
            }
            // whatever came out is safe to use
            for path in [
                &b"/"[..],
                &b"/partner/v1/orgs/o1/login-links"[..],
                &b"/health/"[..],
                data,
            ] {
                let _ = s.fixed.routes.find("GET", path);
            }
            let peer: IpAddr = [127, 0, 0, 1].into();
            let _ = resolve(
                &s.fixed.client_ip,
                peer,
                [&b"203.0.113.5, 10.0.0.1"[..]].into_iter(),
                Some(&b"198.51.100.1"[..]),
            );
            let policy = Path::new("/fuzz/partners.toml");
            if let Err(p) = parse_directory(policy, SHIPPED_POLICY, s) {
                assert_problems(&p, policy, SHIPPED_POLICY);
            }
        }
    }

    // the same text as the policy file, with the shipped settings
    let policy = Path::new("/fuzz/partners.toml");
    match parse_directory(policy, &text, shipped()) {
        Err(p) => {
            assert!(!p.is_empty(), "an error without problems");
            assert_problems(&p, policy, &text);
        }
        Ok(dir) => {
            let value: toml::Value = toml::from_str(&text).expect("a valid policy file is TOML");
            let ids = |k: &str| -> Vec<String> {
                value
                    .get(k)
                    .and_then(toml::Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.get("id").and_then(toml::Value::as_str).map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let partners = ids("partner");
            assert_eq!(dir.partner_count(), partners.len(), "partners");
            for id in &partners {
                let p = dir.partner(id).unwrap_or_else(|| panic!("partner {id:?} lost"));
                assert_eq!(&*p.id, id.as_str());
                for o in &p.limit_overrides {
                    assert!(o.limit < shipped().limits.len() && o.per_minute > 0, "override {o:?}");
                }
            }
            for id in ids("org") {
                assert!(dir.org(&id).is_some(), "org {id:?} lost");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// journal: the input is a learned-orgs journal file.
// ------------------------------------------------------------------------------------------

fn journal_line(partner: &str, org: &str) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a string serialises");
    format!("{{\"partner\":{},\"org\":{}}}\n", s(partner), s(org))
}

pub fn journal(data: &[u8]) {
    let replay = journal::parse(data);
    let lines = data.split_inclusive(|&b| b == b'\n').count();
    assert_eq!(
        replay.entries.len() + replay.unreadable + usize::from(replay.torn_tail),
        lines,
        "every line is an entry, unreadable or the torn tail"
    );
    assert_eq!(
        replay.torn_tail,
        !data.is_empty() && !data.ends_with(b"\n"),
        "torn tail"
    );
    assert!(
        replay.entries.iter().all(|(p, o)| !p.is_empty() && !o.is_empty()),
        "empty partner or org"
    );

    // each entry comes from its own complete line, in order, and says what that line says
    let mut entries = replay.entries.iter();
    let mut next = entries.next();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let (Some(body), Some((p, o))) = (line.strip_suffix(b"\n"), next) else {
            break;
        };
        // serde_json's Value is stricter than the skipping of unknown fields the journal
        // reader does (UTF-8, lone surrogates, nesting depth): a line Value refuses proves nothing
        let said = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Some((m.get("partner").cloned(), m.get("org").cloned())),
            Ok(Value::Array(a)) if a.len() == 2 => Some((a.first().cloned(), a.get(1).cloned())),
            Ok(_) => Some((None, None)),
            Err(_) => None,
        };
        let entry = (Some(Value::String(p.clone())), Some(Value::String(o.clone())));
        if said.is_none_or(|said| said == entry) {
            next = entries.next();
        }
    }
    assert!(next.is_none(), "entry {next:?} is not what any line says, in order");

    // what the gateway would write back (compaction) reads back the same
    let rewritten: String = replay.entries.iter().map(|(p, o)| journal_line(p, o)).collect();
    let again = journal::parse(rewritten.as_bytes());
    assert_eq!(again.entries, replay.entries, "re-serialised journal");
    assert_eq!((again.unreadable, again.torn_tail), (0, false));

    // appending a line after a torn tail: the tail becomes an unreadable line or an entry,
    // never swallows the new one
    if replay.torn_tail {
        let mut healed = data.to_vec();
        healed.extend_from_slice(b"\n");
        healed.extend_from_slice(journal_line("p", "o").as_bytes());
        let h = journal::parse(&healed);
        assert_eq!(h.entries.last(), Some(&("p".to_string(), "o".to_string())));
    }
}

// ------------------------------------------------------------------------------------------
// openapi_validate: byte 0 = flags, then line 1 = the request target (path and query),
// line 2 = the Content-Type value, the rest = the body. Run through the shipped specs and
// FUZZ_SPEC (parameters in every style, a form body).
// ------------------------------------------------------------------------------------------

/// Parameters the way qs, PHP and FastAPI send them, and a form body: what the shipped
/// specs do not exercise (brackets, number syntax, styles, `anyOf` coercion, form fields).
const FUZZ_SPEC: &str = r#"openapi: 3.1.0
info: {title: fuzz, version: "1"}
paths:
  /items:
    get:
      operationId: listItems
      parameters:
        - {name: limit, in: query, schema: {anyOf: [{type: integer, minimum: 1, maximum: 100}, {type: "null"}]}}
        - {name: ratio, in: query, schema: {type: number, maximum: 1}}
        - {name: tag, in: query, schema: {type: array, items: {type: integer}, maxItems: 5}}
        - {name: filter, in: query, style: deepObject, schema: {type: object, additionalProperties: false, properties: {min: {type: integer}}}}
        - {name: ids, in: query, style: pipeDelimited, explode: false, schema: {type: array, items: {type: string, maxLength: 4}}}
    post:
      operationId: submitForm
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded:
            schema:
              type: object
              required: [email]
              additionalProperties: false
              properties:
                email: {type: string, format: email}
                age: {type: integer, minimum: 0, maximum: 150}
                tags: {type: array, items: {type: string}, maxItems: 3}
                meta: {type: object, properties: {k: {type: integer}}}
                doc: {type: object}
            encoding:
              doc: {contentType: application/json}
"#;

/// The shipped specs (`config/openapi/`) and [`FUZZ_SPEC`], compiled once; they must
/// compile without problems.
pub fn shipped_specs() -> &'static [CompiledSpec; 3] {
    static S: OnceLock<[CompiledSpec; 3]> = OnceLock::new();
    S.get_or_init(|| {
        let one = |name: &str, text: &str| {
            openapi::compile(Path::new(name), text, "").unwrap_or_else(|p| panic!("{name}: {p:?}"))
        };
        [
            one("partner-api.yaml", include_str!("../config/openapi/partner-api.yaml")),
            one("org-api.yaml", include_str!("../config/openapi/org-api.yaml")),
            one("fuzz.yaml", FUZZ_SPEC),
        ]
    })
}

/// The oracle for a held body: the same crate, built here from the standalone schema the
/// operation exposes, with default options except format assertion (which §14 asks for).
fn body_oracle(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("an exposed schema builds")
}

/// The fuzz input, taken apart.
struct ApiRequest<'a> {
    op: usize,
    semicolons: bool,
    chunked: bool,
    target: &'a [u8],
    content_type: Option<&'a [u8]>,
    body: &'a [u8],
}

fn api_request(data: &[u8]) -> Option<ApiRequest<'_>> {
    let (&flags, rest) = data.split_first()?;
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let target = parts.next().unwrap_or_default();
    let content_type = parts.next();
    let body = parts.next().unwrap_or_default();
    Some(ApiRequest {
        op: usize::from(flags & 0x0f),
        semicolons: flags & 0x10 != 0,
        chunked: flags & 0x20 != 0,
        target,
        content_type: content_type.filter(|_| flags & 0x40 == 0),
        body,
    })
}

pub fn openapi_validate(data: &[u8]) {
    let Some(req) = api_request(data) else { return };
    let specs = shipped_specs();
    let path = path_of(req.target);
    let query = req.target.get(path.len() + 1..);
    let all: Vec<(&CompiledSpec, usize)> = specs
        .iter()
        .flat_map(|s| (0..s.operations().len()).map(move |i| (s, i)))
        .collect();
    let (spec, mut index) = all[req.op % all.len()];
    let op = &spec.operations()[index];
    // routing never panics; a match names an operation of the spec and whole segments
    let mut captures: Vec<(&str, &[u8])> = Vec::new();
    for method in ["GET", "HEAD", "POST", "PUT", op.method()] {
        match spec.find(method, path, req.semicolons) {
            RouteOutcome::Match { operation, captures: c } => {
                assert!(operation < spec.operations().len());
                for (_, v) in &c {
                    assert_spec_capture(path, v, req.semicolons);
                }
                if method == op.method() {
                    (index, captures) = (operation, c);
                }
            }
            RouteOutcome::MethodNotAllowed { allow } => assert!(!allow.is_empty() && !allow.contains(method)),
            RouteOutcome::NoMatch => {}
        }
    }
    let op = &spec.operations()[index];
    if captures.is_empty() {
        // the path did not route here: the input's segments stand in for the captures
        let mut segs = path.split(|&b| b == b'/').filter(|s| !s.is_empty());
        captures = op
            .path_params()
            .iter()
            .map(|n| (n.as_str(), segs.next().unwrap_or(b"x")))
            .collect();
    }
    check_request(op, &req, &captures, query);
}

/// A capture is a whole non-empty segment of the path (by position), or with semicolons
/// allowed the part of one before its first `;`.
fn assert_spec_capture(path: &[u8], c: &[u8], semicolons: bool) {
    assert!(!c.is_empty() && !c.contains(&b'/'), "capture {c:?}");
    let start = (c.as_ptr() as usize)
        .checked_sub(path.as_ptr() as usize)
        .filter(|s| *s > 0 && s + c.len() <= path.len())
        .expect("the capture lies in the path");
    assert_eq!(path[start - 1], b'/', "capture starts a segment");
    let end = path.get(start + c.len()).copied();
    match end {
        None | Some(b'/') => {}
        Some(b';') if semicolons => {}
        Some(other) => panic!("capture ends before {:?}", other as char),
    }
    assert!(!(semicolons && c.contains(&b';')), "capture holds a ';'");
}

fn check_request(op: &Operation, req: &ApiRequest<'_>, captures: &[(&str, &[u8])], query: Option<&[u8]>) {
    let mut headers = HeaderMap::new();
    if let Some(ct) = req.content_type.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    if req.chunked {
        headers.insert(http::header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    } else if !req.body.is_empty() {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(req.body.len()));
    }
    let head = RequestHead {
        captures,
        query,
        headers: &headers,
    };
    let plan = op.check_head(&head);
    if let Err(r) = &plan {
        assert_rejection(r);
        return;
    }
    assert_query_oracle(op, query);
    assert_params_oracle(op, query);
    let announced = req.chunked || !req.body.is_empty();
    match plan {
        Ok(BodyPlan::None) => assert!(!announced, "{}: an announced body was let through unchecked", op.id()),
        Ok(BodyPlan::Stream) => assert!(!op.needs_body(), "{}: a JSON-schema body streamed", op.id()),
        Ok(BodyPlan::Hold(held)) => check_held(op, held, req.body),
        Err(_) => unreachable!(),
    }
}

fn check_held(op: &Operation, held: HeldBody, body: &[u8]) {
    let verdict = op.check_body(held, body);
    if let Err(r) = &verdict {
        assert_rejection(r);
    }
    if op.id() == "submitForm" {
        return assert_form_oracle(&verdict, body);
    }
    let Some(schema) = op.held_schema(held) else {
        // no requestBody: only an empty body passes
        assert_eq!(
            verdict.is_ok(),
            body.is_empty(),
            "{}: body on an operation without one",
            op.id()
        );
        return;
    };
    if body.is_empty() {
        return; // presence is the head's and `required`'s business
    }
    let oracle = body_oracle(&schema);
    let oracle_ok = serde_json::from_slice::<Value>(&as_node_reads_it(body)).is_ok_and(|v| oracle.is_valid(&v));
    assert_eq!(
        verdict.is_ok(),
        oracle_ok,
        "{}: the edge and jsonschema's is_valid disagree on {:?}",
        op.id(),
        String::from_utf8_lossy(body)
    );
}

/// A rejection is well formed and echoes nothing big.
fn assert_rejection(r: &Rejection) {
    assert!(matches!(
        (r.status, r.reason.as_str()),
        (400, "invalid_request") | (415, "unsupported_media_type")
    ));
    assert!(
        !r.errors.is_empty() && r.errors.len() <= MAX_ERRORS,
        "errors: {}",
        r.errors.len()
    );
    assert!(r.message.len() < 600, "message too long: {}", r.message.len());
    for e in &r.errors {
        assert!(
            !e.message.is_empty() && e.message.len() < 400 && e.pointer.len() <= 203,
            "{e:?}"
        );
        assert!(r.locations.contains(e.location));
    }
}

/// The partner spec's `limit` (1..=100) and `offset` (>= 0), restated: an accepted head had
/// each at most once in any spelling (a name with a bracket suffix counts), by its plain name,
/// as `-?[0-9]+` (what `parseInt` reads the same way) in range.
fn assert_query_oracle(op: &Operation, query: Option<&[u8]>) {
    if op.id() != "listOrgs" {
        return;
    }
    for (name, min, max) in [("limit", 1, 100), ("offset", 0, i128::MAX)] {
        let values: Vec<(Vec<u8>, Vec<u8>)> = query
            .unwrap_or_default()
            .split(|&b| b == b'&')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let mut kv = pair.splitn(2, |&b| b == b'=');
                let k = form_decode(kv.next().unwrap_or_default());
                let suffix = k.strip_prefix(name.as_bytes())?;
                (suffix.is_empty() || suffix[0] == b'[')
                    .then(|| (k.clone(), form_decode(kv.next().unwrap_or_default())))
            })
            .collect();
        assert!(values.len() <= 1, "{name} accepted {} times", values.len());
        if let Some((k, v)) = values.first() {
            assert_eq!(k, name.as_bytes(), "{name} accepted with brackets");
            let text = String::from_utf8_lossy(v);
            let digits = text.strip_prefix('-').unwrap_or(&text);
            // offset has no maximum: an integer past i128 passes too
            let in_range = text
                .parse::<i128>()
                .map_or(max == i128::MAX && !text.starts_with('-'), |n| (min..=max).contains(&n));
            let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && in_range;
            assert!(ok, "{name}={text:?} accepted");
        }
    }
}

/// A JSON body as Node's `JSON.parse` reads it, restated independently of the gateway: a
/// leading byte order mark dropped, and each `\uD800`-`\uDFFF` escape that is not half of a
/// high-low pair written as `\uFFFD` (an escape starts at a backslash preceded by an even
/// run of backslashes).
fn as_node_reads_it(body: &[u8]) -> Vec<u8> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let unit = |at: usize| -> Option<u16> {
        let escape = body.get(at..at + 6)?;
        if escape[0] != b'\\' || escape[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&escape[2..]).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(body.len());
    let mut run = 0; // backslashes just before this byte
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'\\' && run % 2 == 0 {
            if let Some(u) = unit(i).filter(|u| (0xD800..0xE000).contains(u)) {
                let paired =
                    (0xD800..0xDC00).contains(&u) && unit(i + 6).is_some_and(|l| (0xDC00..0xE000).contains(&l));
                if paired {
                    out.extend_from_slice(&body[i..i + 12]);
                    i += 12;
                } else {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                }
                run = 0;
                continue;
            }
        }
        run = if b == b'\\' { run + 1 } else { 0 };
        out.push(b);
        i += 1;
    }
    out
}

/// `FUZZ_SPEC`'s `listItems`, restated: an accepted head had each scalar at most once by its
/// plain name, `limit` an integer in 1..=100 as `-?[0-9]+`, `ratio` a number at most 1 in the
/// contract's syntax, `tag` at most 5 items each an integer, spelled `tag`, `tag[]` or
/// `tag[N]`.
fn assert_params_oracle(op: &Operation, query: Option<&[u8]>) {
    if op.id() != "listItems" {
        return;
    }
    let named = |name: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        query
            .unwrap_or_default()
            .split(|&b| b == b'&')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let mut kv = pair.splitn(2, |&b| b == b'=');
                let k = form_decode(kv.next().unwrap_or_default());
                let suffix = k.strip_prefix(name.as_bytes())?;
                (suffix.is_empty() || suffix[0] == b'[')
                    .then(|| (suffix.to_vec(), form_decode(kv.next().unwrap_or_default())))
            })
            .collect()
    };
    let integer = |v: &[u8]| {
        let digits = v.strip_prefix(b"-").unwrap_or(v);
        !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
    };
    for scalar in ["limit", "ratio"] {
        let found = named(scalar);
        assert!(found.len() <= 1, "{scalar} accepted {} times", found.len());
        assert!(
            found.iter().all(|(suffix, _)| suffix.is_empty()),
            "{scalar} accepted with brackets"
        );
    }
    if let Some((_, v)) = named("limit").first() {
        let text = String::from_utf8_lossy(v);
        let n = text.parse::<i128>().ok().filter(|_| integer(v));
        assert!(n.is_some_and(|n| (1..=100).contains(&n)), "limit={text:?} accepted");
    }
    if let Some((_, v)) = named("ratio").first() {
        let text = String::from_utf8_lossy(v);
        assert!(
            number_syntax(&text) && text.parse::<f64>().is_ok_and(|f| f <= 1.0),
            "ratio={text:?} accepted"
        );
    }
    let tags = named("tag");
    assert!(tags.len() <= 5, "{} tags accepted", tags.len());
    for (suffix, v) in tags {
        let index_ok = suffix.is_empty()
            || suffix == b"[]"
            || (suffix.len() > 2
                && suffix.ends_with(b"]")
                && suffix[1..suffix.len() - 1].iter().all(u8::is_ascii_digit));
        assert!(
            index_ok && integer(&v),
            "tag{:?}={:?} accepted",
            String::from_utf8_lossy(&suffix),
            String::from_utf8_lossy(&v)
        );
    }
}

/// `-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?`, restated as a walk over the bytes.
fn number_syntax(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// `FUZZ_SPEC`'s form body, restated: an accepted body had `email` once, each of `email` and
/// `age` by its plain name at most once, `age` an integer in 0..=150 as `-?[0-9]+`, and no
/// name outside the schema's properties.
fn assert_form_oracle(verdict: &Result<(), Rejection>, body: &[u8]) {
    if verdict.is_err() {
        return;
    }
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = body
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            (
                form_decode(kv.next().unwrap_or_default()),
                form_decode(kv.next().unwrap_or_default()),
            )
        })
        .collect();
    let base = |k: &[u8]| k.split(|&b| b == b'[').next().unwrap_or_default().to_vec();
    for (k, _) in &pairs {
        let b = base(k);
        assert!(
            [&b"email"[..], b"age", b"tags", b"meta", b"doc"].contains(&b.as_slice()),
            "form name {:?} accepted",
            String::from_utf8_lossy(k)
        );
    }
    for scalar in [&b"email"[..], b"age"] {
        let found: Vec<&(Vec<u8>, Vec<u8>)> = pairs.iter().filter(|(k, _)| base(k) == scalar).collect();
        assert!(
            found.len() <= 1 && found.iter().all(|(k, _)| k == scalar),
            "{:?} accepted as {found:?}",
            String::from_utf8_lossy(scalar)
        );
        if scalar == b"email" {
            assert_eq!(found.len(), 1, "a form without its required email accepted");
        }
        if let (b"age", Some((_, v))) = (scalar, found.first()) {
            let text = String::from_utf8_lossy(v);
            let digits = text.strip_prefix('-').unwrap_or(&text);
            let ok = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && text.parse::<i128>().is_ok_and(|n| (0..=150).contains(&n));
            assert!(ok, "age={text:?} accepted");
        }
    }
}

/// `application/x-www-form-urlencoded` decoding with the percent-encoding crate's decoder.
fn form_decode(s: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = s.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    percent_encoding::percent_decode(&spaced).collect()
}
