//! Small building blocks shared by every subsystem: retry schedules, task guards, mutex access,
//! fault injection.

pub mod backoff;
pub mod batcher;
pub mod fault;
pub mod task;
pub mod webhook_signature;

pub use backoff::Backoff;
pub use fault::{FaultInjector, InjectError, InjectedFault};
pub use task::AbortOnDrop;

/// Locks `m`, taking over a poisoned lock: every mutex guarded this way holds short critical
/// sections that leave their data consistent even if a panic interrupts them.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `l`, taking over a poisoned lock (see [`lock`]).
pub fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `l`, taking over a poisoned lock (see [`lock`]).
pub fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
