//! Findings remembered by the digest of the input they were judged on.
//!
//! A policy set is fixed once loaded (a reload makes a new one), and Rego is a pure function
//! of `input` and `data` unless a builtin answers differently from one call to the next. For
//! a set that calls none of those, the findings for an input are the findings for any input
//! with the same digest, so they are looked up instead of evaluated again: Pods of one
//! Deployment differ in name and uid, which the shipped policies never read.

use crate::decision::Finding;
use crate::decision_key::Key;
use crate::slots::Slots;
use std::sync::Arc;

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

#[derive(Debug)]
pub struct Decisions {
    slots: Slots<(Key, Arc<[Finding]>)>,
}

impl Default for Decisions {
    fn default() -> Self {
        Self {
            slots: Slots::new(SLOTS),
        }
    }
}

impl Decisions {
    /// The findings remembered for `key`, if any.
    pub fn recall(&self, key: &Key) -> Option<Vec<Finding>> {
        let slot = self.slots.lock(hash(key))?;
        match slot.as_ref() {
            Some((stored, findings)) if stored == key => Some(findings.to_vec()),
            _ => None,
        }
    }

    pub fn remember(&self, key: Key, findings: &[Finding]) {
        if let Some(mut slot) = self.slots.lock(hash(&key)) {
            *slot = Some((key, findings.into()));
        }
    }
}

/// A key is a SHA-256: its first bytes are as good a hash as any.
fn hash(key: &Key) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_le_bytes(first)
}
