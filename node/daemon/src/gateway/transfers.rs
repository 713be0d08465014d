//! Transfers in progress through the API, for the dashboard: pins coming in
//! and reads going out, each with its bytes so far and its total. An entry
//! lives as long as its [`Tracked`] handle: a finished, failed or abandoned
//! transfer (a reader that hung up) disappears with it, so nothing here
//! needs cleaning.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_api::TransferView;

/// Most transfers listed in one view (the oldest first).
pub const MAX_LISTED: usize = 100;

struct Live {
    kind: &'static str,
    what: String,
    total: Option<u64>,
    done: Arc<AtomicU64>,
    started: Instant,
}

/// The transfers of one node.
#[derive(Default)]
pub struct Transfers {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Live>>,
}

/// One transfer in progress; counts its bytes, and ends when dropped.
pub struct Tracked {
    id: u64,
    done: Arc<AtomicU64>,
    owner: Arc<Transfers>,
}

impl Tracked {
    /// `n` more bytes moved.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The byte counter, for a task that moves the bytes elsewhere.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.done)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut live) = self.owner.live.lock() {
            live.remove(&self.id);
        }
    }
}

impl Transfers {
    /// Starts tracking a transfer of `kind` ("pin", "read") named `what`.
    pub fn start(
        self: &Arc<Self>,
        kind: &'static str,
        what: String,
        total: Option<u64>,
    ) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(AtomicU64::new(0));
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                id,
                Live {
                    kind,
                    what,
                    total,
                    done: Arc::clone(&done),
                    started: Instant::now(),
                },
            );
        }
        Tracked {
            id,
            done,
            owner: Arc::clone(self),
        }
    }

    /// The transfers in progress, oldest first, at most [`MAX_LISTED`].
    pub fn view(&self) -> Vec<TransferView> {
        let Ok(live) = self.live.lock() else {
            return Vec::new();
        };
        live.values()
            .take(MAX_LISTED)
            .map(|t| TransferView {
                kind: t.kind.to_string(),
                what: t.what.clone(),
                done: t.done.load(Ordering::Relaxed),
                total: t.total,
                secs: t.started.elapsed().as_secs_f64(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_listed_while_its_handle_lives() {
        let t = Arc::new(Transfers::default());
        let a = t.start("read", "cid/a.bin".into(), Some(100));
        let b = t.start("pin", "weights".into(), None);
        a.add(40);
        b.counter().fetch_add(7, Ordering::Relaxed);
        let v = t.view();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].kind.as_str(), v[0].done, v[0].total),
            ("read", 40, Some(100))
        );
        assert_eq!(
            (v[1].what.as_str(), v[1].done, v[1].total),
            ("weights", 7, None)
        );
        drop(a);
        let v = t.view();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "pin");
        drop(b);
        assert!(t.view().is_empty());
        let many: Vec<_> = (0..MAX_LISTED + 5)
            .map(|i| t.start("read", i.to_string(), None))
            .collect();
        assert_eq!(t.view().len(), MAX_LISTED);
        assert_eq!(t.view()[0].what, "0", "oldest first");
        drop(many);
        assert!(t.view().is_empty());
    }
}
