//! Learned orgs across replicas: one Redis set per partner (`orgs:<partner>`). A replica
//! reads its own memory first and asks Redis only on a miss, caching a positive answer;
//! a create response writes Redis (and the local journal) before it completes, on the Redis
//! runtime, never on the worker thread; whatever a replica learned while Redis was away, or
//! a Redis that lost its data no longer holds, is written back by every replica.

use std::sync::Arc;

use redis::Value;

use super::faults::{naming_key, unexpected};
use super::Shared;
use crate::config::settings::OnError;
use crate::metrics::RedisOp;
use crate::policy::denial::Denial;
use crate::policy::ownership::LearnedOrgs;

/// Adds every `ARGV` member after the first to the set `KEYS[1]` and answers the ones that
/// were new, so `authgate orgs import` is all or nothing: one atomic script, and a journal
/// failure afterwards takes exactly those back. `ARGV[1]` is a deadline (ms of Redis's
/// clock): past it the script writes nothing and answers the status `LATE`, so an import
/// whose command gave up never lands afterwards.
const IMPORT_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then
  return {ok = 'LATE'}
end
local new = {}
for i = 2, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then new[#new + 1] = ARGV[i] end
end
return new
"#;

/// Takes back what [`IMPORT_SCRIPT`] added, under the same deadline rule; answers how many
/// were removed.
const UNIMPORT_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then
  return {ok = 'LATE'}
end
local n = 0
for i = 2, #ARGV do n = n + redis.call('SREM', KEYS[1], ARGV[i]) end
return n
"#;

/// What a deadline-bound import (or its undoing) did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Imported<T> {
    /// Done: the orgs that were new (or how many were taken back).
    Done(T),
    /// The deadline had passed by Redis's clock when the script ran: nothing was written.
    Late,
}

/// `LATE`, or what `then` reads from the reply.
fn late_or<T>(v: Value, then: impl FnOnce(Value) -> redis::RedisResult<T>) -> redis::RedisResult<Imported<T>> {
    match v {
        Value::SimpleString(s) if s == "LATE" => Ok(Imported::Late),
        v => then(v).map(Imported::Done),
    }
}

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
                let v = redis::cmd("SISMEMBER").arg(&key).arg(org).query_async(&mut c).await;
                membership(v.map_err(|e| naming_key(e, &key))?)
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

    /// Records a learned org in Redis before the create response completes: the write runs
    /// on the Redis runtime (at most `timeout`), and the receiver answers whether it landed
    /// once it is done, so the response waits and the worker thread does not. A failure is
    /// counted and the org is written back when Redis returns (it is in the local journal and
    /// memory either way).
    pub(crate) fn record(self: &Arc<Self>, partner: &str, org: &str) -> tokio::sync::oneshot::Receiver<bool> {
        let (done, wrote) = tokio::sync::oneshot::channel();
        if !self.up() {
            let _ = done.send(false);
            return wrote;
        }
        let this = self.clone();
        let key = self.orgs_key(partner);
        let org = org.to_string();
        self.runtime.spawn(async move {
            let added = this
                .call(RedisOp::OrgWrite, |mut c| async move {
                    let v = redis::cmd("SADD").arg(&key).arg(&org).query_async(&mut c).await;
                    count(v.map_err(|e| naming_key(e, &key))?)
                })
                .await;
            let _ = done.send(added.is_some());
        });
        wrote
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

    /// Adds `orgs` to `partner`'s set in one atomic script, unless Redis's clock is past
    /// `deadline_ms`; the ones that were new (`authgate orgs import`). An `Err` of
    /// [`Fault::Timeout`](super::faults::Fault) or `Io` leaves the outcome unknown; any other
    /// means nothing was written.
    pub(crate) async fn import(
        &self,
        partner: &str,
        orgs: &[String],
        deadline_ms: u64,
    ) -> Result<Imported<Vec<String>>, super::faults::Fault> {
        let key = self.orgs_key(partner);
        let script = redis::Script::new(IMPORT_SCRIPT);
        self.housekeeping(RedisOp::OrgWrite, super::BULK_FLOOR, |mut c| async move {
            let v = script.key(&key).arg(deadline_ms).arg(orgs).invoke_async(&mut c).await;
            late_or(v.map_err(|e| naming_key(e, &key))?, strings)
        })
        .await
    }

    /// Takes back what [`Shared::import`] added, when the journal could not record it
    /// (the same deadline rule).
    pub(crate) async fn unimport(
        &self,
        partner: &str,
        orgs: &[String],
        deadline_ms: u64,
    ) -> Result<Imported<usize>, super::faults::Fault> {
        if orgs.is_empty() {
            return Ok(Imported::Done(0));
        }
        let key = self.orgs_key(partner);
        let script = redis::Script::new(UNIMPORT_SCRIPT);
        self.housekeeping(RedisOp::OrgWrite, super::BULK_FLOOR, |mut c| async move {
            let v = script.key(&key).arg(deadline_ms).arg(orgs).invoke_async(&mut c).await;
            late_or(v.map_err(|e| naming_key(e, &key))?, count)
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
        assert_eq!(
            late_or(Value::SimpleString("LATE".into()), count).unwrap(),
            Imported::Late
        );
        assert_eq!(late_or(Value::Int(2), count).unwrap(), Imported::Done(2));
        assert!(late_or(Value::SimpleString("OK".into()), count).is_err());
    }
}
