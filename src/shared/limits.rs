//! Step 6 across replicas: one atomic server-side script per request charges all of a
//! route's limits, with exactly the rules of docs/reference.md#pipeline step 6 and governor's GCRA
//! semantics (a burst of N refilled evenly over the minute), on Redis's clock (`TIME`), so
//! replicas with skewed clocks still share one bucket.

use super::faults::{bad_value, unexpected};
use super::Shared;
use crate::config::settings::OnError;
use crate::metrics::RedisOp;
use crate::policy::denial::Denial;
use crate::policy::pipeline::{Embedded, SharedState};
use crate::policy::principal::Principal;
use crate::policy::rate_limit::{whole_seconds_at_least_one, Headroom, OverrideBuckets};

/// GCRA over all of a request's limits, in order. `KEYS[i]` is limit i's bucket (its
/// theoretical arrival time, µs), `ARGV[i]` its per-minute figure. Every bucket is read and
/// checked first: one that holds anything but a number (a foreign value SET by another
/// program sharing the Redis, or another type) answers `"2 <index, 1-based> 0"` and charges
/// nothing, so that one principal falls back per `on_error` while every other keeps using
/// Redis. Then a limit that allows stores its new TAT (expiring once the bucket would be full
/// again) before the next limit is looked at, so earlier limits keep their token; the first
/// that denies returns, so later limits are not charged. Answers `"1 <remaining>
/// <per_minute>"` for the tightest limit, or `"0 <index, 1-based> <wait_us>"`: one bulk
/// string rather than an array, because redis-rs parses a three-integer array with several
/// times the instructions (measured with callgrind), on every request.
pub(crate) const GCRA_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i = 1, #KEYS do
  local raw = redis.pcall('GET', KEYS[i])
  local tat = now
  if raw then
    tat = type(raw) == 'string' and tonumber(raw) or nil
    if tat == nil or tat ~= tat or tat == math.huge or tat == -math.huge then
      return string.format('2 %d 0', i)
    end
  end
  tats[i] = tat
end
local best_rem, best_pm = -1, 0
for i = 1, #KEYS do
  local pm = tonumber(ARGV[i])
  local interval = 60000000 / pm
  local window = 60000000
  local tat = tats[i]
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > window then
    return string.format('0 %d %.0f', i, math.ceil(new_tat - window - now))
  end
  redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  local rem = math.floor((window - (new_tat - now)) / interval + 1e-9)
  if best_rem < 0 or rem < best_rem or (rem == best_rem and pm < best_pm) then
    best_rem = rem
    best_pm = pm
  end
end
return string.format('1 %.0f %.0f', best_rem, best_pm)
"#;

/// The bucket key of one limit for one principal,
/// `<prefix>rl:{<kind>:<id>}:<per_minute>:<len>:<limit>`. The per-minute figure is part of
/// the key, so a changed per-partner override starts with a full bucket
/// (docs/reference.md#reload) while unchanged ones keep their state; the limit name is
/// length-prefixed so no two (limit, principal) pairs can spell the same key; the
/// `{kind:id}` hash tag keeps one principal's buckets in one cluster slot. Built by hand:
/// it runs once per limit on every request, and `format!` costs several times more.
fn limit_key(prefix: &str, principal: &Principal, limit: &str, per_minute: u32) -> String {
    let (kind, id) = (principal.kind().as_str(), principal.id());
    let (mut pm, mut len) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (pm, len) = (pm.format(per_minute), len.format(limit.len()));
    let mut key = String::with_capacity(prefix.len() + kind.len() + id.len() + limit.len() + 32);
    for part in [prefix, "rl:{", kind, ":", id, "}:", pm, ":", len, ":", limit] {
        key.push_str(part);
    }
    key
}

/// The three integers of [`GCRA_SCRIPT`]'s answer; `None` for anything else.
fn script_reply(reply: &redis::Value) -> Option<[i64; 3]> {
    let redis::Value::BulkString(bytes) = reply else {
        return None;
    };
    let mut fields = bytes.split(|&b| b == b' ').map(integer);
    let answer = [fields.next()??, fields.next()??, fields.next()??];
    fields.next().is_none().then_some(answer)
}

/// A decimal integer with an optional `-`, by hand (`str::parse` costs more on this path).
fn integer(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

impl Shared {
    /// Step 6 for `principal` on a route with `limits`. Falls back per `on_error` when
    /// Redis is unavailable, or when one of this principal's buckets holds a bad value:
    /// `local` charges this replica's own buckets (the embedded store, the same one a
    /// gateway without `[redis]` runs), `deny` refuses with 503 `shared_state_unavailable`.
    pub(crate) async fn charge(
        &self,
        embedded: &Embedded<'_>,
        overrides: &OverrideBuckets,
        limits: &[usize],
        principal: &Principal,
    ) -> Result<Option<Headroom>, Denial> {
        if limits.is_empty() {
            return Ok(None);
        }
        let mut invocation = self.limit_script.prepare_invoke();
        for &i in limits {
            let (name, per_minute) = embedded.limits.plan(overrides, i, principal);
            invocation.key(limit_key(self.key_prefix(), principal, name, per_minute));
            invocation.arg(per_minute);
        }
        let count = limits.len() as i64;
        let key_of = |index: i64| {
            let i = usize::try_from(index - 1).ok().and_then(|k| limits.get(k)).copied()?;
            let (name, per_minute) = embedded.limits.plan(overrides, i, principal);
            Some(limit_key(self.key_prefix(), principal, name, per_minute))
        };
        let reply = self
            .call(RedisOp::Limit, |mut c| async move {
                let v: redis::Value = invocation.invoke_async(&mut c).await?;
                match script_reply(&v) {
                    Some(answer @ [1, _, _]) => Ok(answer),
                    Some(answer @ [0, index, _]) if (1..=count).contains(&index) => Ok(answer),
                    Some([2, index, _]) if (1..=count).contains(&index) => {
                        Err(bad_value(&key_of(index).unwrap_or_default()))
                    }
                    _ => Err(unexpected("the rate-limit script answered an unexpected shape")),
                }
            })
            .await;
        match reply {
            Some([1, remaining, per_minute]) => {
                return Ok(Some(Headroom {
                    per_minute: u32::try_from(per_minute).unwrap_or(u32::MAX),
                    remaining: u32::try_from(remaining).unwrap_or(0),
                }));
            }
            Some([_, index, wait_us]) => {
                let i = usize::try_from(index - 1).ok().and_then(|k| limits.get(k)).copied();
                if let Some(i) = i {
                    let (name, per_minute) = embedded.limits.plan(overrides, i, principal);
                    let wait = std::time::Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
                    return Err(Denial::RateLimited {
                        limit: name.to_string(),
                        per_minute,
                        retry_after_secs: whole_seconds_at_least_one(wait),
                    });
                }
            }
            None => {}
        }
        // Redis unavailable, a bad value in one of this principal's buckets (or an answer
        // naming no limit of this route): per `on_error`.
        match self.on_error() {
            OnError::Local => embedded.charge(overrides, limits, principal).await,
            OnError::Deny => Err(Denial::SharedStateUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_are_three_integers_and_nothing_else() {
        let bulk = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(script_reply(&bulk("1 29 30")), Some([1, 29, 30]));
        assert_eq!(script_reply(&bulk("0 2 1999999")), Some([0, 2, 1_999_999]));
        assert_eq!(script_reply(&bulk("1 -0 -5")), Some([1, 0, -5]));
        assert_eq!(script_reply(&bulk("2 1 0")), Some([2, 1, 0]), "a bad value in bucket 1");
        for bad in [
            "",
            "1 2",
            "1 2 3 4",
            "1  2 3",
            "1 2 x",
            "1 2 3.5",
            "1 2 -",
            "1 2 +3",
            "1 2 1234567890123456789",
        ] {
            assert_eq!(script_reply(&bulk(bad)), None, "{bad:?}");
        }
        assert_eq!(script_reply(&redis::Value::Int(1)), None);
    }

    #[test]
    fn limit_keys_spell_prefix_principal_rate_and_length_prefixed_name() {
        let acme = Principal::partner("acme");
        assert_eq!(
            limit_key("ag:", &acme, "partner", 100),
            "ag:rl:{partner:acme}:100:7:partner"
        );
        assert_eq!(
            limit_key("", &Principal::org("o-1"), "login_links", 30),
            "rl:{org:o-1}:30:11:login_links"
        );
        // the length prefix keeps a name that contains ':' from spelling another key
        assert_ne!(limit_key("", &acme, "a:1:b", 5), limit_key("", &acme, "a", 5));
    }
}
