//! A fixed table of slots, each holding at most one entry: an entry goes to the slot its hash
//! names and replaces whatever was there. Recent results are remembered in bounded memory,
//! without per-entry bookkeeping.

use std::sync::{Mutex, MutexGuard};

pub struct Slots<T> {
    slots: Box<[Mutex<Option<T>>]>,
}

impl<T> Slots<T> {
    pub fn new(count: usize) -> Self {
        Self {
            slots: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The slot for `hash`, locked; None if a panic poisoned it.
    pub fn lock(&self, hash: u64) -> Option<MutexGuard<'_, Option<T>>> {
        let index = usize::try_from(hash % self.slots.len() as u64).ok()?;
        self.slots.get(index)?.lock().ok()
    }
}

impl<T> std::fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("slots", &self.slots.len())
            .finish()
    }
}
