//! Findings remembered by the digest of the input they were judged on.
//!
//! A policy set is fixed once loaded (a reload makes a new one), and Rego is a pure function
//! of `input` and `data` unless a builtin answers differently from one call to the next. For
//! a set that calls none of those, the findings for an input are the findings for any input
//! with the same digest, so they are looked up instead of evaluated again: Pods of one
//! Deployment differ in name and uid, which the shipped policies never read.

use super::input::Key;
use crate::decision::Finding;
use std::sync::{Arc, Mutex};

/// Builtins whose answer can change between two calls with the same arguments. A policy set
/// that calls one of them is evaluated for every review.
pub const UNSTABLE_BUILTINS: [&str; 5] = [
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "http.send",
    "opa.runtime",
];

/// How many inputs are remembered: a fixed table, each key in one slot (a newer key
/// replaces an older one there), about 56 bytes per slot plus the findings.
const SLOTS: usize = 4096;

type Slot = Option<(Key, Arc<[Finding]>)>;

pub struct Decisions {
    slots: Box<[Mutex<Slot>]>,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Default for Decisions {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl Decisions {
    /// The findings remembered for `key`, if any.
    pub fn recall(&self, key: &Key) -> Option<Vec<Finding>> {
        let slot = self.slot(key).lock().ok()?;
        match slot.as_ref() {
            Some((stored, findings)) if stored == key => Some(findings.to_vec()),
            _ => None,
        }
    }

    pub fn remember(&self, key: Key, findings: &[Finding]) {
        if let Ok(mut slot) = self.slot(&key).lock() {
            *slot = Some((key, findings.into()));
        }
    }

    fn slot(&self, key: &Key) -> &Mutex<Slot> {
        let mut index = [0u8; 8];
        index.copy_from_slice(&key[..8]);
        &self.slots[(u64::from_le_bytes(index) % SLOTS as u64) as usize]
    }
}
