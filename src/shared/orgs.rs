//! Learned orgs across replicas: one Redis set per partner (`orgs:<partner>`). A replica
//! reads its own memory first and asks Redis only on a miss, caching a positive answer;
//! a create response writes Redis (and the local journal) before it completes; whatever a
//! replica learned while Redis was away is written back when Redis returns.

use std::sync::Arc;

use redis::Value;

use super::faults::unexpected;
use super::Shared;
use crate::config::settings::OnError;
use crate::metrics::RedisOp;
use crate::policy::denial::Denial;
use crate::policy::ownership::LearnedOrgs;

/// Adds every `ARGV` member to the set `KEYS[1]` and answers the ones that were new, so
/// `authgate orgs import` is all or nothing: one atomic script, and a journal failure
/// afterwards takes exactly those back.
const IMPORT_SCRIPT: &str = r#"
local new = {}
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then new[#new + 1] = ARGV[i] end
end
return new
"#;

/// A set-membership answer: integer 1 or 0, nothing else. A reply of another type is an
/// error (`on_error` applies), never a grant.
fn membership(v: Value) -> redis::RedisResult<bool> {
    match v {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        _ => Err(unexpected("SISMEMBER answered something other than 0 or 1")),
    }
}

/// An integer count (SADD, SREM).
fn count(v: Value) -> redis::RedisResult<usize> {
    match v {
        Value::Int(n) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(unexpected("expected a non-negative integer")),
    }
}

/// A list of strings (SMEMBERS, the import script).
fn strings(v: Value) -> redis::RedisResult<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(unexpected("expected an array of strings"));
    };
    items
        .into_iter()
        .map(|i| match i {
            Value::BulkString(b) => String::from_utf8(b).map_err(|_| unexpected("an org id that is not UTF-8")),
            _ => Err(unexpected("expected an array of strings")),
        })
        .collect()
}

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
            .call(RedisOp::OrgRead, |mut c| async move {
                membership(redis::cmd("SISMEMBER").arg(&key).arg(org).query_async(&mut c).await?)
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
                this.call(RedisOp::OrgWrite, |mut c| async move {
                    count(redis::cmd("SADD").arg(&key).arg(&org).query_async(&mut c).await?)
                })
                .await
            },
            self.timeout() + std::time::Duration::from_millis(5),
        );
        matches!(wrote, Some(Some(_)))
    }

    /// Adds `orgs` to `partner`'s set in batches (the write-back of learned orgs); returns
    /// how many were new.
    async fn add(&self, partner: &str, orgs: &[String]) -> Option<usize> {
        let key = self.orgs_key(partner);
        let mut added = 0usize;
        for chunk in orgs.chunks(BATCH) {
            let key = key.clone();
            added += self
                .bulk(RedisOp::Resync, |mut c| async move {
                    count(redis::cmd("SADD").arg(&key).arg(chunk).query_async(&mut c).await?)
                })
                .await?;
        }
        Some(added)
    }

    /// Adds `orgs` to `partner`'s set in one atomic script; returns the ones that were new
    /// (`authgate orgs import`). `None`: nothing was written.
    pub(crate) async fn import(&self, partner: &str, orgs: &[String]) -> Option<Vec<String>> {
        let key = self.orgs_key(partner);
        let script = redis::Script::new(IMPORT_SCRIPT);
        self.bulk(RedisOp::OrgWrite, |mut c| async move {
            strings(script.key(&key).arg(orgs).invoke_async(&mut c).await?)
        })
        .await
    }

    /// Takes back what [`Shared::import`] added, when the journal could not record it.
    pub(crate) async fn unimport(&self, partner: &str, orgs: &[String]) -> Option<usize> {
        if orgs.is_empty() {
            return Some(0);
        }
        let key = self.orgs_key(partner);
        self.bulk(RedisOp::OrgWrite, |mut c| async move {
            count(redis::cmd("SREM").arg(&key).arg(orgs).query_async(&mut c).await?)
        })
        .await
    }

    /// `partner`'s learned orgs in Redis (`authgate orgs list`).
    pub(crate) async fn list(&self, partner: &str) -> Option<Vec<String>> {
        let key = self.orgs_key(partner);
        self.bulk(RedisOp::OrgRead, |mut c| async move {
            strings(redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await?)
        })
        .await
    }
}

/// Writes every org this replica knows it learned back to Redis (idempotent `SADD`), so
/// orgs learned while Redis was down, or lost by a Redis restarted without persistence,
/// are shared again. `false` when Redis could not be written.
pub(crate) async fn push_all(shared: &Shared, learned: &LearnedOrgs) -> bool {
    let mut by_partner: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (partner, org) in learned.entries() {
        by_partner.entry(partner).or_default().push(org);
    }
    let mut pushed = 0usize;
    for (partner, orgs) in by_partner {
        match shared.add(&partner, &orgs).await {
            Some(n) => pushed += n,
            None => return false,
        }
    }
    if pushed > 0 {
        tracing::info!(orgs = pushed, "learned orgs written back to redis");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_integer_one_or_zero_and_anything_else_is_an_error() {
        assert!(membership(Value::Int(1)).unwrap());
        assert!(!membership(Value::Int(0)).unwrap());
        for bad in [
            Value::Okay,
            Value::SimpleString("OK".into()),
            Value::BulkString(b"1".to_vec()),
            Value::Int(2),
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
        ] {
            assert!(membership(bad.clone()).is_err(), "{bad:?} must not read as a grant");
        }
        assert!(count(Value::Int(-1)).is_err());
        assert!(strings(Value::Array(vec![Value::Int(1)])).is_err());
    }
}
