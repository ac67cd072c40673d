//! Replica announcements (docs/reference.md#partial-failures): every replica records, at least once a
//! second, its `instance_id`, the store epoch it counts in and the revocation watermark it
//! has applied and written down, stamped with Redis's own clock (replicas' clocks may
//! disagree). `authgate revoke` reads who announced in the last 10 s and waits until each
//! has applied its record in the record's epoch, so an operator learns which replicas refuse
//! the key now, not how many happened to be subscribed.
//!
//! The announcement is also how a replica notices that Redis lost its data: it answers the
//! store's epoch, and an epoch other than the one this replica last wrote back to means its
//! learned orgs and revocations may be missing there (docs/reference.md#partial-failures).

use std::time::Duration;

use redis::Value;

use super::faults::{unexpected, Fault};
use super::revocations::candidate_epoch;
use super::{Shared, PROBE_FLOOR};
use crate::metrics::RedisOp;

/// Records one announcement and answers the store's epoch. `KEYS`: the replicas' sorted set
/// (scored by Redis time, ms), the hash of their announcements, the epoch, the revocation
/// counter; `ARGV`: the instance id, its watermark, the epoch that watermark counts in, a
/// candidate epoch. The epoch is made anew when it is missing (Redis lost it), and also when
/// this replica has applied more records of the current epoch than its counter says were
/// ever stored (Redis went back in time: a restore from an older snapshot). Replicas silent
/// for a minute are forgotten. A write, so it doubles as the maintainer's probe.
const ANNOUNCE_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = redis.call('GET', KEYS[3])
if (not e) or (e == ARGV[3] and tonumber(ARGV[2]) > tonumber(redis.call('GET', KEYS[4]) or '0')) then
  e = ARGV[4]
  redis.call('SET', KEYS[3], e)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ' ' .. ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - 60000))
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return e
"#;

/// The replicas announced within the last `ARGV[1]` ms, each followed by its announcement
/// (`"<epoch> <watermark>"`).
const REPLICAS_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now - tonumber(ARGV[1])), '+inf')
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ' 0'
end
return out
"#;

/// How recently a replica must have announced itself for `revoke` to wait for it.
pub(crate) const RECENT: Duration = Duration::from_secs(10);

/// What one replica announced: the epoch its watermark counts in (empty: it never read the
/// store) and the watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    pub(crate) id: String,
    pub(crate) epoch: String,
    pub(crate) watermark: u64,
}

/// `"<epoch> <watermark>"`.
fn announcement(id: String, v: &Value) -> Option<Announcement> {
    let Value::BulkString(b) = v else { return None };
    let (epoch, watermark) = std::str::from_utf8(b).ok()?.split_once(' ')?;
    Some(Announcement {
        id,
        epoch: epoch.to_string(),
        watermark: watermark.parse().ok()?,
    })
}

/// `[id, announcement, id, announcement, ...]` from [`REPLICAS_SCRIPT`]; `None` for
/// anything else.
fn replicas_reply(v: &Value) -> Option<Vec<Announcement>> {
    let Value::Array(items) = v else {
        return None;
    };
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| match &pair[0] {
            Value::BulkString(id) => announcement(String::from_utf8(id.clone()).ok()?, &pair[1]),
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

    /// Announces this replica with its revocation watermark and the epoch it counts in;
    /// answers the store's epoch. The maintainer's probe: a failure here means Redis cannot
    /// be written.
    pub(crate) async fn announce(&self, epoch: Option<&str>, watermark: u64) -> Result<String, Fault> {
        let (zset, hash) = (self.replicas_key(), self.watermarks_key());
        let (epoch_key, counter) = (self.epoch_key(), self.sequence_key());
        let id = self.instance_id().to_string();
        let mine = epoch.unwrap_or("").to_string();
        let script = redis::Script::new(ANNOUNCE_SCRIPT);
        self.housekeeping(RedisOp::Announce, PROBE_FLOOR, |mut c| async move {
            let v: Value = script
                .key(&zset)
                .key(&hash)
                .key(&epoch_key)
                .key(&counter)
                .arg(&id)
                .arg(watermark)
                .arg(&mine)
                .arg(candidate_epoch())
                .invoke_async(&mut c)
                .await?;
            match v {
                Value::BulkString(b) if !b.is_empty() => {
                    String::from_utf8(b).map_err(|_| unexpected("an epoch that is not UTF-8"))
                }
                _ => Err(unexpected("announcement answered something other than an epoch")),
            }
        })
        .await
    }

    /// The replicas announced within [`RECENT`] (`authgate revoke`).
    pub(crate) async fn replicas(&self) -> Option<Vec<Announcement>> {
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

/// Each replica's verdict on record `seq` of `epoch`: applied once it announced that epoch
/// with a watermark that reached `seq`. A watermark of another epoch proves nothing (a
/// Redis that lost its data numbers from 1 again).
pub(crate) fn verdicts(replicas: &[Announcement], epoch: &str, seq: u64) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = replicas
        .iter()
        .map(|a| (a.id.clone(), a.epoch == epoch && a.watermark >= seq))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(id: &str, epoch: &str, watermark: u64) -> Announcement {
        Announcement {
            id: id.into(),
            epoch: epoch.into(),
            watermark,
        }
    }

    #[test]
    fn replica_lists_are_pairs_of_id_and_announcement_and_nothing_else() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let ok = Value::Array(vec![bulk("a-1"), bulk("e1 7"), bulk("b-2"), bulk(" 0")]);
        assert_eq!(replicas_reply(&ok), Some(vec![ann("a-1", "e1", 7), ann("b-2", "", 0)]));
        assert_eq!(replicas_reply(&Value::Array(vec![])), Some(vec![]));
        for bad in [
            Value::Array(vec![bulk("a-1")]),
            Value::Array(vec![bulk("a-1"), bulk("e1 x")]),
            Value::Array(vec![bulk("a-1"), bulk("7")]),
            Value::Array(vec![bulk("a-1"), Value::Int(7)]),
            Value::Array(vec![Value::Int(1), bulk("e1 1")]),
            Value::Array(vec![bulk("a"), bulk("e1 -1")]),
            Value::Okay,
            bulk("a 1"),
        ] {
            assert_eq!(replicas_reply(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_replica_has_applied_a_record_once_its_watermark_reaches_it_in_its_epoch() {
        let r = vec![ann("b", "e1", 4), ann("a", "e1", 5), ann("c", "e0", 57)];
        assert_eq!(
            verdicts(&r, "e1", 5),
            vec![
                ("a".to_string(), true),
                ("b".to_string(), false),
                ("c".to_string(), false)
            ]
        );
        assert!(verdicts(&r[..2], "e1", 4).iter().all(|(_, ok)| *ok));
        assert!(
            !verdicts(&r, "e2", 1).iter().any(|(_, ok)| *ok),
            "a watermark from before Redis lost its data counts for nothing"
        );
    }
}
