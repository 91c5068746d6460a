//! Task ownership: a spawned task that dies with the value that owns it.

use tokio::task::JoinHandle;

/// Aborts the wrapped task when dropped, so a failed actor never leaves its loops running.
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Spawns `fut` on the current runtime and ties its life to the returned guard.
    pub fn spawn<F>(fut: F) -> Self
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        Self(tokio::spawn(fut))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
