//! Revocations across replicas, the Redis side (docs/reference.md#partial-failures): `authgate revoke`
//! stores a record in one hash, numbered by a counter and published in the same atomic
//! script; every replica applies published records at once through its subscription,
//! reads the whole hash when it (re)subscribes and every few seconds, and writes back
//! records Redis lost (a restart without persistence) from its [`RevocationView`].
//!
//! Numbers count within the store's *epoch*: a random value kept in `<prefix>epoch`, made
//! by whichever script first finds it missing. A Redis that lost its data has a new one, so
//! a number from before the loss is never mistaken for one after it.
//!
//! The subscription is checked with a ping every second: a subscription that went silent
//! (a dead path, or a demoted primary that no longer gets new records) is replaced, and the
//! whole set read again, within about a second plus the probe's time bound. A ping's answer
//! confirms the view only once the messages queued ahead of it are applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use redis::Value;
use serde::{Deserialize, Serialize};

use super::faults::{unexpected, Fault};
use super::view::{Published, Record, RecordKey, RevocationView};
use super::{Shared, BULK_FLOOR, PROBE_FLOOR};
use crate::metrics::{RedisConnection, RedisOp};
use crate::policy::principal::Principal;

/// Stores records: each sets its hash field only when the stored record is older (by
/// `at`), and then takes the next number from the counter and publishes itself, all in one
/// atomic script. Refuses to write anything past a deadline by Redis's own clock (a CLI
/// write that arrives after its command gave up must not land). `KEYS`: the hash, the
/// counter, the epoch; `ARGV`: a candidate epoch, the deadline (ms, 0 = none), the channel,
/// then (field, record JSON, its `at`) per record. Answers `{'late'}`, or `{epoch, {record
/// in force, its number (0: the stored one was newer and nothing changed), ...}}`. Checks
/// come before writes, so an error reply means nothing was stored.
const STORE_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[2])
if deadline > 0 and now > deadline then return {'late'} end
local e = redis.call('GET', KEYS[3])
if not e then e = ARGV[1]; redis.call('SET', KEYS[3], e) end
local out = {}
for i = 4, #ARGV, 3 do
  local field, record, at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local cur = redis.call('HGET', KEYS[1], field)
  local kept = false
  if cur then
    local ok, c = pcall(cjson.decode, cur)
    kept = ok and type(c) == 'table' and tonumber(c.at) ~= nil and tonumber(c.at) >= at
  end
  if kept then
    out[#out + 1] = cur
    out[#out + 1] = 0
  else
    local n = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], field, record)
    redis.call('PUBLISH', ARGV[3], '{"epoch":' .. cjson.encode(e) .. ',"seq":' .. string.format('%d', n) .. ',"record":' .. record .. '}')
    out[#out + 1] = record
    out[#out + 1] = n
  end
end
return {e, out}
"#;

/// The epoch (made when missing), the counter and every record, read at one instant:
/// `{epoch, counter, {field, record, ...}}`. `ARGV[1]`: a candidate epoch.
const READ_SCRIPT: &str = r#"
local e = redis.call('GET', KEYS[3])
if not e then e = ARGV[1]; redis.call('SET', KEYS[3], e) end
return {e, redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
"#;

/// How often the subscription is checked.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest wait before subscribing again after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Records per script when a replica writes back what Redis lost.
const WRITE_BACK_BATCH: usize = 500;

/// A published record, its epoch and its number.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    epoch: String,
    seq: u64,
    record: Record,
}

/// What storing records did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Each record's outcome in order: the record in force and its number (0: a newer record
    /// of that key was already stored and nothing changed), in `epoch`.
    InForce {
        epoch: String,
        outcomes: Vec<(Record, u64)>,
    },
    /// The deadline had passed by Redis's clock when the script ran: nothing was written.
    Late,
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// A fresh random epoch, offered to a script that may find the epoch key missing.
pub(crate) fn candidate_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// [`READ_SCRIPT`]'s answer: the epoch, the counter and the records that parse (a record
/// that does not is logged and skipped: it cannot be applied either way). `None` for
/// another shape.
fn read_reply(v: &Value) -> Option<(String, u64, Vec<Record>)> {
    let Value::Array(parts) = v else { return None };
    let [epoch, seq, Value::Array(pairs)] = parts.as_slice() else {
        return None;
    };
    let (epoch, seq) = (text(epoch)?.to_string(), text(seq)?.parse().ok()?);
    if pairs.len() % 2 != 0 || epoch.is_empty() {
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
    Some((epoch, seq, records))
}

/// [`STORE_SCRIPT`]'s answer for `count` records.
fn store_reply(v: &Value, count: usize) -> Option<Stored> {
    let Value::Array(parts) = v else { return None };
    match parts.as_slice() {
        [late] if text(late) == Some("late") => Some(Stored::Late),
        [epoch, Value::Array(out)] if out.len() == 2 * count => {
            let epoch = text(epoch).filter(|e| !e.is_empty())?.to_string();
            let outcomes = out
                .chunks(2)
                .map(|pair| match pair {
                    [record, Value::Int(seq)] => {
                        Some((serde_json::from_str(text(record)?).ok()?, u64::try_from(*seq).ok()?))
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Stored::InForce { epoch, outcomes })
        }
        _ => None,
    }
}

impl Shared {
    /// The hash of records, and the pub/sub channel.
    pub(crate) fn revocations_key(&self) -> String {
        self.key("revocations")
    }

    pub(crate) fn sequence_key(&self) -> String {
        self.key("revocations:seq")
    }

    /// Where Redis keeps its epoch.
    pub(crate) fn epoch_key(&self) -> String {
        self.key("epoch")
    }

    /// Stores `records` (see [`STORE_SCRIPT`]), refusing past `deadline_ms` of Redis's clock
    /// when it is not 0. An `Err` of [`Fault::Timeout`] or [`Fault::Io`] leaves the outcome
    /// unknown; any other `Err` means nothing was stored.
    pub(crate) async fn store(&self, records: &[Record], deadline_ms: u64) -> Result<Stored, Fault> {
        let (hash, counter, epoch) = (self.revocations_key(), self.sequence_key(), self.epoch_key());
        let script = redis::Script::new(STORE_SCRIPT);
        let mut invocation = script.key(&hash);
        invocation
            .key(&counter)
            .key(&epoch)
            .arg(candidate_epoch())
            .arg(deadline_ms)
            .arg(&hash);
        for r in records {
            let json = serde_json::to_string(r).map_err(|_| Fault::Other)?;
            invocation.arg(r.field()).arg(json).arg(r.at);
        }
        let count = records.len();
        self.housekeeping(RedisOp::Revocation, BULK_FLOOR, |mut c| async move {
            let v: Value = invocation.invoke_async(&mut c).await?;
            store_reply(&v, count).ok_or_else(|| unexpected("revocation store answered an unexpected shape"))
        })
        .await
    }

    /// The epoch, the counter and every record in the hash.
    async fn read_all(&self) -> Option<(String, u64, Vec<Record>)> {
        let (hash, counter, epoch) = (self.revocations_key(), self.sequence_key(), self.epoch_key());
        let script = redis::Script::new(READ_SCRIPT);
        self.bulk(RedisOp::Revocation, |mut c| async move {
            let v: Value = script
                .key(&hash)
                .key(&counter)
                .key(&epoch)
                .arg(candidate_epoch())
                .invoke_async(&mut c)
                .await?;
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
/// the watermark moves to the counter read with them, in their epoch); records Redis lacks
/// or holds older are written back. Confirms the view as of the moment the read was sent.
/// Returns the epoch it synced with; `None` when Redis could not be read or written.
pub(crate) async fn sync(shared: &Shared, view: &RevocationView) -> Option<String> {
    let sent = Instant::now();
    let (epoch, seq, remote) = shared.read_all().await?;
    let in_redis: HashMap<RecordKey, u64> = remote.iter().map(|r| (r.key(), r.at)).collect();
    view.apply_read(&epoch, seq, remote);
    view.confirm(sent);
    view.retry_writes();
    let lost: Vec<Record> = view
        .records()
        .into_iter()
        .filter(|r| in_redis.get(&r.key()).is_none_or(|at| *at < r.at))
        .collect();
    for batch in lost.chunks(WRITE_BACK_BATCH) {
        shared.store(batch, 0).await.ok()?;
    }
    if !lost.is_empty() {
        tracing::info!(records = lost.len(), "revocations written back to redis");
    }
    Some(epoch)
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
    const UNREAD: &str = "the revocation set could not be read";
    if sync(shared, view).await.is_none() {
        return UNREAD;
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
                let Some(first) = msg else { return "the subscription closed" };
                if !receive(view, Some(first), &mut stream) && sync(shared, view).await.is_none() {
                    return UNREAD;
                }
            }
            _ = tick.tick() => {
                let sent = Instant::now();
                if let Err((fault, why)) = shared.bounded(sink.ping::<Value>(), limit).await {
                    shared.subscription_failed(fault, &why);
                    return "a ping went unanswered";
                }
                // every message published before the ping's answer is queued by now: the
                // view is complete as of `sent` only once they are applied
                if !receive(view, None, &mut stream) && sync(shared, view).await.is_none() {
                    return UNREAD;
                }
                view.confirm(sent);
            }
            _ = epochs.changed() => {
                if *epochs.borrow_and_update() != epoch {
                    return "every connection was replaced";
                }
            }
        }
    }
}

/// Applies `first` and every message already queued behind it as one batch (one append,
/// one fsync); `false` when a record was missed (the caller reads the whole set).
fn receive(view: &RevocationView, first: Option<redis::Msg>, stream: &mut redis::aio::PubSubStream) -> bool {
    let queued = std::iter::from_fn(|| stream.next().now_or_never().flatten());
    let mut batch = Vec::new();
    let mut whole = true;
    for msg in first.into_iter().chain(queued) {
        let payload: Option<String> = msg.get_payload().ok();
        match payload.as_deref().map(serde_json::from_str::<Message>) {
            Some(Ok(m)) => batch.push(Published {
                epoch: m.epoch,
                seq: m.seq,
                record: m.record,
            }),
            _ => {
                tracing::warn!("unreadable revocation message; reading the whole set");
                whole = false;
            }
        }
    }
    if batch.is_empty() {
        return whole;
    }
    view.apply_published(batch) && whole
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_are_an_epoch_a_counter_and_field_record_pairs() {
        let r = Record::new(&Principal::partner("acme"), "k1", true);
        let json = serde_json::to_string(&r).unwrap();
        let v = Value::Array(vec![
            bulk("e1"),
            bulk("7"),
            Value::Array(vec![bulk(&r.field()), bulk(&json)]),
        ]);
        assert_eq!(read_reply(&v), Some(("e1".into(), 7, vec![r.clone()])));
        // a record that does not parse is skipped, the shape still holds
        let v = Value::Array(vec![bulk("e1"), bulk("7"), Value::Array(vec![bulk("f"), bulk("{")])]);
        assert_eq!(read_reply(&v), Some(("e1".into(), 7, vec![])));
        for bad in [
            Value::Array(vec![bulk("e1"), bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![bulk("e1"), bulk("1"), Value::Array(vec![bulk("f")])]),
            Value::Array(vec![bulk(""), bulk("1"), Value::Array(vec![])]),
            Value::Array(vec![bulk("1"), Value::Array(vec![])]),
            Value::Okay,
        ] {
            assert_eq!(read_reply(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stores_answer_late_or_an_epoch_and_one_outcome_per_record() {
        let r = Record::new(&Principal::partner("acme"), "k1", true);
        let json = serde_json::to_string(&r).unwrap();
        let stored = Value::Array(vec![bulk("e1"), Value::Array(vec![bulk(&json), Value::Int(3)])]);
        assert_eq!(
            store_reply(&stored, 1),
            Some(Stored::InForce {
                epoch: "e1".into(),
                outcomes: vec![(r, 3)]
            })
        );
        assert_eq!(store_reply(&stored, 2), None, "one outcome per record");
        assert_eq!(store_reply(&Value::Array(vec![bulk("late")]), 1), Some(Stored::Late));
        let not_int = Value::Array(vec![bulk("e1"), Value::Array(vec![bulk(&json), bulk("3")])]);
        assert_eq!(store_reply(&not_int, 1), None);
        assert_eq!(store_reply(&Value::Array(vec![bulk("early")]), 1), None);
    }
}
