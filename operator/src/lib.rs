//! The procwatch operator: the ProcessWatch controller, the pod admission webhook and the
//! report endpoint agents post their findings to.

pub mod admission;
pub mod budget;
pub mod cached_pod;
pub mod cli;
pub mod controller;
pub mod errors;
pub mod eviction;
pub mod expectations;
#[cfg(test)]
pub mod fixtures;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod pod_security;
pub mod report;
pub mod selector;
pub mod startup;
pub mod tls;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

// State behind these locks is updated in single steps, so it stays usable after a panic
// elsewhere; recovering beats taking the whole operator down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
