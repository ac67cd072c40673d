//! `selection = "least_conn"` as a pingora [`BackendSelection`]: pingora-load-balancing
//! 0.9 ships round robin, random, FNV and Ketama but not least connections (its
//! `selection/mod.rs` has `TODO: least conn`). This plugs the one missing ordering into
//! pingora's own [`LoadBalancer`](pingora::lb::LoadBalancer), which keeps doing the rest:
//! health, discovery, the unique-candidate walk that skips unhealthy backends.
//!
//! "Connections" are requests this gateway has in flight to a backend (a streaming
//! response counts until it ends): the proxy takes a [`LoadGuard`] for the backend it
//! picked and the guard gives the slot back when the request is over.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;

/// In-flight requests per backend of one cluster, in configured order.
#[derive(Debug)]
pub(crate) struct Loads {
    addrs: Box<[SocketAddr]>,
    counts: Box<[AtomicUsize]>,
}

impl Loads {
    /// Counters at zero for these backends.
    pub(crate) fn new(addrs: &[SocketAddr]) -> Arc<Loads> {
        Arc::new(Loads {
            addrs: addrs.into(),
            counts: addrs.iter().map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    fn load_of(&self, index: Option<usize>) -> usize {
        index
            .and_then(|i| self.counts.get(i))
            .map_or(usize::MAX, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one more request in flight to backend `index` until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>, index: usize) -> LoadGuard {
        if let Some(c) = self.counts.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        LoadGuard {
            loads: self.clone(),
            index,
        }
    }
}

/// One request in flight to one backend.
#[derive(Debug)]
pub(crate) struct LoadGuard {
    loads: Arc<Loads>,
    index: usize,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if let Some(c) = self.loads.counts.get(self.index) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Least-connections ordering of a backend set.
pub(crate) struct LeastConn {
    backends: Box<[Backend]>,
    /// For each of `backends`, its index in [`Loads`] (`None`: not a configured backend).
    slots: Box<[Option<usize>]>,
    loads: Arc<Loads>,
    /// Rotates the start among equally loaded backends, so an idle cluster is round robin.
    turn: AtomicUsize,
}

impl BackendSelection for LeastConn {
    type Iter = LeastConnIter;
    type Config = Arc<Loads>;

    fn build_with_config(backends: &BTreeSet<Backend>, loads: &Arc<Loads>) -> Self {
        let backends: Box<[Backend]> = backends.iter().cloned().collect();
        let slots = backends
            .iter()
            .map(|b| {
                let addr = b.addr.as_inet()?;
                loads.addrs.iter().position(|a| a == addr)
            })
            .collect();
        LeastConn {
            backends,
            slots,
            loads: loads.clone(),
            turn: AtomicUsize::new(0),
        }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let addrs: Vec<SocketAddr> = backends.iter().filter_map(|b| b.addr.as_inet().copied()).collect();
        Self::build_with_config(backends, &Loads::new(&addrs))
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastConnIter {
        let n = self.backends.len();
        let start = if n == 0 {
            0
        } else {
            self.turn.fetch_add(1, Ordering::Relaxed) % n
        };
        // Least loaded first; equal loads in rotating order from `start`.
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        order.sort_by_key(|&i| self.loads.load_of(self.slots[i]));
        LeastConnIter {
            selection: self.clone(),
            order,
            next: 0,
        }
    }
}

/// Backends from least to most loaded, as loaded when the walk began.
pub(crate) struct LeastConnIter {
    selection: Arc<LeastConn>,
    order: Vec<usize>,
    next: usize,
}

impl BackendIter for LeastConnIter {
    fn next(&mut self) -> Option<&Backend> {
        let i = *self.order.get(self.next)?;
        self.next += 1;
        self.selection.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addrs: &[&str]) -> (BTreeSet<Backend>, Vec<SocketAddr>) {
        let backends = addrs.iter().map(|a| Backend::new(a).unwrap()).collect();
        (backends, addrs.iter().map(|a| a.parse().unwrap()).collect())
    }

    fn first(sel: &Arc<LeastConn>) -> SocketAddr {
        *sel.iter(b"").next().unwrap().addr.as_inet().unwrap()
    }

    #[test]
    fn idle_backends_take_turns_and_load_steers_away() {
        let (backends, addrs) = set(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let loads = Loads::new(&addrs);
        let sel = Arc::new(LeastConn::build_with_config(&backends, &loads));
        let picks: Vec<SocketAddr> = (0..3).map(|_| first(&sel)).collect();
        let mut distinct = picks.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "idle: each in turn, {picks:?}");

        let _a = loads.enter(0);
        let _b = loads.enter(1);
        for _ in 0..5 {
            assert_eq!(first(&sel), addrs[2]);
        }
        let _c = loads.enter(2);
        let _d = loads.enter(2);
        let p = first(&sel);
        assert!(p == addrs[0] || p == addrs[1], "{p}");
        drop(_a);
        assert_eq!(first(&sel), addrs[0]);
    }

    #[test]
    fn the_walk_yields_every_backend_once() {
        let (backends, addrs) = set(&["127.0.0.1:1", "127.0.0.1:2"]);
        let loads = Loads::new(&addrs);
        let _g = loads.enter(1);
        let sel = Arc::new(LeastConn::build_with_config(&backends, &loads));
        let mut it = sel.iter(b"");
        assert_eq!(it.next().unwrap().addr.as_inet(), Some(&addrs[0]));
        assert_eq!(it.next().unwrap().addr.as_inet(), Some(&addrs[1]));
        assert!(it.next().is_none());
    }

    #[test]
    fn guards_give_their_slot_back() {
        let loads = Loads::new(&["127.0.0.1:1".parse().unwrap()]);
        {
            let _g = loads.enter(0);
            assert_eq!(loads.load_of(Some(0)), 1);
        }
        assert_eq!(loads.load_of(Some(0)), 0);
        assert_eq!(loads.load_of(None), usize::MAX);
    }
}
