//! Holding a response on work it must not complete before, without holding the worker.
//!
//! A create response that taught an org must not reach the client before the org is in the
//! journal and in Redis (docs/reference.md#learned-orgs). pingora's body phase is
//! synchronous, so it cannot await that work; what it can do is ask pingora to pause before
//! the last chunk is written (`response_body_filter` returns a delay, which pingora sleeps
//! asynchronously). [`ResponseHold::hold`] parks the work on the connection and asks for a
//! 1 ms pause; the HTTP/1 connection loop ([`super::head_deadline`]) polls the parked work
//! first and does not poll the request again until the work is done. So the response waits
//! exactly as long as the write, and the worker serves other connections meanwhile.
//!
//! HTTP/2 streams run in pingora's own session loop, which this does not reach: there the
//! proxy pauses for the write's time bound instead ([`crate::gateway::Gateway::learn_pause`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

/// What pingora is asked to sleep before the held chunk: long enough that its timer is not
/// already due when first polled (tokio rounds a deadline up to the next millisecond tick),
/// so the request's future always yields there.
const PAUSE: Duration = Duration::from_millis(1);

/// Work parked on one HTTP/1 connection.
type Parked = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's hold (see the module doc). Polled on every poll of every HTTP/1
/// request, so the common case (nothing parked) is one atomic load, no lock.
#[derive(Default)]
pub(crate) struct ResponseHold {
    held: AtomicBool,
    parked: Mutex<Option<Parked>>,
}

impl ResponseHold {
    /// Parks `until` on the connection; returns the pause to hand pingora from
    /// `response_body_filter`.
    pub(crate) fn hold(&self, until: impl Future<Output = ()> + Send + 'static) -> Duration {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::pin(until));
        self.held.store(true, Ordering::Release);
        PAUSE
    }

    /// `Ready` when nothing is parked (any more); `Pending` while the parked work runs, with
    /// `cx` woken when it ends.
    pub(crate) fn poll_released(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.held.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let Some(work) = parked.as_mut() else {
            return Poll::Ready(());
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *parked = None;
                self.held.store(false, Ordering::Release);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::Waker;

    #[test]
    fn a_hold_is_pending_until_its_work_ends_and_wakes_the_connection() {
        let hold = ResponseHold::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(hold.poll_released(&mut cx).is_ready(), "nothing parked");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        let pause = hold.hold(async move {
            let _ = (&mut rx).await;
            seen.store(true, Ordering::Release);
        });
        assert!(pause >= Duration::from_millis(1));
        assert!(hold.poll_released(&mut cx).is_pending());
        assert!(hold.poll_released(&mut cx).is_pending(), "still held");
        tx.send(()).unwrap();
        assert!(hold.poll_released(&mut cx).is_ready());
        assert!(done.load(Ordering::Acquire));
        assert!(hold.poll_released(&mut cx).is_ready(), "released for good");
    }
}
