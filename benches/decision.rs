//! Criterion benches for the decision path. Figures, and how they compare: benches/RESULTS.md.
//!
//! `cargo bench --bench decision`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

use authgate::policy::client_ip::{self, ClientIp, ClientIpPolicy, IpSource};
use authgate::policy::directory::{Directory, PartnerPolicy};
use authgate::policy::ip_set::{parse_net, IpSet};
use authgate::policy::jwt::{self, JwtPolicy, KeySet, VerifyKey};
use authgate::policy::ownership::{check_partner_org, LearnedOrgs};
use authgate::policy::path;
use authgate::policy::pipeline::{decide, Embedded, Gate, RequestFacts, Snapshot, StaticPolicy};
use authgate::policy::principal::Principal;
use authgate::policy::rate_limit::{LimitDef, RateLimits};
use authgate::policy::revocations::Revocations;
use authgate::policy::routes::{AuthKind, ErrorFormat, Pattern, Route, RouteTable};
use authgate::policy::token_cache::TokenCache;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/keys");

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

fn jwt_policy() -> JwtPolicy {
    JwtPolicy {
        algorithms: vec![Algorithm::HS256, Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        issuer: Some("https://api.open.cx".into()),
        audience: vec!["partner-api".into()],
        leeway_secs: 30.0,
        require_exp: false,
        partner_claim: "sub".into(),
        org_claim: "org_id".into(),
        key_id_claim: "jti".into(),
        org_must_be_listed: false,
        require_key_id: false,
    }
}

fn keyset() -> KeySet {
    KeySet::new([
        VerifyKey::new("hs", vec![Algorithm::HS256], &DecodingKey::from_secret(SECRET)).unwrap(),
        VerifyKey::new(
            "rs",
            vec![Algorithm::RS256],
            &DecodingKey::from_rsa_pem(&read("rs.pub.pem")).unwrap(),
        )
        .unwrap(),
        VerifyKey::new(
            "es",
            vec![Algorithm::ES256],
            &DecodingKey::from_ec_pem(&read("es.pub.pem")).unwrap(),
        )
        .unwrap(),
        VerifyKey::new(
            "ed",
            vec![Algorithm::EdDSA],
            &DecodingKey::from_ed_pem(&read("ed.pub.pem")).unwrap(),
        )
        .unwrap(),
    ])
}

fn token(kid: &str, partner: &str) -> String {
    let (alg, key) = match kid {
        "hs" => (Algorithm::HS256, EncodingKey::from_secret(SECRET)),
        "rs" => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rs.key.pem")).unwrap(),
        ),
        "es" => (Algorithm::ES256, EncodingKey::from_ec_pem(&read("es.key.pem")).unwrap()),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&read("ed.key.pem")).unwrap()),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let n = now() as i64;
    let claims = json!({"sub": partner, "jti": "key-1", "iss": "https://api.open.cx", "aud": "partner-api",
                        "iat": n, "exp": n + 86400});
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

fn partner(i: usize) -> PartnerPolicy {
    PartnerPolicy {
        id: format!("partner-{i}").into(),
        active: true,
        ip_allow_list: None,
        revoked_keys: HashSet::new(),
        orgs: HashSet::new(),
        limit_overrides: vec![],
    }
}

fn routes() -> RouteTable {
    let r = |index: usize, name: &str, path: &str, org: Option<&str>| {
        let pattern = Pattern::parse(path).unwrap();
        Route {
            index,
            name: name.into(),
            org_param: org.map(|o| pattern.param_index(o).unwrap()),
            pattern,
            method: None,
            auth: AuthKind::Partner,
            limits: vec![0],
            learn_org_pointer: None,
            api_key: None,
            error_format: ErrorFormat::Dto,
        }
    };
    RouteTable::new(vec![
        r(
            0,
            "by-external-id",
            "/partner/v1/orgs/by-external-id/{external_id}",
            None,
        ),
        r(
            1,
            "login-links",
            "/partner/v1/orgs/{org_id}/login-links",
            Some("org_id"),
        ),
        r(2, "org-scoped", "/partner/v1/orgs/{org_id}/**", Some("org_id")),
        r(3, "orgs", "/partner/v1/orgs", None),
    ])
}

fn bench_path_and_routes(c: &mut Criterion) {
    let table = routes();
    let target = b"/partner/v1/orgs/a1b2c3d4-e5f6-7890-abcd-ef1234567890/api-keys?limit=10";
    c.bench_function("path hygiene + route match", |b| {
        b.iter(|| {
            let p = path::path_of(black_box(target));
            path::check(p).unwrap();
            black_box(table.find("GET", p).unwrap());
        })
    });
}

fn bench_jwt(c: &mut Criterion) {
    let keys = keyset();
    let policy = jwt_policy();
    let mut g = c.benchmark_group("jwt verify");
    for kid in ["hs", "rs", "es", "ed"] {
        let tok = token(kid, "acme");
        g.bench_function(format!("{kid} uncached"), |b| {
            b.iter(|| black_box(jwt::verify(black_box(&tok), &keys, &policy, now()).unwrap()))
        });
        let cache = TokenCache::new(1000);
        g.bench_function(format!("{kid} cached"), |b| {
            b.iter(|| black_box(cache.verify(black_box(&tok), &keys, &policy, now()).unwrap()))
        });
    }
    g.finish();
}

fn bench_client_ip(c: &mut Criterion) {
    let policy = ClientIpPolicy {
        source: IpSource::XForwardedFor,
        trusted_proxies: IpSet::new(
            ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
                .iter()
                .map(|n| parse_net(n).unwrap()),
        ),
    };
    let xff =
        "198.51.100.1, 203.0.113.9, 10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4, 10.0.0.5, 10.0.0.6, 10.0.0.7, 10.0.0.8";
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function("client ip from a 10-entry XFF", |b| {
        b.iter(|| {
            let ip = client_ip::resolve(&policy, peer, [black_box(xff.as_bytes())].into_iter(), None);
            assert_eq!(ip, ClientIp::Known("203.0.113.9".parse().unwrap()));
        })
    });
    let nets: Vec<String> = (0..1000).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    let set = IpSet::new(nets.iter().map(|n| parse_net(n).unwrap()));
    let ip: IpAddr = "10.3.200.7".parse().unwrap();
    c.bench_function("allow list of 1k CIDRs", |b| {
        b.iter(|| assert!(set.contains(black_box(ip))))
    });
}

fn bench_limits(c: &mut Criterion) {
    let limits: RateLimits = RateLimits::new(
        vec![LimitDef {
            name: "partner".into(),
            per_minute: NonZeroU32::new(u32::MAX).unwrap(),
        }],
        Default::default(),
    );
    let dir = Directory::new((0..10_000).map(partner).collect(), vec![], vec![]);
    let overrides = limits.build_overrides(&dir, None);
    let ids: Vec<Principal> = (0..10_000)
        .map(|i| Principal::partner(format!("partner-{i}")))
        .collect();
    for id in &ids {
        limits.check(&overrides, &[0], id).unwrap();
    }
    let mut i = 0;
    c.bench_function("rate limit check, 10k partners", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            black_box(limits.check(&overrides, &[0], &ids[i]).unwrap());
        })
    });
}

fn bench_ownership(c: &mut Criterion) {
    let mut p = partner(0);
    for i in 0..100_000 {
        p.orgs.insert(format!("org-{i}").into());
    }
    let learned = LearnedOrgs::new();
    for i in 0..100_000 {
        learned.learn("partner-0", &format!("learned-{i}"));
    }
    c.bench_function("ownership, 100k configured orgs", |b| {
        b.iter(|| check_partner_org(&p, &learned, black_box(b"org-77777")).unwrap())
    });
    c.bench_function("ownership, 100k learned orgs", |b| {
        b.iter(|| check_partner_org(&p, &learned, black_box(b"learned-77777")).unwrap())
    });
}

fn bench_pipeline(c: &mut Criterion) {
    let org = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
    let mut acme = partner(0);
    acme.id = "acme".into();
    acme.orgs.insert(org.into());
    acme.ip_allow_list = Some(IpSet::new([parse_net("203.0.113.0/24").unwrap()]));
    let mut partners: Vec<PartnerPolicy> = (1..10_000).map(partner).collect();
    partners.push(acme);
    let dir = Directory::new(partners, vec![], vec![]);
    let limits: RateLimits = RateLimits::new(
        vec![LimitDef {
            name: "partner".into(),
            per_minute: NonZeroU32::new(u32::MAX).unwrap(),
        }],
        Default::default(),
    );
    let overrides = limits.build_overrides(&dir, None);
    let fixed = StaticPolicy {
        routes: routes(),
        client_ip: ClientIpPolicy {
            source: IpSource::XForwardedFor,
            trusted_proxies: IpSet::new([parse_net("127.0.0.0/8").unwrap()]),
        },
        jwt: jwt_policy(),
        max_body_bytes: 1 << 20,
        allow_path_semicolons: false,
    };
    let snapshot = Snapshot {
        directory: Arc::new(dir),
        keys: Arc::new(keyset()),
        overrides: Arc::new(overrides),
    };
    let tokens = TokenCache::new(1000);
    let learned = LearnedOrgs::new();
    let revoked = Revocations::default();
    let gate = Gate {
        fixed: &fixed,
        snapshot: &snapshot,
        tokens: &tokens,
        revoked: &revoked,
        revocations_usable: true,
    };
    let stores = Embedded {
        limits: &limits,
        learned: &learned,
    };
    let target = format!("/partner/v1/orgs/{org}/api-keys");
    let mut g = c.benchmark_group("whole pipeline (cached token)");
    for kid in ["hs", "rs", "es", "ed"] {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", token(kid, "acme"))).unwrap(),
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let facts = RequestFacts {
            method: "GET",
            target: target.as_bytes(),
            headers: &headers,
            peer: "127.0.0.1".parse().unwrap(),
            content_length: None,
            now: now(),
        };
        ready(decide(&gate, &stores, &facts)).unwrap();
        g.bench_function(kid, |b| {
            b.iter(|| black_box(ready(decide(&gate, &stores, black_box(&facts))).unwrap()))
        });
    }
    g.finish();
}

/// Polls a future once: the embedded decision never waits (no executor needed).
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the embedded decision awaited"),
    }
}

/// The wait a create response sees for its learned org's line (on the journal's writer
/// thread, not the worker's): one journal line appended and fdatasync'd under the writer
/// lock (on the disk `TMPDIR` is on).
fn bench_journal_append(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("authgate-bench-journal-{}", std::process::id()));
    let learned = LearnedOrgs::new();
    let failures = prometheus::IntCounter::new("bench_failures", "bench").unwrap();
    let journal = authgate::journal::Journal::open(&path, &learned, failures).unwrap();
    let mut i = 0u64;
    c.bench_function("journal append + fdatasync", |b| {
        b.iter(|| {
            i += 1;
            journal.append(&learned, "bench", &format!("org-{i}")).unwrap();
        })
    });
    drop(journal);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("lock"));
}

criterion_group!(
    benches,
    bench_journal_append,
    bench_path_and_routes,
    bench_jwt,
    bench_client_ip,
    bench_limits,
    bench_ownership,
    bench_pipeline
);
criterion_main!(benches);
