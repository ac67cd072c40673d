//! `[jwt.jwks] url`: fetched at start and every `refresh`; a failed fetch keeps the last
//! good key set (stale-while-error) and is counted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::gateway::Gateway;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Fetches one JWKS document over HTTP or HTTPS (Mozilla roots, rustls).
pub(crate) async fn fetch(url: &str, timeout: Duration) -> anyhow::Result<Bytes> {
    let uri: http::Uri = url.parse()?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let resp = tokio::time::timeout(timeout, client.get(uri)).await??;
    if !resp.status().is_success() {
        anyhow::bail!("JWKS URL answered {}", resp.status());
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES);
    let bytes = tokio::time::timeout(timeout, body.collect())
        .await?
        .map_err(|e| anyhow::anyhow!("reading JWKS body: {e}"))?
        .to_bytes();
    Ok(bytes)
}

/// One fetch-and-install; returns whether it succeeded.
pub(crate) async fn refresh_once(gw: &Gateway, url: &str) -> bool {
    let result = match fetch(url, Duration::from_secs(10)).await {
        Ok(body) => crate::config::jwks::parse(&body, &gw.settings().fixed.jwt.algorithms).map_err(anyhow::Error::msg),
        Err(e) => Err(e),
    };
    match result {
        Ok((keys, skipped)) => {
            for s in skipped {
                tracing::warn!(url, "JWKS: {s}");
            }
            tracing::info!(url, keys = keys.len(), "JWKS refreshed");
            gw.set_url_keys(keys);
            true
        }
        Err(e) => {
            tracing::warn!(url, "JWKS fetch failed, keeping the last good key set: {e}");
            gw.jwks_fetch_failed();
            false
        }
    }
}

/// Fetches at start, then every `refresh` (retrying sooner while it has never succeeded),
/// and early when a token names an unknown kid (see [`Gateway::jwks_kick`]).
pub(crate) async fn refresh_loop(gw: Arc<Gateway>, url: String, refresh: Duration) {
    let mut ever = false;
    loop {
        ever |= refresh_once(&gw, &url).await;
        let wait = if ever {
            refresh
        } else {
            refresh.min(Duration::from_secs(5))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = gw.jwks_kicked() => {}
        }
    }
}
