//! The registries' entries: a tracked cell found by its key, the key stored once, in the cell.
//!
//! A registry is a `HashSet` of [`ByKey`] entries looked up with a `&str` (through `Borrow`):
//! one pointer per slot instead of a key pointer beside a cell pointer, and no second copy of
//! the key. At 10,000 deployments a router tracks about 70,000 counters: the slots alone were
//! 24 bytes each (3.3 MB at the table's load factor), now 8.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A cell that carries its own key.
pub(crate) trait Keyed {
    /// The key the cell is tracked under.
    fn key(&self) -> &str;
}

/// A registry entry: the cell, hashed and compared by its key.
pub(crate) struct ByKey<T>(pub(crate) Arc<T>);

impl<T: Keyed> Borrow<str> for ByKey<T> {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl<T: Keyed> Hash for ByKey<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: a lookup by `&str` must land on the same slot.
        self.0.key().hash(state);
    }
}

impl<T: Keyed> PartialEq for ByKey<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl<T: Keyed> Eq for ByKey<T> {}

/// Tracked cells by key.
pub(crate) type Registry<T> = HashSet<ByKey<T>>;

/// The cell tracked under `key`, if any.
pub(crate) fn lookup<'a, T: Keyed>(registry: &'a Registry<T>, key: &str) -> Option<&'a Arc<T>> {
    registry.get(key).map(|entry| &entry.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cell(Box<str>, u32);

    impl Keyed for Cell {
        fn key(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn cells_are_found_by_their_key_and_a_key_is_tracked_once() {
        let mut registry: Registry<Cell> = Registry::new();
        for i in 0..1_000u32 {
            assert!(registry.insert(ByKey(Arc::new(Cell(format!("{{d{i}}}:rpm").into(), i)))));
        }
        assert!(!registry.insert(ByKey(Arc::new(Cell("{d7}:rpm".into(), 0)))));
        assert_eq!(registry.len(), 1_000);
        for i in 0..1_000u32 {
            let found = lookup(&registry, &format!("{{d{i}}}:rpm")).map(|c| c.1);
            assert_eq!(found, Some(i));
        }
        assert!(lookup(&registry, "{d1000}:rpm").is_none());
        registry.retain(|entry| entry.0.1 % 2 == 0);
        assert_eq!(registry.len(), 500);
        assert!(lookup(&registry, "{d3}:rpm").is_none());
        assert_eq!(lookup(&registry, "{d4}:rpm").map(|c| c.1), Some(4));
    }
}
