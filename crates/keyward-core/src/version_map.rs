//! A small map from version number to value, kept as one sorted vector.
//!
//! Most keys have one or a few versions, and a server holds every key in
//! memory: a `BTreeMap` allocates a node for eleven entries even for one
//! (about 320 bytes for a wrapped secret, 150 for a secret's `Arc`), this
//! allocates exactly what it holds, and is two words, not three (a key's
//! in-memory entry then fits mimalloc's 256-byte class instead of the 320
//! one). Lookups are a binary search.

use std::fmt;

/// Values by version number, in ascending version order.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionMap<V>(Box<[(u32, V)]>);

impl<V> Default for VersionMap<V> {
    fn default() -> Self {
        Self(Box::default())
    }
}

impl<V: fmt::Debug> fmt::Debug for VersionMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> VersionMap<V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, version: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&version, |(v, _)| *v)
    }

    /// The value of `version`.
    pub fn get(&self, version: &u32) -> Option<&V> {
        self.find(*version).ok().map(|i| &self.0[i].1)
    }

    /// Whether `version` has a value.
    pub fn contains_key(&self, version: &u32) -> bool {
        self.find(*version).is_ok()
    }

    /// Applies `f` to the entries as a vector, keeping exactly its length.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<(u32, V)>) -> R) -> R {
        let mut entries = std::mem::take(&mut self.0).into_vec();
        let out = f(&mut entries);
        self.0 = entries.into_boxed_slice();
        out
    }

    /// Sets `version`'s value, returning the one it replaces. A new version
    /// reallocates the entries (one more): maps are built once and rarely
    /// change.
    pub fn insert(&mut self, version: u32, value: V) -> Option<V> {
        match self.find(version) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => self.edit(|e| {
                e.reserve_exact(1);
                e.insert(i, (version, value));
                None
            }),
        }
    }

    /// Removes `version`'s value.
    pub fn remove(&mut self, version: &u32) -> Option<V> {
        let i = self.find(*version).ok()?;
        Some(self.edit(|e| e.remove(i).1))
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.0 = Box::default();
    }

    /// How many versions have a value.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no version has a value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Versions and values, in ascending version order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u32, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Versions and mutable values, in ascending version order.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&u32, &mut V)> + ExactSizeIterator {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The versions, ascending.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &u32> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values, in ascending version order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<V> FromIterator<(u32, V)> for VersionMap<V> {
    /// Later values of a repeated version replace earlier ones, as in a
    /// `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (u32, V)>>(iter: I) -> Self {
        let mut entries: Vec<(u32, V)> = iter.into_iter().collect();
        // Stable: of equal versions, the last one given is kept below.
        entries.sort_by_key(|(v, _)| *v);
        let mut out: Vec<(u32, V)> = Vec::with_capacity(entries.len());
        for (v, value) in entries {
            match out.last_mut() {
                Some(last) if last.0 == v => last.1 = value,
                _ => out.push((v, value)),
            }
        }
        Self(out.into_boxed_slice())
    }
}

impl<V, const N: usize> From<[(u32, V); N]> for VersionMap<V> {
    fn from(entries: [(u32, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<V> IntoIterator for VersionMap<V> {
    type Item = (u32, V);
    type IntoIter = std::vec::IntoIter<(u32, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl<'a, V> IntoIterator for &'a VersionMap<V> {
    type Item = (&'a u32, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (u32, V)>, fn(&'a (u32, V)) -> (&'a u32, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn behaves_as_a_btree_map_of_the_same_operations() {
        let mut ours = VersionMap::new();
        let mut theirs = BTreeMap::new();
        // A fixed pseudo-random sequence of inserts and removes.
        let mut x: u32 = 7;
        for step in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let version = (x >> 16) % 24;
            if x.is_multiple_of(3) {
                assert_eq!(ours.remove(&version), theirs.remove(&version), "step {step}");
            } else {
                assert_eq!(ours.insert(version, step), theirs.insert(version, step), "step {step}");
            }
            assert_eq!(ours.len(), theirs.len());
            assert_eq!(ours.get(&version), theirs.get(&version));
            assert_eq!(ours.contains_key(&(version + 1)), theirs.contains_key(&(version + 1)));
            assert!(ours.iter().eq(theirs.iter()), "step {step}");
        }
        assert!(ours.keys().eq(theirs.keys()));
        assert!(ours.values().eq(theirs.values()));
        assert!(ours.clone().into_iter().eq(theirs.clone()));
        ours.clear();
        assert!(ours.is_empty());
    }

    #[test]
    fn built_from_entries_it_is_sorted_and_the_last_repeat_wins() {
        let m = VersionMap::from([(3, "c"), (1, "a"), (3, "C"), (2, "b")]);
        assert_eq!(m.iter().map(|(v, s)| (*v, *s)).collect::<Vec<_>>(), [(1, "a"), (2, "b"), (3, "C")]);
        assert_eq!(m, BTreeMap::from([(3, "c"), (1, "a"), (3, "C"), (2, "b")]).into_iter().collect());
        assert_eq!(format!("{m:?}"), r#"{1: "a", 2: "b", 3: "C"}"#);
    }

    #[test]
    fn is_two_words_and_holds_exactly_its_entries() {
        assert_eq!(std::mem::size_of::<VersionMap<u64>>(), 2 * std::mem::size_of::<usize>());
        let mut m: VersionMap<u64> = (1..=3).map(|v| (v, 0)).collect();
        assert_eq!(m.0.len(), 3);
        m.insert(9, 0);
        m.insert(9, 1);
        assert_eq!(m.0.len(), 4);
        m.remove(&1);
        assert_eq!(m.0.len(), 3);
        assert_eq!(m.remove(&1), None);
    }
}
