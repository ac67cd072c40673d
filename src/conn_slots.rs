//! The admin listener's connection bound (`[server] admin_max_connections`,
//! docs/reference.md#admin-listener): at most `max` connections are open at once.
//!
//! When every slot is taken, a new connection takes the slot of the *oldest connection that is
//! still waiting for a request head* (it is closed); only when every open connection is
//! in the middle of a request is the new one closed at accept. Plain refusal at accept would
//! let `max` trickling clients lock the orchestrator's probes and the scraper out until
//! `header_timeout` ends them, and then take the slots again; with this rule the bound on
//! file descriptors holds and a prompt client still gets its answer during a slowloris flood.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// A fixed number of connection slots.
pub(crate) struct ConnSlots {
    max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Open connections, oldest first.
    open: Vec<Entry>,
}

struct Entry {
    id: u64,
    shared: Arc<Shared>,
}

/// What a slot and the registry both see of one connection.
#[derive(Default)]
struct Shared {
    /// A request is being answered (from its complete head to its response's end).
    busy: AtomicBool,
    /// Set when another connection took this slot.
    evict: Notify,
}

/// One open connection's slot; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<ConnSlots>,
    id: u64,
    shared: Arc<Shared>,
}

impl ConnSlots {
    /// A registry of `max` slots (at least one).
    pub(crate) fn new(max: usize) -> Arc<ConnSlots> {
        Arc::new(ConnSlots {
            max: max.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a just-accepted connection: a free one, or the one of the oldest connection
    /// waiting for a request head (told to close through [`Slot::evicted`]). `None` when
    /// every open connection is busy: close the new one.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut st = self.state();
        if st.open.len() >= self.max {
            let oldest_waiting = st.open.iter().position(|e| !e.shared.busy.load(Ordering::Acquire))?;
            let gone = st.open.remove(oldest_waiting);
            gone.shared.evict.notify_one();
        }
        st.next_id += 1;
        let id = st.next_id;
        let shared = Arc::new(Shared::default());
        st.open.push(Entry {
            id,
            shared: shared.clone(),
        });
        Some(Slot {
            slots: self.clone(),
            id,
            shared,
        })
    }

    /// Open connections.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().open.len()
    }
}

impl Slot {
    /// A request head is complete: until [`Slot::idle`], this connection keeps its slot.
    pub(crate) fn busy(&self) {
        self.shared.busy.store(true, Ordering::Release);
    }

    /// The response is out: the connection waits for its next head and may give way.
    pub(crate) fn idle(&self) {
        self.shared.busy.store(false, Ordering::Release);
    }

    /// Resolves when a newer connection took this slot: close the connection.
    pub(crate) async fn evicted(&self) {
        self.shared.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.slots.state();
        if let Some(i) = st.open.iter().position(|e| e.id == self.id) {
            st.open.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn resolved(slot: &Slot) -> bool {
        let mut f = std::pin::pin!(slot.evicted());
        matches!(
            f.as_mut().poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(())
        )
    }

    #[test]
    fn a_full_registry_evicts_the_oldest_waiting_connection() {
        let slots = ConnSlots::new(3);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let c = slots.admit().unwrap();
        assert_eq!(slots.len(), 3);
        a.busy();
        // full: b is the oldest connection waiting for a head
        let d = slots.admit().unwrap();
        assert_eq!(slots.len(), 3);
        assert!(resolved(&b) && !resolved(&a) && !resolved(&c) && !resolved(&d));
        drop(b); // the evicted connection closes: nothing changes
        assert_eq!(slots.len(), 3);
        c.busy();
        d.busy();
        // every open connection is mid-request: the new one is refused
        assert!(slots.admit().is_none());
        a.idle();
        let e = slots.admit().unwrap();
        assert!(resolved(&a) && !resolved(&e));
        drop(a);
        drop(c);
        assert_eq!(slots.len(), 2);
        assert!(slots.admit().is_some(), "a freed slot is free");
    }
}
