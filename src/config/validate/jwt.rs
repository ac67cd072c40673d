//! `[jwt]`, `[[jwt.keys]]` and `[jwt.jwks]` (docs/reference.md#jwt): what a token must say,
//! and the keys that may have signed it.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::{defaults, Ctx};
use crate::config::file::{JwksFile, JwtFile, KeyFile, OneOrMany};
use crate::config::settings::{JwksSettings, KeyMaterial, KeySource};
use crate::policy::jwt::JwtPolicy;

/// `[jwt]`: the accepted algorithms and the claim checks.
pub(super) fn jwt(c: &mut Ctx<'_, '_>, j: &JwtFile) -> JwtPolicy {
    let mut algorithms = Vec::new();
    match &j.algorithms {
        None => algorithms.extend(defaults::ALGORITHMS.iter().filter_map(|a| a.parse::<Algorithm>().ok())),
        Some(list) => {
            for a in list {
                match a.get_ref().parse::<Algorithm>() {
                    Ok(alg) => algorithms.push(alg),
                    Err(_) => c.r.at(
                        a.span(),
                        format!("jwt.algorithms: {:?} is not a supported algorithm", a.get_ref()),
                    ),
                }
            }
        }
    }
    let audience = match &j.audience {
        None => vec![],
        Some(OneOrMany::One(a)) => vec![a.clone()],
        Some(OneOrMany::Many(v)) => v.clone(),
    };
    let jwt = JwtPolicy {
        algorithms,
        issuer: j.issuer.clone().filter(|i| !i.is_empty()),
        audience,
        leeway_secs: c.duration(&j.leeway, defaults::LEEWAY, "jwt.leeway").as_secs_f64(),
        require_exp: j.require_exp.unwrap_or(false),
        partner_claim: j.partner_claim.clone().unwrap_or_else(|| "sub".into()),
        org_claim: j.org_claim.clone().unwrap_or_else(|| "org_id".into()),
        key_id_claim: j.key_id_claim.clone().unwrap_or_else(|| "jti".into()),
        org_must_be_listed: j.org_must_be_listed.unwrap_or(false),
        require_key_id: j.require_key_id.unwrap_or(false),
    };
    if jwt.partner_claim == jwt.org_claim {
        c.r.whole("jwt.partner_claim and jwt.org_claim must differ");
    }
    jwt
}

/// `[[jwt.keys]]`: each key's kid (unique), algorithm (one `[jwt] algorithms` allows) and
/// exactly one source of material that fits the algorithm. The material itself is read by
/// [`crate::config::load_policy_files`].
pub(super) fn jwt_keys(c: &mut Ctx<'_, '_>, keys: &[Spanned<KeyFile>], algorithms: &[Algorithm]) -> Vec<KeySource> {
    let mut kids = HashSet::new();
    keys.iter()
        .filter_map(|k| jwt_key(c, k, algorithms, &mut kids))
        .collect()
}

/// One `[[jwt.keys]]` entry; `None` when it cannot be used at all (reported).
fn jwt_key(
    c: &mut Ctx<'_, '_>,
    k: &Spanned<KeyFile>,
    algorithms: &[Algorithm],
    kids: &mut HashSet<String>,
) -> Option<KeySource> {
    let line = c.line(k.span());
    let k = k.get_ref();
    let kid = k.kid.get_ref().clone();
    if kid.is_empty() {
        c.r.at(k.kid.span(), "jwt.keys: kid must not be empty");
    } else if !kids.insert(kid.clone()) {
        c.r.at(k.kid.span(), format!("jwt.keys: kid {kid:?} is defined twice"));
    }
    let Ok(alg) = k.algorithm.get_ref().parse::<Algorithm>() else {
        let message = format!("jwt.keys: algorithm {:?} is not supported", k.algorithm.get_ref());
        c.r.at(k.algorithm.span(), message);
        return None;
    };
    if !algorithms.contains(&alg) {
        c.r.at(
            k.algorithm.span(),
            format!("jwt.keys: key {kid:?} uses {alg:?}, which jwt.algorithms does not allow"),
        );
    }
    let material = key_material(c, k, &kid, alg)?;
    Some(KeySource {
        kid,
        algorithm: alg,
        material,
        private_key_file: k.private_key_file.as_deref().map(|f| c.path(f)),
        line,
    })
}

/// Where a key's material comes from: exactly one of `secret_env`, `secret_file` (HMAC) or
/// `public_key_file` (the others); `private_key_file` only beside a public key.
fn key_material(c: &mut Ctx<'_, '_>, k: &KeyFile, kid: &str, alg: Algorithm) -> Option<KeyMaterial> {
    let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    let sources = [
        k.secret_env.is_some(),
        k.secret_file.is_some(),
        k.public_key_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        c.r.at(
            k.kid.span(),
            format!("jwt.keys: key {kid:?} needs exactly one of secret_env, secret_file, public_key_file"),
        );
        return None;
    }
    let material = if let Some(env) = &k.secret_env {
        KeyMaterial::SecretEnv(env.clone())
    } else if let Some(f) = &k.secret_file {
        KeyMaterial::SecretFile(c.path(f))
    } else {
        KeyMaterial::PublicKeyFile(c.path(k.public_key_file.as_deref().unwrap_or_default()))
    };
    let is_secret = !matches!(material, KeyMaterial::PublicKeyFile(_));
    if hmac != is_secret {
        let want = if hmac {
            "secret_env or secret_file"
        } else {
            "public_key_file"
        };
        c.r.at(k.algorithm.span(), format!("jwt.keys: a {alg:?} key takes {want}"));
    }
    if hmac && k.private_key_file.is_some() {
        c.r.at(
            k.kid.span(),
            format!("jwt.keys: key {kid:?}: private_key_file is for asymmetric keys"),
        );
    }
    Some(material)
}

/// `[jwt.jwks]`: a JWKS `file`, a `url` (https, or http to loopback) or both, and how often
/// the URL is fetched again.
pub(super) fn jwks(c: &mut Ctx<'_, '_>, w: Option<&Spanned<JwksFile>>) -> Option<JwksSettings> {
    let w = w?;
    let span = w.span();
    let w = w.get_ref();
    if w.file.is_none() && w.url.is_none() {
        c.r.at(span.clone(), "jwt.jwks needs file or url");
    }
    if let Some(u) = &w.url {
        if let Err(e) = jwks_url(u.get_ref()) {
            c.r.at(u.span(), format!("jwt.jwks.url: {e}"));
        }
    }
    let refresh = c.duration(&w.refresh, defaults::JWKS_REFRESH, "jwt.jwks.refresh");
    if refresh < Duration::from_secs(1) {
        c.r.at(span, "jwt.jwks.refresh must be at least 1s");
    }
    Some(JwksSettings {
        file: w.file.as_deref().map(|f| c.path(f)),
        url: w.url.as_ref().map(|u| u.get_ref().clone()),
        refresh,
    })
}

/// A JWKS URL must be https, or http to a loopback host (`127.0.0.0/8`, `::1`,
/// `localhost`): keys fetched in clear text over a network could be anyone's.
fn jwks_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical().is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{url:?}: plain http is only allowed to a loopback host (127.0.0.0/8, ::1, localhost); use https"
                ))
            }
        }
        _ => Err(format!("{url:?} is not an https URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_urls_are_https_or_loopback_http() {
        for ok in [
            "https://issuer.example/.well-known/jwks.json",
            "http://127.0.0.1:8000/jwks",
            "http://127.9.9.9/jwks",
            "http://[::1]:9/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:1/jwks",
        ] {
            assert!(jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example/jwks",
            "http://10.0.0.1/jwks",
            "http://[::ffff:10.0.0.1]/jwks",
            "http://localhost.evil.example/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/jwks",
            "jwks.json",
            "",
        ] {
            assert!(jwks_url(bad).is_err(), "{bad}");
        }
    }
}
