//! Counters in this process's memory: exact for one process, bounded in number (idle counters
//! are evicted when the bound is reached).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{CounterSpec, Reading, Slot, evaluate};

/// Counters for every key, bounded in number.
pub struct MemoryCounters {
    inner: Mutex<Inner>,
    max_keys: usize,
}

struct Inner {
    slots: HashMap<String, Slot>,
    /// Evict idle counters when this many are held. Raised when every counter is in use, so a
    /// full table is not rescanned on every check.
    evict_at: usize,
}

impl MemoryCounters {
    /// Keeps at most about `max_keys` counters; idle ones are evicted first.
    pub fn new(max_keys: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                evict_at: max_keys,
            }),
            max_keys,
        }
    }

    pub(super) fn apply(&self, specs: &[CounterSpec], hits: u64, now_us: i64) -> Vec<Reading> {
        let mut inner = self.lock();
        let mut readings = Vec::with_capacity(specs.len());
        let mut updates = Vec::with_capacity(specs.len());
        for spec in specs {
            let (reading, before, slot) =
                evaluate(inner.slots.get(&spec.key).copied(), spec.kind, hits, now_us);
            readings.push(reading);
            updates.push((before, slot));
        }
        if readings.iter().all(|r| r.allowed) {
            if hits > 0 {
                for (spec, (_, slot)) in specs.iter().zip(updates) {
                    inner.slots.insert(spec.key.clone(), slot);
                }
                if inner.slots.len() > inner.evict_at {
                    evict_idle(&mut inner.slots, now_us);
                    inner.evict_at = self.max_keys.max(inner.slots.len() * 2);
                }
            }
        } else {
            // Nothing is charged, so every counter reports what it had before the check.
            for (reading, (before, _)) in readings.iter_mut().zip(updates) {
                reading.remaining = before;
            }
        }
        readings
    }

    pub(super) fn reset(&self, specs: &[CounterSpec]) {
        let mut inner = self.lock();
        for spec in specs {
            inner.slots.remove(&spec.key);
        }
    }

    /// How many counters are held.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the counter lock is never poisoned")
    }
}

/// Drops counters that hold nothing any more: drained rates and ended quota windows.
fn evict_idle(slots: &mut HashMap<String, Slot>, now_us: i64) {
    slots.retain(|_, slot| match *slot {
        Slot::Rate(tat) => tat > now_us,
        Slot::Quota { window_end_us, .. } => window_end_us > now_us,
    });
}
