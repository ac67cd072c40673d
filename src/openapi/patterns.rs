//! `pattern`s that need a backtracking engine, run on a budget (docs/reference.md, the
//! OpenAPI section: "cost bounds").
//!
//! Every validator runs `pattern` on the linear `regex` engine, which cannot run look-around
//! or back-references; a spec that uses them is refused at `check` unless the operation sets
//! `allow_backtracking_patterns = true`. Then its validators take `pattern` from here: a
//! pattern the linear engine runs stays linear, and the others run on `fancy-regex` with a
//! ladder of backtrack limits, each match charged the limit it ran under (an upper bound of
//! its cost) against a budget per request check. Once the budget is spent, every further
//! match is "could not be checked" and the whole check refuses the value, whatever the
//! schema around it says (`not: {pattern: ...}` must not turn "unchecked" into "valid").
//!
//! The budget lives in a thread-local for the duration of one check ([`with_budget`]):
//! `jsonschema` calls a keyword with the value only, and a check runs on one thread.

use std::cell::Cell;

use jsonschema::paths::Location;
use jsonschema::{Keyword, ValidationError};
use serde_json::{Map, Value};

use super::wording::{clip, MAX_QUOTE};

/// Backtracking steps one request's checks may spend on `pattern`s (the parameters and the
/// body each start from what the one before left).
pub(crate) const REQUEST_BUDGET: u64 = 1 << 20;

/// The limits a backtracking match is tried under, smallest first: most matches finish
/// under the first and are charged that little.
const LADDER: [usize; 3] = [256, 8_192, 262_144];

/// What the budget says after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent {
    /// Steps left for the next check of the same request.
    pub(crate) left: u64,
    /// Some match could not be run: the check must refuse.
    pub(crate) exhausted: bool,
}

thread_local! {
    static BUDGET: Cell<Spent> = const { Cell::new(Spent { left: 0, exhausted: false }) };
}

/// Runs one check with `left` backtracking steps; answers what it returned and what is left.
/// Outside such a check the budget is zero: a backtracking match is never run unbounded.
pub(crate) fn with_budget<R>(left: u64, check: impl FnOnce() -> R) -> (R, Spent) {
    let before = BUDGET.with(|b| b.replace(Spent { left, exhausted: false }));
    let out = check();
    let spent = BUDGET.with(|b| b.replace(before));
    (out, spent)
}

/// Takes `steps` from the budget; `false` (and the check marked exhausted) when too few are
/// left.
fn charge(steps: u64) -> bool {
    BUDGET.with(|b| {
        let mut s = b.get();
        let ok = s.left >= steps;
        if ok {
            s.left -= steps;
        } else {
            s.exhausted = true;
        }
        b.set(s);
        ok
    })
}

fn mark_exhausted() {
    BUDGET.with(|b| {
        let mut s = b.get();
        s.exhausted = true;
        b.set(s);
    });
}

/// The words of a value whose pattern could not be run.
pub(crate) const UNCHECKED: &str =
    "could not be checked: its pattern needs more backtracking than one request may spend";

/// How one `pattern` is matched.
enum Engine {
    /// The linear engine (no budget needed).
    Linear(regex::Regex),
    /// `fancy-regex` under each limit of [`LADDER`].
    Ladder(Vec<(u64, fancy_regex::Regex)>),
}

/// The `pattern` keyword of an operation that allows backtracking patterns.
struct BudgetedPattern {
    engine: Engine,
    source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Match,
    NoMatch,
    Unchecked,
}

impl BudgetedPattern {
    fn verdict(&self, text: &str) -> Verdict {
        let ladder = match &self.engine {
            Engine::Linear(re) => {
                return if re.is_match(text) {
                    Verdict::Match
                } else {
                    Verdict::NoMatch
                }
            }
            Engine::Ladder(ladder) => ladder,
        };
        for (limit, re) in ladder {
            if !charge(*limit) {
                return Verdict::Unchecked;
            }
            match re.is_match(text) {
                Ok(true) => return Verdict::Match,
                Ok(false) => return Verdict::NoMatch,
                Err(fancy_regex::Error::RuntimeError(_)) => {} // over this limit: the next
                Err(_) => break,
            }
        }
        mark_exhausted();
        Verdict::Unchecked
    }

    fn check<'i>(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        let Some(text) = instance.as_str() else { return Ok(()) };
        match self.verdict(text) {
            Verdict::Match => Ok(()),
            Verdict::NoMatch => Err(ValidationError::custom(format!(
                "must match the pattern {}",
                clip(&self.source, MAX_QUOTE)
            ))),
            Verdict::Unchecked => Err(ValidationError::custom(UNCHECKED)),
        }
    }
}

impl<'i> Keyword<'i> for BudgetedPattern {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        self.check(instance)
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.check(instance).is_ok()
    }
}

/// The factory `jsonschema` calls for each `pattern` of an operation that allows
/// backtracking patterns.
pub(crate) fn budgeted_pattern<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _at: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let source = value
        .as_str()
        .ok_or_else(|| ValidationError::custom("`pattern` must be a string"))?;
    let engine = compile(source).map_err(ValidationError::custom)?;
    Ok(Box::new(BudgetedPattern {
        engine,
        source: source.to_string(),
    }))
}

fn compile(source: &str) -> Result<Engine, String> {
    let invalid = || format!("{source:?} is not a valid regular expression");
    let translated = jsonschema_regex::to_rust_regex(source).map_err(|()| invalid())?;
    if let Ok(re) = regex::Regex::new(&translated) {
        return Ok(Engine::Linear(re));
    }
    let mut ladder = Vec::new();
    for limit in LADDER {
        let re = fancy_regex::RegexBuilder::new(&translated)
            .backtrack_limit(limit)
            .build()
            .map_err(|_| invalid())?;
        ladder.push((limit as u64, re));
    }
    Ok(Engine::Ladder(ladder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> BudgetedPattern {
        BudgetedPattern {
            engine: compile(p).unwrap(),
            source: p.to_string(),
        }
    }

    #[test]
    fn linear_patterns_need_no_budget() {
        let p = pattern("^[a-z]+$");
        assert!(matches!(p.engine, Engine::Linear(_)));
        // outside a check the budget is zero, and a linear pattern does not care
        assert_eq!(p.verdict("abc"), Verdict::Match);
        assert_eq!(p.verdict("ABC"), Verdict::NoMatch);
    }

    #[test]
    fn backtracking_patterns_are_charged_and_refuse_when_it_is_spent() {
        let p = pattern("^(?=.*\\d)[a-z0-9]+$");
        assert!(matches!(p.engine, Engine::Ladder(_)));
        // never run without a budget
        assert_eq!(p.verdict("abc1"), Verdict::Unchecked);
        let ((m, n), spent) = with_budget(REQUEST_BUDGET, || (p.verdict("abc1"), p.verdict("abc")));
        assert_eq!((m, n), (Verdict::Match, Verdict::NoMatch));
        assert_eq!(
            spent,
            Spent {
                left: REQUEST_BUDGET - 2 * 256,
                exhausted: false
            }
        );
        let (v, spent) = with_budget(100, || p.verdict("abc1"));
        assert_eq!((v, spent.exhausted), (Verdict::Unchecked, true));
        // the budget of one check does not leak into the next
        let (_, spent) = with_budget(1_000, || ());
        assert_eq!(
            spent,
            Spent {
                left: 1_000,
                exhausted: false
            }
        );
    }

    #[test]
    fn catastrophic_backtracking_is_cut_off() {
        let p = pattern("^(?=a)(a|a)*\\1?b$");
        let text = "a".repeat(40);
        let (v, spent) = with_budget(REQUEST_BUDGET, || p.verdict(&text));
        assert_eq!(v, Verdict::Unchecked);
        assert!(spent.exhausted);
        let (_, spent) = with_budget(REQUEST_BUDGET, || {
            (0..100)
                .map(|_| p.verdict(&text))
                .filter(|v| *v == Verdict::Unchecked)
                .count()
        });
        assert!(spent.left < LADDER[2] as u64);
    }

    #[test]
    fn keyword_errors_use_the_contract_words() {
        let p = pattern("^(?!x)[a-z]$");
        let (r, _) = with_budget(REQUEST_BUDGET, || {
            p.check(&Value::String("ab".into())).unwrap_err().to_string()
        });
        assert_eq!(r, "must match the pattern ^(?!x)[a-z]$");
        assert!(p.check(&Value::from(5)).is_ok());
        assert!(compile("(").is_err());
    }
}
