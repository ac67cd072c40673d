//! Step 6 across replicas: one atomic server-side script per request charges all of a
//! route's limits, with exactly the rules of docs/reference.md#pipeline step 6 and governor's GCRA
//! semantics (a burst of N refilled evenly over the minute), on Redis's clock (`TIME`), so
//! replicas with skewed clocks still share one bucket.

use std::fmt::Write as _;

use super::{Op, Shared};
use crate::config::settings::OnError;
use crate::policy::denial::Denial;
use crate::policy::principal::Principal;
use crate::policy::rate_limit::{whole_seconds_at_least_one, Headroom, OverrideBuckets, RateLimits};

/// GCRA over all of a request's limits, in order. `KEYS[i]` is limit i's bucket (its
/// theoretical arrival time, µs), `ARGV[i]` its per-minute figure. A limit that allows
/// stores its new TAT (expiring once the bucket would be full again) before the next limit
/// is looked at, so earlier limits keep their token; the first that denies returns, so
/// later limits are not charged. Returns `{1, remaining, per_minute}` of the tightest
/// limit, or `{0, index (1-based), wait_us}`.
pub(crate) const GCRA_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local best_rem, best_pm = -1, 0
for i = 1, #KEYS do
  local pm = tonumber(ARGV[i])
  local interval = 60000000 / pm
  local window = 60000000
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > window then
    return {0, i, math.ceil(new_tat - window - now)}
  end
  redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  local rem = math.floor((window - (new_tat - now)) / interval + 1e-9)
  if best_rem < 0 or rem < best_rem or (rem == best_rem and pm < best_pm) then
    best_rem = rem
    best_pm = pm
  end
end
return {1, best_rem, best_pm}
"#;

impl Shared {
    /// The bucket key of one limit for one principal. The per-minute figure is part of the
    /// key, so a changed per-partner override starts with a full bucket (docs/reference.md#reload) while
    /// unchanged ones keep their state; the limit name is length-prefixed so no two
    /// (limit, principal) pairs can spell the same key; the `{kind:id}` hash tag keeps one
    /// principal's buckets in one cluster slot.
    pub(crate) fn limit_key(&self, principal: &Principal, limit: &str, per_minute: u32) -> String {
        let mut rest = String::with_capacity(32 + limit.len() + principal.id().len());
        let _ = write!(
            rest,
            "rl:{{{}:{}}}:{per_minute}:{}:{limit}",
            principal.kind().as_str(),
            principal.id(),
            limit.len()
        );
        self.key(&rest)
    }

    /// Step 6 for `principal` on a route with `limits`. Falls back per `on_error` when
    /// Redis is unavailable: `local` charges this replica's own buckets, `deny` refuses with
    /// 503 `shared_state_unavailable`.
    pub(crate) async fn charge(
        &self,
        embedded: &RateLimits,
        overrides: &OverrideBuckets,
        limits: &[usize],
        principal: &Principal,
    ) -> Result<Option<Headroom>, Denial> {
        if limits.is_empty() {
            return Ok(None);
        }
        let mut invocation = self.limit_script.prepare_invoke();
        for &i in limits {
            let (name, per_minute) = embedded.plan(overrides, i, principal);
            invocation.key(self.limit_key(principal, name, per_minute));
            invocation.arg(per_minute);
        }
        let reply: Option<Vec<i64>> = self
            .call(Op::Limit, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await;
        match reply.as_deref() {
            Some([1, remaining, per_minute]) => Ok(Some(Headroom {
                per_minute: u32::try_from(*per_minute).unwrap_or(u32::MAX),
                remaining: u32::try_from(*remaining).unwrap_or(0),
            })),
            Some([0, index, wait_us]) => {
                let i = usize::try_from(*index - 1).ok().and_then(|k| limits.get(k)).copied();
                let Some(i) = i else {
                    return self.fallback(embedded, overrides, limits, principal);
                };
                let (name, per_minute) = embedded.plan(overrides, i, principal);
                let wait = std::time::Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0));
                Err(Denial::RateLimited {
                    limit: name.to_string(),
                    per_minute,
                    retry_after_secs: whole_seconds_at_least_one(wait),
                })
            }
            Some(other) => {
                tracing::warn!("rate-limit script answered {other:?}");
                self.fallback(embedded, overrides, limits, principal)
            }
            None => self.fallback(embedded, overrides, limits, principal),
        }
    }

    fn fallback(
        &self,
        embedded: &RateLimits,
        overrides: &OverrideBuckets,
        limits: &[usize],
        principal: &Principal,
    ) -> Result<Option<Headroom>, Denial> {
        match self.on_error() {
            OnError::Local => embedded.check(overrides, limits, principal),
            OnError::Deny => Err(Denial::SharedStateUnavailable),
        }
    }
}
