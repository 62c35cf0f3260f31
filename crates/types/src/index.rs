//! One dense index for every layer: [`DeploymentIx`] names a deployment within one snapshot of
//! the deployment list, and per-deployment state is reached through it.
//!
//! The router holds its deployments in immutable snapshots and swaps in a new one when a
//! deployment is added, removed or changed. Every layer (usage counters, strategies' latency
//! samples and EWMAs, cooldowns, budgets) keeps per-deployment state in a dense vector indexed
//! by position, because a pick touches it for every candidate. Positions shift between
//! snapshots, so:
//! - a [`DeploymentIx`] carries its snapshot's generation, and a [`PerDeployment`] of another
//!   snapshot finds nothing for it — a stale index can never reach another deployment's state;
//! - state that must outlive a snapshot lives in a [`LearnedState`] keyed by [`DeploymentId`]:
//!   binding it to a new snapshot hands unchanged deployments their state back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::{Deployment, DeploymentId, TypesError};

/// A deployment's position in one snapshot of the deployment list (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeploymentIx {
    generation: u32,
    index: u32,
}

impl DeploymentIx {
    /// The position in its snapshot.
    #[inline]
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The snapshot it belongs to.
    #[inline]
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl std::fmt::Display for DeploymentIx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}@{}", self.index, self.generation)
    }
}

/// Snapshot generations are unique in the process, so indices of two routers (or of two
/// snapshots of one router) never collide.
fn next_generation() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The deployments of one snapshot, in order, with their ids and dense indices.
#[derive(Debug, Clone)]
pub struct DeploymentIndex {
    generation: u32,
    ids: Vec<DeploymentId>,
    by_id: HashMap<DeploymentId, DeploymentIx>,
}

impl DeploymentIndex {
    /// Indexes `deployments` in order (ids computed once here). Two deployments with one id are
    /// an error naming it: their state would be one.
    pub fn of(deployments: &[Deployment]) -> Result<Self, TypesError> {
        Self::from_ids(deployments.iter().map(Deployment::id))
    }

    /// Indexes these ids in order.
    pub fn from_ids(ids: impl IntoIterator<Item = DeploymentId>) -> Result<Self, TypesError> {
        let generation = next_generation();
        let ids: Vec<DeploymentId> = ids.into_iter().collect();
        if u32::try_from(ids.len()).is_err() {
            return Err(TypesError::OutOfRange {
                field: "deployments",
                value: ids.len().to_string(),
                reason: "at most 4,294,967,295 deployments",
            });
        }
        let mut by_id = HashMap::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            let ix = DeploymentIx {
                generation,
                index: index as u32,
            };
            if by_id.insert(id.clone(), ix).is_some() {
                return Err(TypesError::DuplicateId { id: id.to_string() });
            }
        }
        Ok(DeploymentIndex {
            generation,
            ids,
            by_id,
        })
    }

    /// This snapshot's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// How many deployments.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The index of `id`, if it is in this snapshot.
    pub fn ix(&self, id: &DeploymentId) -> Option<DeploymentIx> {
        self.by_id.get(id).copied()
    }

    /// The id at `ix`, if `ix` belongs to this snapshot.
    pub fn id(&self, ix: DeploymentIx) -> Option<&DeploymentId> {
        self.position(ix).map(|i| &self.ids[i])
    }

    /// The position of `ix` in this snapshot; `None` for an index of another snapshot.
    #[inline]
    pub fn position(&self, ix: DeploymentIx) -> Option<usize> {
        (ix.generation == self.generation && ix.index() < self.ids.len()).then_some(ix.index())
    }

    /// Every deployment's index and id, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (DeploymentIx, &DeploymentId)> + '_ {
        self.ids.iter().enumerate().map(|(index, id)| {
            (
                DeploymentIx {
                    generation: self.generation,
                    index: index as u32,
                },
                id,
            )
        })
    }

    /// One value per deployment, made by `make` in order.
    pub fn map<T>(&self, make: impl FnMut(DeploymentIx, &DeploymentId) -> T) -> PerDeployment<T> {
        let mut make = make;
        PerDeployment {
            generation: self.generation,
            values: self.iter().map(|(ix, id)| make(ix, id)).collect(),
        }
    }
}

impl DeploymentIndex {
    /// One value per deployment, made by `make` in order; the first error stops.
    pub fn try_map<T, E>(
        &self,
        make: impl FnMut(DeploymentIx, &DeploymentId) -> Result<T, E>,
    ) -> Result<PerDeployment<T>, E> {
        let mut make = make;
        // Sized once: collecting `Result`s cannot know the length, and a vector grown by
        // doubling keeps up to half of its slots unused (6,384 of 16,384 at 10,000 deployments).
        let mut values = Vec::with_capacity(self.ids.len());
        for (ix, id) in self.iter() {
            values.push(make(ix, id)?);
        }
        Ok(PerDeployment {
            generation: self.generation,
            values,
        })
    }
}

/// One value per deployment of a snapshot, reached by [`DeploymentIx`] only: an index of another
/// snapshot finds nothing (`get` returns `None`), so stale indices fail closed.
#[derive(Debug, Clone)]
pub struct PerDeployment<T> {
    generation: u32,
    values: Vec<T>,
}

impl<T> PerDeployment<T> {
    /// The value of `ix`; `None` for an index of another snapshot.
    #[inline]
    pub fn get(&self, ix: DeploymentIx) -> Option<&T> {
        if ix.generation == self.generation {
            self.values.get(ix.index())
        } else {
            None
        }
    }

    /// The snapshot's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.values.iter()
    }
}

/// State learned about deployments that must survive a snapshot swap (latency samples, EWMAs):
/// kept by [`DeploymentId`], bound to each snapshot as a [`PerDeployment`] of shared handles.
/// Binding hands every deployment still present its state back, creates state for new ones and
/// forgets removed ones (a snapshot still in use keeps its own handles until it is dropped).
#[derive(Debug)]
pub struct LearnedState<T> {
    by_id: Mutex<HashMap<DeploymentId, Arc<T>>>,
}

impl<T> Default for LearnedState<T> {
    fn default() -> Self {
        LearnedState {
            by_id: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> LearnedState<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of every deployment of `index`, new state made by `make`.
    pub fn bind(&self, index: &DeploymentIndex, make: impl Fn() -> T) -> PerDeployment<Arc<T>> {
        let mut by_id = self.by_id.lock();
        let bound = index
            .map(|_, id| Arc::clone(by_id.entry(id.clone()).or_insert_with(|| Arc::new(make()))));
        by_id.retain(|id, _| index.ix(id).is_some());
        bound
    }

    /// How many deployments have state.
    pub fn len(&self) -> usize {
        self.by_id.lock().len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.by_id.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn ids(names: &[&str]) -> Vec<DeploymentId> {
        names.iter().map(|n| DeploymentId::new(*n)).collect()
    }

    #[test]
    fn an_index_of_another_snapshot_finds_nothing() {
        let old = DeploymentIndex::from_ids(ids(&["a", "b", "c"])).unwrap();
        let new = DeploymentIndex::from_ids(ids(&["c", "a"])).unwrap();
        let old_values = old.map(|_, id| id.to_string());
        let new_values = new.map(|_, id| id.to_string());
        let stale = old.ix(&DeploymentId::new("a")).unwrap();
        // In range in the new snapshot, but it must not reach "c" (position 0 there).
        assert_eq!(stale.index(), 0);
        assert_eq!(new_values.get(stale), None);
        assert_eq!(new.id(stale), None);
        assert_eq!(old_values.get(stale).map(String::as_str), Some("a"));
    }

    #[test]
    fn per_deployment_values_are_allocated_for_exactly_the_deployments() {
        let names: Vec<String> = (0..1_000).map(|i| format!("d{i}")).collect();
        let index =
            DeploymentIndex::from_ids(names.iter().map(|n| DeploymentId::new(n.as_str()))).unwrap();
        let made = index
            .try_map(|ix, _| Ok::<_, TypesError>(ix.index()))
            .unwrap();
        assert_eq!(made.values.len(), 1_000);
        // Grown by doubling it would hold 1,024 slots.
        assert_eq!(made.values.capacity(), 1_000);
        assert_eq!(index.map(|ix, _| ix.index()).values.capacity(), 1_000);
        let failed = index.try_map(|ix, id| {
            if ix.index() == 500 {
                Err(TypesError::DuplicateId { id: id.to_string() })
            } else {
                Ok(ix.index())
            }
        });
        assert_eq!(
            failed.unwrap_err(),
            TypesError::DuplicateId { id: "d500".into() }
        );
    }

    #[test]
    fn duplicate_ids_are_an_error_naming_the_id() {
        assert_eq!(
            DeploymentIndex::from_ids(ids(&["a", "b", "a"])).unwrap_err(),
            TypesError::DuplicateId { id: "a".into() }
        );
    }

    #[test]
    fn learned_state_of_unchanged_deployments_carries_over_a_swap() {
        let learned: LearnedState<AtomicU64> = LearnedState::new();
        let first = DeploymentIndex::from_ids(ids(&["a", "b"])).unwrap();
        let bound = learned.bind(&first, AtomicU64::default);
        let b = first.ix(&DeploymentId::new("b")).unwrap();
        bound.get(b).unwrap().store(7, Ordering::Relaxed);
        // b moves to position 0, a is removed, c is added.
        let second = DeploymentIndex::from_ids(ids(&["b", "c"])).unwrap();
        let rebound = learned.bind(&second, AtomicU64::default);
        let b2 = second.ix(&DeploymentId::new("b")).unwrap();
        let c2 = second.ix(&DeploymentId::new("c")).unwrap();
        assert_eq!(rebound.get(b2).unwrap().load(Ordering::Relaxed), 7);
        assert_eq!(rebound.get(c2).unwrap().load(Ordering::Relaxed), 0);
        assert_eq!(learned.len(), 2, "a is forgotten");
    }
}
