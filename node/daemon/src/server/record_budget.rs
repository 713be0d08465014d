//! The bytes of record bodies (manifests, placements) a node receives at
//! once, shared without a queue.
//!
//! A record is read whole before it can be checked (its owner is inside
//! it), so its bytes are held while it arrives, which a peer sending at the
//! slowest pace allowed can stretch to minutes. A first-come queue (a fair
//! semaphore) would let one body waiting for 64 MiB at its head hold back
//! every record behind it, however small, while another holds the room it
//! waits for: two identities could stall every record a node receives.
//! Here a body takes its room as soon as that much is free, before or after
//! others waiting; one that does not fit waits for room to be given back,
//! up to its deadline. A large body can be passed over by smaller ones while
//! the budget is tight; it is refused as busy at its deadline (its sender
//! tries again later or another holder), which costs that sender, not every
//! other sender their records.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A budget of KiB of record bodies being received.
#[derive(Debug)]
pub(crate) struct RecordBudget {
    room: Arc<Semaphore>,
    freed: Arc<Notify>,
    kib: usize,
    waiting: AtomicUsize,
}

/// Room taken in a [`RecordBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct RecordRoom {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for RecordRoom {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_waiters();
    }
}

/// Counts a body as waiting for as long as it waits (also when the wait is
/// dropped with its connection).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RecordBudget {
    pub(crate) fn new(bytes: u64) -> Self {
        let kib = (bytes >> 10) as usize;
        RecordBudget {
            room: Arc::new(Semaphore::new(kib)),
            freed: Arc::new(Notify::new()),
            kib,
            waiting: AtomicUsize::new(0),
        }
    }

    /// `kib` KiB of room as soon as they are free, whoever else waits;
    /// `None` if they were not free by `deadline`. More than the whole
    /// budget is never free.
    pub(crate) async fn take(&self, kib: u32, deadline: Instant) -> Option<RecordRoom> {
        if kib as usize > self.kib {
            return None;
        }
        let mut waiting = None;
        loop {
            // Registered before the attempt, so that room given back between
            // the attempt and the wait is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(permit) = Arc::clone(&self.room).try_acquire_many_owned(kib) {
                return Some(RecordRoom {
                    permit: Some(permit),
                    freed: Arc::clone(&self.freed),
                });
            }
            waiting.get_or_insert_with(|| Waiting::new(&self.waiting));
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Nothing of it is taken.
    pub(crate) fn idle(&self) -> bool {
        self.room.available_permits() == self.kib
    }

    /// Bytes taken now.
    pub(crate) fn taken_bytes(&self) -> u64 {
        ((self.kib - self.room.available_permits()) as u64) << 10
    }

    /// Bodies waiting for room now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    /// Until `budget` counts `n` bodies waiting.
    async fn until_waiting(budget: &RecordBudget, n: usize) {
        while budget.waiting() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_body_that_fits_is_not_held_behind_a_bigger_one_waiting() {
        let budget = Arc::new(RecordBudget::new(96 << 20));
        let held = budget
            .take(60 << 10, later(30))
            .await
            .expect("room for 60 MiB");
        // A second 60 MiB body waits: 36 MiB are free.
        let big = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.take(60 << 10, later(30)).await.is_some() }
        });
        until_waiting(&budget, 1).await;
        // A 1 MiB body behind it takes its room without waiting.
        let small = budget.take(1 << 10, Instant::now()).await;
        assert!(
            small.is_some(),
            "a body that fits waited behind a bigger one"
        );
        assert_eq!(budget.taken_bytes(), 61 << 20);
        drop(small);
        // The big one gets its room when the first is given back.
        drop(held);
        assert!(big.await.unwrap());
        assert_eq!(budget.waiting(), 0);
        assert!(budget.idle());
    }

    #[tokio::test]
    async fn a_body_that_never_fits_is_refused_at_its_deadline() {
        let budget = RecordBudget::new(96 << 20);
        let _held = budget.take(60 << 10, later(30)).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(budget.take(60 << 10, deadline).await.is_none());
        assert!(Instant::now() >= deadline);
        assert_eq!(budget.waiting(), 0);
        // More than the whole budget is refused without a wait.
        assert!(budget.take(97 << 10, later(3600)).await.is_none());
    }

    #[tokio::test]
    async fn a_wait_dropped_with_its_connection_is_no_longer_counted() {
        let budget = Arc::new(RecordBudget::new(1 << 20));
        let _held = budget.take(1 << 10, later(30)).await.unwrap();
        let wait = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.take(1, later(30)).await.is_some() }
        });
        until_waiting(&budget, 1).await;
        wait.abort();
        assert!(wait.await.is_err());
        assert_eq!(budget.waiting(), 0);
    }
}
