//! Named per-principal rate limits (docs/reference.md#limits, overrides, #pipeline step 6).
//!
//! Each limit is a governor GCRA: `per_minute = N` is a burst of N refilled evenly over the
//! minute. Principals without an override share one keyed limiter per limit (idle keys are
//! pruned by [`RateLimits::prune`]); a partner with an override gets its own bucket, built
//! with the policy snapshot and carried over a reload when its override is unchanged.
//! Decisions are atomic CAS operations in governor: exact under concurrency, no lock.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::denial::Denial;
use super::directory::Directory;
use super::principal::Principal;

/// One `[[limits]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitDef {
    pub name: Arc<str>,
    pub per_minute: NonZeroU32,
}

type Keyed<C> = RateLimiter<Principal, DefaultKeyedStateStore<Principal>, C, StateInformationMiddleware>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// A partner's own bucket for an overridden limit.
pub(crate) struct OverrideBucket<C: Clock> {
    limit: usize,
    per_minute: NonZeroU32,
    bucket: Direct<C>,
}

/// Per-partner override buckets, built for one policy snapshot.
pub struct OverrideBuckets<C: Clock = DefaultClock> {
    by_partner: HashMap<Arc<str>, Vec<Arc<OverrideBucket<C>>>>,
}

impl<C: Clock> Default for OverrideBuckets<C> {
    fn default() -> Self {
        OverrideBuckets {
            by_partner: HashMap::new(),
        }
    }
}

impl<C: Clock> OverrideBuckets<C> {
    fn get(&self, principal: &Principal, limit: usize) -> Option<&OverrideBucket<C>> {
        self.by_partner
            .get(principal.as_partner()?)?
            .iter()
            .find(|b| b.limit == limit)
            .map(|b| &**b)
    }

    /// Number of override buckets.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_partner.values().map(Vec::len).sum()
    }
}

/// The headroom reported on a passed request: the tightest limit it drew on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub(crate) per_minute: u32,
    pub(crate) remaining: u32,
}

/// All limits of the gateway, generic over the clock so tests run on a fake one.
pub struct RateLimits<C: Clock = DefaultClock> {
    clock: C,
    defs: Vec<LimitDef>,
    shared: Vec<Keyed<C>>,
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limiters for the configured limits.
    pub fn new(defs: Vec<LimitDef>, clock: C) -> Self {
        let shared = defs
            .iter()
            .map(|d| Keyed::<C>::new(Quota::per_minute(d.per_minute), Default::default(), clock.clone()))
            .collect();
        RateLimits { clock, defs, shared }
    }

    /// Builds the override buckets for a new policy, keeping each bucket whose partner and
    /// per-minute figure are unchanged (a changed override starts full, docs/reference.md#reload).
    pub fn build_overrides(&self, dir: &Directory, previous: Option<&OverrideBuckets<C>>) -> OverrideBuckets<C> {
        let mut by_partner = HashMap::new();
        for p in dir.partners() {
            let mut buckets = Vec::new();
            for o in &p.limit_overrides {
                let Some(per_minute) = NonZeroU32::new(o.per_minute) else {
                    continue;
                };
                let kept = previous
                    .and_then(|prev| prev.by_partner.get(&*p.id))
                    .and_then(|v| v.iter().find(|b| b.limit == o.limit && b.per_minute == per_minute))
                    .cloned();
                buckets.push(kept.unwrap_or_else(|| {
                    Arc::new(OverrideBucket {
                        limit: o.limit,
                        per_minute,
                        bucket: Direct::<C>::new(
                            Quota::per_minute(per_minute),
                            InMemoryState::default(),
                            self.clock.clone(),
                        ),
                    })
                }));
            }
            if !buckets.is_empty() {
                by_partner.insert(p.id.clone(), buckets);
            }
        }
        OverrideBuckets { by_partner }
    }

    /// Takes one token from each limit in `limits` (route order) for `principal`.
    /// The first limit that is exhausted denies, and later limits are not charged.
    pub fn check(
        &self,
        overrides: &OverrideBuckets<C>,
        limits: &[usize],
        principal: &Principal,
    ) -> Result<Option<Headroom>, Denial> {
        let mut tightest: Option<Headroom> = None;
        for &i in limits {
            let (per_minute, outcome) = match overrides.get(principal, i) {
                Some(b) => (b.per_minute, b.bucket.check()),
                None => (self.defs[i].per_minute, self.shared[i].check_key(principal)),
            };
            match outcome {
                Ok(snapshot) => {
                    let h = Headroom {
                        per_minute: per_minute.get(),
                        remaining: snapshot.remaining_burst_capacity(),
                    };
                    if tightest.is_none_or(|t| (h.remaining, h.per_minute) < (t.remaining, t.per_minute)) {
                        tightest = Some(h);
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    return Err(Denial::RateLimited {
                        limit: self.defs[i].name.to_string(),
                        per_minute: per_minute.get(),
                        retry_after_secs: whole_seconds_at_least_one(wait),
                    });
                }
            }
        }
        Ok(tightest)
    }

    /// The name and per-minute figure of limit `i` for `principal` (its override, if a
    /// partner has one): what a shared store keys and sizes the bucket by.
    pub(crate) fn plan(&self, overrides: &OverrideBuckets<C>, i: usize, principal: &Principal) -> (&str, u32) {
        let per_minute = match overrides.get(principal, i) {
            Some(b) => b.per_minute,
            None => self.defs[i].per_minute,
        };
        (&self.defs[i].name, per_minute.get())
    }

    /// Drops shared-limiter state that is indistinguishable from a full bucket, bounding
    /// memory by the principals active within the last minute.
    pub(crate) fn prune(&self) {
        for l in &self.shared {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Principals tracked across shared limiters.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shared.iter().map(|l| l.len()).sum()
    }
}

/// `Retry-After`: whole seconds, rounded up, at least 1 (docs/reference.md#responses).
pub(crate) fn whole_seconds_at_least_one(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::directory::tests::partner;
    use crate::policy::directory::LimitOverride;
    use governor::clock::FakeRelativeClock;

    fn limits(clock: &FakeRelativeClock) -> RateLimits<FakeRelativeClock> {
        RateLimits::new(
            vec![
                LimitDef {
                    name: "partner".into(),
                    per_minute: NonZeroU32::new(100).unwrap(),
                },
                LimitDef {
                    name: "login-links".into(),
                    per_minute: NonZeroU32::new(30).unwrap(),
                },
            ],
            clock.clone(),
        )
    }

    fn who(s: &str) -> Principal {
        Principal::partner(s)
    }

    #[test]
    fn burst_then_even_refill() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let none = OverrideBuckets::default();
        let p = who("acme");
        for i in 0..100 {
            let h = rl.check(&none, &[0], &p).unwrap().unwrap();
            assert_eq!(h.remaining, 99 - i);
        }
        let denied = rl.check(&none, &[0], &p).unwrap_err();
        assert_eq!(
            denied,
            Denial::RateLimited {
                limit: "partner".into(),
                per_minute: 100,
                retry_after_secs: 1
            }
        );
        // one token every 0.6 s
        clock.advance(Duration::from_millis(599));
        assert!(rl.check(&none, &[0], &p).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(rl.check(&none, &[0], &p).is_ok());
        assert!(rl.check(&none, &[0], &p).is_err());
        // a full minute refills the whole burst
        clock.advance(Duration::from_secs(60));
        for _ in 0..100 {
            assert!(rl.check(&none, &[0], &p).is_ok());
        }
        assert!(rl.check(&none, &[0], &p).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let none = OverrideBuckets::default();
        let p = who("acme");
        for _ in 0..30 {
            rl.check(&none, &[1], &p).unwrap();
        }
        // 30/min: next token in 2 s
        match rl.check(&none, &[1], &p).unwrap_err() {
            Denial::RateLimited {
                retry_after_secs,
                per_minute,
                ..
            } => assert_eq!((retry_after_secs, per_minute), (2, 30)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn principals_are_independent_and_limits_chain() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let none = OverrideBuckets::default();
        let a = who("a");
        let b = who("b");
        for _ in 0..30 {
            rl.check(&none, &[0, 1], &a).unwrap();
        }
        // login-links exhausted for a; partner still has 70 for a
        assert!(matches!(
            rl.check(&none, &[0, 1], &a),
            Err(Denial::RateLimited { per_minute: 30, .. })
        ));
        assert_eq!(rl.check(&none, &[0], &a).unwrap().unwrap().remaining, 68);
        assert!(rl.check(&none, &[0, 1], &b).is_ok());
    }

    #[test]
    fn a_denied_request_takes_nothing_from_later_limits() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let none = OverrideBuckets::default();
        let a = who("a");
        for _ in 0..30 {
            rl.check(&none, &[1], &a).unwrap();
        }
        for _ in 0..10 {
            assert!(rl.check(&none, &[1, 0], &a).is_err());
        }
        assert_eq!(rl.check(&none, &[0], &a).unwrap().unwrap().remaining, 99);
    }

    #[test]
    fn tightest_headroom_is_reported() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let none = OverrideBuckets::default();
        let h = rl.check(&none, &[0, 1], &who("a")).unwrap().unwrap();
        assert_eq!(
            h,
            Headroom {
                per_minute: 30,
                remaining: 29
            }
        );
        assert_eq!(rl.check(&none, &[], &who("a")).unwrap(), None);
    }

    #[test]
    fn overrides_replace_the_default_and_survive_an_unchanged_reload() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let mut small = partner("small");
        small.limit_overrides = vec![LimitOverride {
            limit: 0,
            per_minute: 5,
        }];
        let dir = Directory::new(vec![small.clone(), partner("plain")], vec![], vec![]);
        let o1 = rl.build_overrides(&dir, None);
        assert_eq!(o1.len(), 1);
        let p = who("small");
        for _ in 0..5 {
            rl.check(&o1, &[0], &p).unwrap();
        }
        assert!(rl.check(&o1, &[0], &p).is_err());
        // reload with the same override: the bucket (and its exhaustion) is kept
        let o2 = rl.build_overrides(&dir, Some(&o1));
        assert!(rl.check(&o2, &[0], &p).is_err());
        // reload with a changed override: a fresh, full bucket
        small.limit_overrides = vec![LimitOverride {
            limit: 0,
            per_minute: 7,
        }];
        let dir3 = Directory::new(vec![small], vec![], vec![]);
        let o3 = rl.build_overrides(&dir3, Some(&o2));
        for _ in 0..7 {
            rl.check(&o3, &[0], &p).unwrap();
        }
        assert!(matches!(
            rl.check(&o3, &[0], &p),
            Err(Denial::RateLimited { per_minute: 7, .. })
        ));
    }

    #[test]
    fn exact_under_concurrency() {
        // 150 requests from 6 threads within one refill interval: exactly 100 pass.
        let clock = FakeRelativeClock::default();
        let rl = Arc::new(limits(&clock));
        let none = Arc::new(OverrideBuckets::default());
        let p = who("acme");
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (rl, none, p) = (rl.clone(), none.clone(), p.clone());
                std::thread::spawn(move || (0..25).filter(|_| rl.check(&none, &[0], &p).is_ok()).count())
            })
            .collect();
        let passed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(passed, 100);
    }

    #[test]
    fn a_partner_and_an_org_with_one_id_never_share_a_bucket() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let mut small = partner("same");
        small.limit_overrides = vec![LimitOverride {
            limit: 1,
            per_minute: 2,
        }];
        let dir = Directory::new(vec![small], vec![], vec![]);
        let overrides = rl.build_overrides(&dir, None);
        let p = Principal::partner("same");
        let o = Principal::org("same");
        for _ in 0..30 {
            rl.check(&overrides, &[0], &p).unwrap();
        }
        // the partner's spending leaves the org's bucket full
        assert_eq!(rl.check(&overrides, &[0], &o).unwrap().unwrap().remaining, 99);
        // and the partner's override does not apply to the org
        for _ in 0..2 {
            rl.check(&overrides, &[1], &p).unwrap();
        }
        assert!(rl.check(&overrides, &[1], &p).is_err());
        assert_eq!(rl.check(&overrides, &[1], &o).unwrap().unwrap().per_minute, 30);
    }

    #[test]
    fn pruning_forgets_idle_principals() {
        let clock = FakeRelativeClock::default();
        let rl = limits(&clock);
        let none = OverrideBuckets::default();
        for i in 0..1000 {
            rl.check(&none, &[0], &who(&format!("p{i}"))).unwrap();
        }
        assert_eq!(rl.tracked(), 1000);
        clock.advance(Duration::from_secs(61));
        rl.prune();
        assert_eq!(rl.tracked(), 0);
    }
}
