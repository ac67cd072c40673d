//! Learned orgs across replicas: one Redis set per partner (`orgs:<partner>`). A replica
//! reads its own memory first and asks Redis only on a miss, caching a positive answer;
//! a create response writes Redis (and the local journal) before it completes; whatever a
//! replica learned while Redis was away is written back when Redis returns.

use std::sync::Arc;

use super::{Op, Shared};
use crate::config::settings::OnError;
use crate::gateway::Gateway;
use crate::policy::denial::Denial;
use crate::policy::ownership::LearnedOrgs;

/// How many orgs one resync or import command carries.
const BATCH: usize = 1000;

impl Shared {
    /// The set of orgs `partner` learned through any replica.
    pub(crate) fn orgs_key(&self, partner: &str) -> String {
        self.key(&format!("orgs:{partner}"))
    }

    /// Step 7 after the configured orgs: learned here, or learned by another replica (then
    /// remembered here). Redis unavailable: `local` answers from this replica's knowledge,
    /// `deny` refuses with 503.
    pub(crate) async fn learned(&self, local: &LearnedOrgs, partner: &str, org: &str) -> Result<bool, Denial> {
        if local.owns(partner, org) {
            return Ok(true);
        }
        let key = self.orgs_key(partner);
        let member: Option<bool> = self
            .call(Op::OrgRead, |mut c| async move {
                redis::cmd("SISMEMBER").arg(&key).arg(org).query_async(&mut c).await
            })
            .await;
        match member {
            Some(true) => {
                local.learn(partner, org);
                Ok(true)
            }
            Some(false) => Ok(false),
            None => match self.on_error() {
                OnError::Local => Ok(false),
                OnError::Deny => Err(Denial::SharedStateUnavailable),
            },
        }
    }

    /// Records a learned org in Redis before the create response completes. Called from the
    /// synchronous response-body phase on a proxy worker, so it waits (at most `timeout`) for
    /// the write done on the Redis runtime. A failure is counted and the org is written back
    /// when Redis returns (it is in the local journal and memory either way).
    pub(crate) fn record_blocking(self: &Arc<Self>, partner: &str, org: &str) -> bool {
        if !self.up() {
            return false;
        }
        let this = self.clone();
        let key = self.orgs_key(partner);
        let org = org.to_string();
        let wrote = self.block_on_runtime(
            async move {
                this.call(Op::OrgWrite, |mut c| async move {
                    redis::cmd("SADD").arg(&key).arg(&org).query_async::<i64>(&mut c).await
                })
                .await
            },
            self.timeout() + std::time::Duration::from_millis(5),
        );
        matches!(wrote, Some(Some(_)))
    }

    /// Adds `orgs` to `partner`'s set; returns how many were new (`authgate orgs import`).
    pub(crate) async fn import(&self, partner: &str, orgs: &[String]) -> Option<usize> {
        let key = self.orgs_key(partner);
        let mut added = 0usize;
        for chunk in orgs.chunks(BATCH) {
            let key = key.clone();
            let n: i64 = self
                .run_unbounded(Op::OrgWrite, |mut c| async move {
                    redis::cmd("SADD").arg(&key).arg(chunk).query_async(&mut c).await
                })
                .await?;
            added += usize::try_from(n).unwrap_or(0);
        }
        Some(added)
    }

    /// `partner`'s learned orgs in Redis (`authgate orgs list`).
    pub(crate) async fn list(&self, partner: &str) -> Option<Vec<String>> {
        let key = self.orgs_key(partner);
        self.run_unbounded(Op::OrgRead, |mut c| async move {
            redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await
        })
        .await
    }
}

/// Writes every org this replica knows it learned back to Redis (idempotent `SADD`), so
/// orgs learned while Redis was down, or lost by a Redis restarted without persistence,
/// are shared again.
pub(crate) async fn push_all(gw: &Gateway) {
    let Some(shared) = gw.shared.as_ref() else {
        return;
    };
    let mut by_partner: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (partner, org) in gw.learned.entries() {
        by_partner.entry(partner).or_default().push(org);
    }
    let mut pushed = 0usize;
    for (partner, orgs) in by_partner {
        match shared.import(&partner, &orgs).await {
            Some(n) => pushed += n,
            None => return,
        }
    }
    if pushed > 0 {
        tracing::info!(orgs = pushed, "learned orgs written back to redis");
    }
}
