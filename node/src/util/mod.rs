//! Small building blocks shared by every subsystem: retry schedules and task guards.

pub mod backoff;
pub mod task;

pub use backoff::Backoff;
pub use task::AbortOnDrop;
