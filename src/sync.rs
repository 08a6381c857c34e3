//! The one lock helper: every mutex in this crate guards data that stays consistent at every
//! point, so a poisoned lock (a panic elsewhere) is still safe to use.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
