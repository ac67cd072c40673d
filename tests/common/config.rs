//! The gateway config the tests start from: [`Cfg`] (the base config with the parts a test
//! changes), the base policy and the key files every config directory gets.

use super::tokens::{Key, AUDIENCE, HS_SECRET, ISSUER};

pub const ORG_ACME: &str = "org-acme-1";
pub const ORG_ACME_UUID: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
pub const ORG_GLOBEX: &str = "org-globex-1";
pub const ORG_LOAD: &str = "org-load-1";

/// The four `[[jwt.keys]]` of the base config (files written by [`Gateway::start`]).
pub const BASE_KEYS: &str = r#"
[[jwt.keys]]
kid = "hs-1"
algorithm = "HS256"
secret_file = "keys/hs.secret"

[[jwt.keys]]
kid = "rs-1"
algorithm = "RS256"
public_key_file = "keys/rs-1.pub.pem"
private_key_file = "keys/rs-1.key.pem"

[[jwt.keys]]
kid = "es-1"
algorithm = "ES256"
public_key_file = "keys/es-1.pub.pem"
private_key_file = "keys/es-1.key.pem"

[[jwt.keys]]
kid = "ed-1"
algorithm = "EdDSA"
public_key_file = "keys/ed-1.pub.pem"
private_key_file = "keys/ed-1.key.pem"
"#;

const BASE_ROUTES: &str = r#"
[[routes]]
name = "by-external-id"
path = "/partner/v1/orgs/by-external-id/{external_id}"
auth = "partner"
limits = ["partner"]

[[routes]]
name = "login-links"
path = "/partner/v1/orgs/{org_id}/login-links"
method = "POST"
auth = "partner"
org_param = "org_id"
limits = ["partner", "login-links"]

[[routes]]
name = "org-scoped"
path = "/partner/v1/orgs/{org_id}/**"
auth = "partner"
org_param = "org_id"
limits = ["partner"]

[[routes]]
name = "orgs"
path = "/partner/v1/orgs"
auth = "partner"
limits = ["partner"]
learn_org_from_response = "/id"

[[routes]]
name = "health"
path = "/health"
auth = "none"

[[routes]]
name = "public"
path = "/public/**"
auth = "none"
"#;

/// The gateway config, mirroring the example of docs/reference.md#configuration. Placeholders `{listen}`,
/// `{admin}`, `{upstream}` are filled in by [`Gateway::start`].
#[derive(Clone, Debug)]
pub struct Cfg {
    /// `[server] threads`.
    pub threads: u32,
    /// Extra lines inside `[server]`.
    pub server_extra: String,
    pub max_body_bytes: u64,
    pub connect_timeout: String,
    pub read_timeout: String,
    pub shutdown_grace: String,
    /// TOML array literal.
    pub trusted_proxies: String,
    /// Extra lines inside `[jwt]` (before the keys).
    pub jwt_extra: String,
    /// The `[[jwt.keys]]` blocks.
    pub keys: String,
    /// A `[jwt.jwks]` table, or empty.
    pub jwks: String,
    pub limits_extra: String,
    /// Routes tried after the base routes.
    pub routes_extra: String,
    /// `[[upstreams]]` tables; when set they replace `[upstream]` (the base routes use the
    /// cluster named "default").
    pub upstreams: String,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            threads: 2,
            server_extra: String::new(),
            max_body_bytes: 1_048_576,
            connect_timeout: "2s".into(),
            read_timeout: "30s".into(),
            shutdown_grace: "5s".into(),
            trusted_proxies: r#"["127.0.0.0/8", "::1/128"]"#.into(),
            jwt_extra: String::new(),
            keys: BASE_KEYS.into(),
            jwks: String::new(),
            limits_extra: String::new(),
            routes_extra: String::new(),
            upstreams: String::new(),
        }
    }
}

impl Cfg {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n");
        s.push_str(&format!("threads = {}\n", self.threads));
        s.push_str(&self.server_extra);
        s.push_str(&format!("max_body_bytes = {}\n", self.max_body_bytes));
        s.push_str(&format!("shutdown_grace = \"{}\"\n", self.shutdown_grace));
        if self.upstreams.is_empty() {
            s.push_str("\n[upstream]\naddress = \"{upstream}\"\ntls = false\n");
            s.push_str(&format!(
                "connect_timeout = \"{}\"\nread_timeout = \"{}\"\n",
                self.connect_timeout, self.read_timeout
            ));
        } else {
            s.push('\n');
            s.push_str(&self.upstreams);
        }
        s.push_str("\n[client_ip]\nsource = \"x-forwarded-for\"\n");
        s.push_str(&format!("trusted_proxies = {}\n", self.trusted_proxies));
        s.push_str("\n[jwt]\nalgorithms = [\"HS256\", \"RS256\", \"ES256\", \"EdDSA\"]\n");
        s.push_str(&format!(
            "issuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\nleeway = \"30s\"\n"
        ));
        s.push_str("require_exp = false\npartner_claim = \"sub\"\norg_claim = \"org_id\"\nkey_id_claim = \"jti\"\n");
        s.push_str(&self.jwt_extra);
        s.push('\n');
        s.push_str(&self.keys);
        s.push('\n');
        s.push_str(&self.jwks);
        s.push_str("\n[policies]\nfile = \"partners.toml\"\n");
        s.push_str("\n[[limits]]\nname = \"partner\"\nper_minute = 100\n");
        s.push_str("\n[[limits]]\nname = \"login-links\"\nper_minute = 30\n");
        s.push_str(&self.limits_extra);
        s.push_str(BASE_ROUTES);
        s.push_str(&self.routes_extra);
        s
    }
}

pub fn base_config() -> String {
    Cfg::default().render()
}

/// The base policy file.
pub fn base_policy() -> String {
    format!(
        r#"# e2e test policy
[[partner]]
id = "acme"
active = true
revoked_keys = ["key-leaked"]
orgs = ["{ORG_ACME}", "{ORG_ACME_UUID}"]

[[partner]]
id = "globex"
orgs = ["{ORG_GLOBEX}"]

[[partner]]
id = "initech"
ip_allow_list = ["203.0.113.0/24", "2001:db8::/48", "198.51.100.7"]
orgs = ["org-initech-1"]

[[partner]]
id = "dormant"
active = false
orgs = ["org-dormant-1"]

[[partner]]
id = "dormant-ip"
active = false
ip_allow_list = ["203.0.113.0/24"]

[[partner]]
id = "small"
orgs = ["org-small-1"]
limits = {{ partner = 5 }}

[[partner]]
id = "small2"
orgs = ["org-small2-1"]
limits = {{ partner = 5 }}

[[partner]]
id = "loadtest"
orgs = ["{ORG_LOAD}"]
limits = {{ partner = 1000000 }}
"#
    )
}

/// Key files every gateway's config dir gets.
pub fn standard_files() -> Vec<(String, Vec<u8>)> {
    let mut secret = HS_SECRET.to_vec();
    secret.push(b'\n'); // one trailing newline is dropped by the gateway
    let mut v = vec![("keys/hs.secret".to_string(), secret)];
    for (key, name) in [(Key::Rs1, "rs-1"), (Key::Es1, "es-1"), (Key::Ed1, "ed-1")] {
        v.push((format!("keys/{name}.pub.pem"), key.public_pem()));
        v.push((format!("keys/{name}.key.pem"), key.private_pem()));
    }
    v
}

/// `text` with the first `needle` replaced by `with`; panics when `needle` is absent, so a
/// test whose base config drifted fails instead of silently running on the base config.
pub fn edited(text: &str, needle: &str, with: &str) -> String {
    assert!(
        text.contains(needle),
        "the config no longer contains {needle:?}: the test would run on the unedited config"
    );
    text.replacen(needle, with, 1)
}
