//! Replica announcements (docs/reference.md#redis): every replica records, at least once a
//! second, its `instance_id` and the revocation watermark it has applied, stamped with
//! Redis's own clock (replicas' clocks may disagree). `authgate revoke` reads who announced
//! in the last 10 s and waits until each has applied its record, so an operator learns
//! which replicas refuse the key now, not how many happened to be subscribed.

use std::time::Duration;

use redis::Value;

use super::faults::{unexpected, Fault};
use super::{Shared, PROBE_FLOOR};
use crate::metrics::RedisOp;

/// Records one announcement and answers whether the sentinel key exists (its absence means
/// Redis restarted without the data replicas wrote back). `KEYS`: the replicas' sorted set
/// (scored by Redis time, ms), the hash of their watermarks, the sentinel; `ARGV`: the
/// instance id and its watermark. Replicas silent for a minute are forgotten. A write, so
/// it doubles as the maintainer's probe.
const ANNOUNCE_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - 60000))
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return redis.call('EXISTS', KEYS[3])
"#;

/// The replicas announced within the last `ARGV[1]` ms, each followed by its watermark.
const REPLICAS_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now - tonumber(ARGV[1])), '+inf')
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or '0'
end
return out
"#;

/// How recently a replica must have announced itself for `revoke` to wait for it.
pub(crate) const RECENT: Duration = Duration::from_secs(10);

/// A decimal watermark as Redis returns it (bulk string or integer).
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// `[id, watermark, id, watermark, ...]` from [`REPLICAS_SCRIPT`]; `None` for anything else.
fn replicas_reply(v: &Value) -> Option<Vec<(String, u64)>> {
    let Value::Array(items) = v else {
        return None;
    };
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| match &pair[0] {
            Value::BulkString(id) => Some((String::from_utf8(id.clone()).ok()?, number(&pair[1])?)),
            _ => None,
        })
        .collect()
}

impl Shared {
    fn replicas_key(&self) -> String {
        self.key("replicas")
    }

    fn watermarks_key(&self) -> String {
        self.key("replicas:applied")
    }

    fn sentinel_key(&self) -> String {
        self.key("alive")
    }

    /// Announces this replica with its revocation watermark; `Ok(true)` when the sentinel
    /// is present. The maintainer's probe: a failure here means Redis cannot be written.
    pub(crate) async fn announce(&self, watermark: u64) -> Result<bool, Fault> {
        let (zset, hash, sentinel) = (self.replicas_key(), self.watermarks_key(), self.sentinel_key());
        let id = self.instance_id().to_string();
        let script = redis::Script::new(ANNOUNCE_SCRIPT);
        let reply = self
            .housekeeping(RedisOp::Announce, PROBE_FLOOR, |mut c| async move {
                let v: Value = script
                    .key(&zset)
                    .key(&hash)
                    .key(&sentinel)
                    .arg(&id)
                    .arg(watermark)
                    .invoke_async(&mut c)
                    .await?;
                match v {
                    Value::Int(n @ (0 | 1)) => Ok(n == 1),
                    _ => Err(unexpected("announcement answered something other than 0 or 1")),
                }
            })
            .await?;
        Ok(reply)
    }

    /// Marks Redis as holding this deployment's data (after a write-back).
    pub(crate) async fn set_sentinel(&self) -> bool {
        let key = self.sentinel_key();
        self.bulk(RedisOp::Resync, |mut c| async move {
            let v: Value = redis::cmd("SET").arg(&key).arg(1).query_async(&mut c).await?;
            match v {
                Value::Okay => Ok(()),
                _ => Err(unexpected("SET answered something other than OK")),
            }
        })
        .await
        .is_some()
    }

    /// The replicas announced within [`RECENT`] and their watermarks (`authgate revoke`).
    pub(crate) async fn replicas(&self) -> Option<Vec<(String, u64)>> {
        let (zset, hash) = (self.replicas_key(), self.watermarks_key());
        let script = redis::Script::new(REPLICAS_SCRIPT);
        self.bulk(RedisOp::Announce, |mut c| async move {
            let v: Value = script
                .key(&zset)
                .key(&hash)
                .arg(RECENT.as_millis() as u64)
                .invoke_async(&mut c)
                .await?;
            replicas_reply(&v).ok_or_else(|| unexpected("replica list of an unexpected shape"))
        })
        .await
    }
}

/// Each replica's verdict on one record: applied (its watermark reached `seq`) or not.
pub(crate) fn verdicts(replicas: &[(String, u64)], seq: u64) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = replicas.iter().map(|(id, w)| (id.clone(), *w >= seq)).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_are_pairs_of_id_and_number_and_nothing_else() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let ok = Value::Array(vec![bulk("a-1"), bulk("7"), bulk("b-2"), Value::Int(0)]);
        assert_eq!(
            replicas_reply(&ok),
            Some(vec![("a-1".to_string(), 7), ("b-2".to_string(), 0)])
        );
        assert_eq!(replicas_reply(&Value::Array(vec![])), Some(vec![]));
        for bad in [
            Value::Array(vec![bulk("a-1")]),
            Value::Array(vec![bulk("a-1"), bulk("x")]),
            Value::Array(vec![Value::Int(1), bulk("1")]),
            Value::Array(vec![bulk("a"), bulk("-1")]),
            Value::Okay,
            bulk("a 1"),
        ] {
            assert_eq!(replicas_reply(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_replica_has_applied_a_record_once_its_watermark_reaches_it() {
        let r = vec![("b".to_string(), 4), ("a".to_string(), 5)];
        assert_eq!(verdicts(&r, 5), vec![("a".to_string(), true), ("b".to_string(), false)]);
        assert!(verdicts(&r, 4).iter().all(|(_, ok)| *ok));
    }
}
