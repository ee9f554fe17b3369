//! One way to take a std mutex: shrugging off poisoning. The values guarded in havip stay
//! consistent because no code panics while holding a guard, and a daemon that keeps a VIP
//! must not stop over a panic elsewhere that happened to hold one.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
