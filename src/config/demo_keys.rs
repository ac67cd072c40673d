//! Demo keys: the one pair that must never be trusted, and fresh pairs for `authgate demo`.
//!
//! Round 1 committed an Ed25519 demo pair (`config/keys/demo-ed.*`); its private half stays
//! in git history, so anyone can sign with it. Every place a verification key enters the
//! gateway (`[[jwt.keys]] public_key_file`, a JWKS document) asks this module, so the check
//! lives once. The demo makes its own pair at run time instead ([`generate_ed25519_pem`]),
//! so no private key ships in the repository.

/// The raw Ed25519 public key of the burned demo pair.
const BURNED_DEMO_ED25519: [u8; 32] = [
    0x4b, 0x06, 0xd3, 0xc7, 0x7f, 0xbc, 0x1d, 0x9c, 0x69, 0xdb, 0xce, 0x37, 0xdd, 0xf5, 0x0a, 0x56, 0x93, 0xb1, 0x60,
    0xd0, 0x6c, 0x73, 0x1c, 0x8f, 0x75, 0x2d, 0x63, 0xdc, 0x67, 0x28, 0xd1, 0x4d,
];

/// Whether a raw Ed25519 public key (a JWK's `x`) is the burned demo key.
pub(crate) fn is_burned_raw(raw: &[u8]) -> bool {
    raw == BURNED_DEMO_ED25519
}

/// Whether a PEM file holds the burned demo public key.
pub(crate) fn is_burned_pem(pem: &[u8]) -> bool {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .is_ok_and(|der| der.ends_with(&BURNED_DEMO_ED25519))
}

/// A fresh Ed25519 pair as (PKCS#8 private PEM, SPKI public PEM), for `authgate demo`.
/// aws-lc-rs (the signature backend already) writes the DER, the `pem` crate the armour.
pub(crate) fn generate_ed25519_pem() -> anyhow::Result<(String, String)> {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    let failed = |_| anyhow::anyhow!("cannot generate an Ed25519 key pair");
    let pair = Ed25519KeyPair::generate().map_err(failed)?;
    let private = pair.to_pkcs8v1().map_err(failed)?;
    let public = pair.public_key().as_der().map_err(failed)?;
    Ok((
        pem_text("PRIVATE KEY", private.as_ref()),
        pem_text("PUBLIC KEY", public.as_ref()),
    ))
}

/// PEM with `\n` line ends, as the key files the config names usually are.
fn pem_text(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use serde_json::Value;

    #[test]
    fn the_burned_demo_key_is_recognised() {
        let burned = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEASwbTx3+8HZxp28433fUKVpOxYNBscxyPdS1j3Gco0U0=\n-----END PUBLIC KEY-----\n";
        assert!(is_burned_pem(burned));
        assert!(is_burned_raw(&BURNED_DEMO_ED25519));
        let (_, fresh) = generate_ed25519_pem().unwrap();
        assert!(!is_burned_pem(fresh.as_bytes()));
    }

    /// The demo's pair must work end to end: its private half signs what its public half
    /// verifies, and every call makes a new key.
    #[test]
    fn generated_ed25519_pair_signs_and_verifies() {
        let (private, public) = generate_ed25519_pem().unwrap();
        assert_eq!(pem::parse(&private).unwrap().tag(), "PRIVATE KEY");
        assert_eq!(pem::parse(&public).unwrap().tag(), "PUBLIC KEY");
        assert!(!private.contains('\r') && !public.contains('\r'));

        let claims = serde_json::json!({ "partner_id": "p1" });
        let signing = EncodingKey::from_ed_pem(private.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signing).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        let verifying = DecodingKey::from_ed_pem(public.as_bytes()).unwrap();
        let data = jsonwebtoken::decode::<Value>(&token, &verifying, &validation).unwrap();
        assert_eq!(data.claims, claims);

        let (_, other_public) = generate_ed25519_pem().unwrap();
        assert_ne!(public, other_public);
        let other = DecodingKey::from_ed_pem(other_public.as_bytes()).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&token, &other, &validation).is_err());
    }
}
