//! Revocations across replicas, the Redis side (docs/reference.md#redis): `authgate revoke`
//! stores a record in one hash, numbered by a counter in the same atomic script, and
//! publishes it; every replica applies published records at once through its subscription,
//! reads the whole hash when it (re)subscribes and every few seconds, and writes back
//! records Redis lost (a restart without persistence) from its [`RevocationView`].
//!
//! The subscription is checked with a ping every second: a subscription that went silent
//! (a dead path, or a demoted primary that no longer gets new records) is replaced, and the
//! whole set read again, within about a second plus the probe's time bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use redis::Value;
use serde::{Deserialize, Serialize};

use super::faults::unexpected;
use super::view::{Record, RecordKey, RevocationView};
use super::{Shared, PROBE_FLOOR};
use crate::metrics::{RedisConnection, RedisOp};
use crate::policy::principal::Principal;

/// Sets a hash field only when the stored record is older (by `at`), numbering it from the
/// counter; answers `{record in force, its number}` (number 0: the stored record was newer
/// and nothing changed). `KEYS`: the hash, the counter; `ARGV`: field, record JSON, its `at`.
const STORE_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and tonumber(c.at) and tonumber(c.at) >= tonumber(ARGV[3]) then
    return {cur, 0}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {ARGV[2], redis.call('INCR', KEYS[2])}
"#;

/// The counter and every record, read at one instant: `{counter, {field, record, ...}}`.
const READ_SCRIPT: &str = r#"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
"#;

/// How often the subscription is checked.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest wait before subscribing again after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A published record and its number.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    seq: u64,
    record: Record,
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// [`READ_SCRIPT`]'s answer: the counter and the records that parse (a record that does
/// not is logged and skipped: it cannot be applied either way). `None` for another shape.
fn read_reply(v: &Value) -> Option<(u64, Vec<Record>)> {
    let Value::Array(parts) = v else { return None };
    let [seq, Value::Array(pairs)] = parts.as_slice() else {
        return None;
    };
    let seq = text(seq)?.parse().ok()?;
    if pairs.len() % 2 != 0 {
        return None;
    }
    let mut records = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        let (_field, value) = (text(&pair[0])?, text(&pair[1])?);
        match serde_json::from_str(value) {
            Ok(r) => records.push(r),
            Err(_) => tracing::warn!("skipping an unreadable revocation record in redis"),
        }
    }
    Some((seq, records))
}

/// [`STORE_SCRIPT`]'s answer.
fn store_reply(v: &Value) -> Option<(Record, u64)> {
    let Value::Array(parts) = v else { return None };
    let [record, Value::Int(seq)] = parts.as_slice() else {
        return None;
    };
    Some((serde_json::from_str(text(record)?).ok()?, u64::try_from(*seq).ok()?))
}

impl Shared {
    /// The hash of records, and the pub/sub channel.
    pub(crate) fn revocations_key(&self) -> String {
        self.key("revocations")
    }

    fn sequence_key(&self) -> String {
        self.key("revocations:seq")
    }

    /// Stores `r` unless the hash holds a newer record of its key, and publishes it when it
    /// changed something. Returns the record in force and its number (0: nothing changed).
    pub(crate) async fn store(&self, r: &Record) -> Option<(Record, u64)> {
        let (hash, counter) = (self.revocations_key(), self.sequence_key());
        let (field, value) = (r.field(), serde_json::to_string(r).ok()?);
        let at = r.at;
        let script = redis::Script::new(STORE_SCRIPT);
        let (stored, seq) = self
            .bulk(RedisOp::Revocation, |mut c| async move {
                let v: Value = script
                    .key(&hash)
                    .key(&counter)
                    .arg(&field)
                    .arg(&value)
                    .arg(at)
                    .invoke_async(&mut c)
                    .await?;
                store_reply(&v).ok_or_else(|| unexpected("revocation store answered an unexpected shape"))
            })
            .await?;
        let message = Message {
            seq,
            record: stored.clone(),
        };
        if seq > 0 && self.publish(&message).await.is_none() {
            // stored all the same: replicas apply it at their next full read (a gap in the
            // numbers they see triggers one)
            tracing::warn!("revocation record {seq} stored but not published");
        }
        Some((stored, seq))
    }

    /// Tells every subscribed replica.
    async fn publish(&self, m: &Message) -> Option<()> {
        let channel = self.revocations_key();
        let message = serde_json::to_string(m).ok()?;
        self.bulk(RedisOp::Revocation, |mut c| async move {
            let v: Value = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&message)
                .query_async(&mut c)
                .await?;
            match v {
                Value::Int(_) => Ok(()),
                _ => Err(unexpected("PUBLISH answered something other than an integer")),
            }
        })
        .await
    }

    /// The counter and every record in the hash.
    async fn read_all(&self) -> Option<(u64, Vec<Record>)> {
        let (hash, counter) = (self.revocations_key(), self.sequence_key());
        let script = redis::Script::new(READ_SCRIPT);
        self.bulk(RedisOp::Revocation, |mut c| async move {
            let v: Value = script.key(&hash).key(&counter).invoke_async(&mut c).await?;
            read_reply(&v).ok_or_else(|| unexpected("revocation set of an unexpected shape"))
        })
        .await
    }

    /// The current record of one key, if any.
    pub(crate) async fn current(&self, principal: &Principal, key_id: &str) -> Option<Option<Record>> {
        let key = self.revocations_key();
        let field = Record::new(principal, key_id, true).field();
        self.bulk(RedisOp::Revocation, |mut c| async move {
            let v: Value = redis::cmd("HGET").arg(&key).arg(&field).query_async(&mut c).await?;
            match v {
                Value::Nil => Ok(None),
                Value::BulkString(b) => serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|_| unexpected("unreadable revocation record")),
                _ => Err(unexpected("HGET answered something other than a string")),
            }
        })
        .await
    }
}

/// Both ways between the hash and this replica: every record in Redis is applied here (and
/// the watermark moves to the counter read with them); records Redis lacks or holds older
/// are written back. Confirms the view as of the moment the read was sent. `false` when
/// Redis could not be read or written.
pub(crate) async fn sync(shared: &Shared, view: &RevocationView) -> bool {
    let sent = Instant::now();
    let Some((seq, remote)) = shared.read_all().await else {
        return false;
    };
    let mut in_redis: HashMap<RecordKey, u64> = HashMap::new();
    for r in remote {
        in_redis.insert(r.key(), r.at);
        view.apply(r);
    }
    view.settle(seq);
    view.confirm(sent);
    view.keep_file();
    let mut written_back = 0usize;
    for r in view.records() {
        if in_redis.get(&r.key()).is_none_or(|at| *at < r.at) {
            if shared.store(&r).await.is_none() {
                return false;
            }
            written_back += 1;
        }
    }
    if written_back > 0 {
        tracing::info!(records = written_back, "revocations written back to redis");
    }
    true
}

/// Follows the revocation channel for the life of the process: subscribes, reads the whole
/// set (so nothing published in between is missed), then applies each message and pings
/// every second. A subscription that fails a ping, closes, or outlives a replacement of
/// every connection is replaced.
pub(crate) async fn follow(shared: Arc<Shared>, view: Arc<RevocationView>) {
    let channel = shared.revocations_key();
    let mut backoff = Duration::from_millis(100);
    loop {
        let epoch = shared.epoch();
        if let Ok(pubsub) = shared.subscription(&channel).await {
            let began = Instant::now();
            let why = session(&shared, &view, pubsub, epoch).await;
            shared.metrics.replaced(RedisConnection::Subscription);
            tracing::info!("revocation subscription replaced: {why}");
            if began.elapsed() > PING_EVERY * 2 {
                backoff = Duration::from_millis(100);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One subscription's life; returns why it ended.
async fn session(shared: &Shared, view: &RevocationView, pubsub: redis::aio::PubSub, epoch: u64) -> &'static str {
    if !sync(shared, view).await {
        return "the revocation set could not be read";
    }
    let (mut sink, mut stream) = pubsub.split();
    let mut epochs = shared.epochs.subscribe();
    if *epochs.borrow_and_update() != epoch {
        return "every connection was replaced";
    }
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = shared.timeout().max(PROBE_FLOOR);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "the subscription closed" };
                if !receive(view, &msg) && !sync(shared, view).await {
                    return "the revocation set could not be read";
                }
            }
            _ = tick.tick() => {
                let sent = Instant::now();
                match shared.bounded(sink.ping::<Value>(), limit).await {
                    Ok(_) => view.confirm(sent),
                    Err((fault, why)) => {
                        shared.subscription_failed(fault, &why);
                        return "a ping went unanswered";
                    }
                }
            }
            _ = epochs.changed() => {
                if *epochs.borrow_and_update() != epoch {
                    return "every connection was replaced";
                }
            }
        }
    }
}

/// Applies one published message; `false` when records before it were missed (the caller
/// reads the whole set).
fn receive(view: &RevocationView, msg: &redis::Msg) -> bool {
    let payload: Option<String> = msg.get_payload().ok();
    match payload.as_deref().map(serde_json::from_str::<Message>) {
        Some(Ok(m)) => {
            view.apply(m.record);
            view.advance(m.seq)
        }
        _ => {
            tracing::warn!("unreadable revocation message; reading the whole set");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_are_a_counter_and_field_record_pairs() {
        let r = Record::new(&Principal::partner("acme"), "k1", true);
        let json = serde_json::to_string(&r).unwrap();
        let v = Value::Array(vec![bulk("7"), Value::Array(vec![bulk(&r.field()), bulk(&json)])]);
        assert_eq!(read_reply(&v), Some((7, vec![r.clone()])));
        // a record that does not parse is skipped, the shape still holds
        let v = Value::Array(vec![bulk("7"), Value::Array(vec![bulk("f"), bulk("{")])]);
        assert_eq!(read_reply(&v), Some((7, vec![])));
        for bad in [
            Value::Array(vec![bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![bulk("1"), Value::Array(vec![bulk("f")])]),
            Value::Array(vec![Value::Int(1), Value::Array(vec![])]),
            Value::Array(vec![bulk("1")]),
            Value::Okay,
        ] {
            assert_eq!(read_reply(&bad), None, "{bad:?}");
        }
        let stored = Value::Array(vec![bulk(&json), Value::Int(3)]);
        assert_eq!(store_reply(&stored), Some((r, 3)));
        assert_eq!(store_reply(&Value::Array(vec![bulk(&json), bulk("3")])), None);
    }
}
