//! Per-destination batching: the one queue in front of every "send what piled up as one call"
//! path (the Raft proposer per group, the rate limiter per owner node).
//!
//! A [`Batcher`] owns one bounded queue and one task per key. The task keeps at most one batch
//! in flight for its key: whatever is queued while a batch runs goes out together as the next
//! one (up to `max_batch`; the rest wait for the one after). Each item gets its own [`Reply`].
//! Tasks start on the first item for a key, end after `idle` without work, and are aborted when
//! the batcher is dropped; callers still waiting then get [`BatchError::Stopped`]. The batcher
//! knows nothing of the destination: the batch function its owner gives it does the call.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};

use crate::util::{AbortOnDrop, lock};

/// Times an item is offered to a fresh task when the one it was handed to died (a panicking
/// batch function) before taking it.
const SEND_ATTEMPTS: usize = 2;

/// Why an item got no reply of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError<E> {
    /// The key's queue is full ([`Batcher::try_enqueue`] only). Nothing was sent: retry later.
    #[error("the batch queue is full")]
    Full,
    /// The batcher was dropped, or the key's task died (a panicking batch function), before the
    /// item was answered. The item may or may not have been sent.
    #[error("the batcher stopped before answering")]
    Stopped,
    /// The batch function failed the whole batch; every item of the batch gets a copy.
    #[error("the batch failed: {error}")]
    Failed {
        /// What the batch function returned.
        #[source]
        error: E,
    },
    /// The batch function returned a different number of replies than it was given items, so
    /// none can be matched to its item. The batch was sent.
    #[error("the batch answered {got} replies for {expected} items")]
    Mismatch {
        /// Items in the batch.
        expected: usize,
        /// Replies returned.
        got: usize,
    },
}

/// How a [`Batcher`] sizes its batches and queues, and when its tasks end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most items one batch carries (taken as 1 when 0).
    pub max_batch: usize,
    /// Items that may wait per key besides the batch in flight (taken as 1 when 0). When it is
    /// full, [`Batcher::enqueue`] waits for room and [`Batcher::try_enqueue`] answers
    /// [`BatchError::Full`].
    pub capacity: usize,
    /// How long a key's task waits for an item before it ends; the next item starts a new one.
    pub idle: Duration,
    /// Drops items whose [`Reply`] was dropped before their batch went out (the caller gave up,
    /// e.g. timed out) instead of sending them for nothing. With `false` every queued item is
    /// sent, wanted or not.
    pub skip_abandoned: bool,
}

/// The batch function: sends one key's batch and answers one reply per item, in item order.
type RunFn<K, T, R, E> = dyn Fn(K, Vec<T>) -> BoxFuture<'static, Result<Vec<R>, E>> + Send + Sync;
/// The batch-size observer: sees each batch's key and size just before it goes out.
type ObserveFn<K> = dyn Fn(&K, usize) + Send + Sync;
/// What a caller waits on for one item.
type ReplySender<R, E> = oneshot::Sender<Result<R, BatchError<E>>>;

/// One queued item and where its reply goes.
struct Entry<T, R, E> {
    item: T,
    reply: ReplySender<R, E>,
}

/// A key's queue and the task draining it.
struct Queue<T, R, E> {
    /// Tells this queue from a later one for the same key.
    id: u64,
    tx: mpsc::Sender<Entry<T, R, E>>,
    _task: AbortOnDrop<()>,
}

/// Every key's queue. Only the batcher holds it strongly, so dropping the batcher drops every
/// queue and aborts every task.
struct Queues<K, T, R, E> {
    by_key: HashMap<K, Queue<T, R, E>>,
    next_id: u64,
}

/// What each key's task needs besides its queue.
struct Work<K, T, R, E> {
    run: Arc<RunFn<K, T, R, E>>,
    observe: Option<Arc<ObserveFn<K>>>,
    max_batch: usize,
    idle: Duration,
    skip_abandoned: bool,
}

impl<K, T, R, E> Clone for Work<K, T, R, E> {
    fn clone(&self) -> Self {
        Self {
            run: Arc::clone(&self.run),
            observe: self.observe.clone(),
            max_batch: self.max_batch,
            idle: self.idle,
            skip_abandoned: self.skip_abandoned,
        }
    }
}

/// Batches items per destination key `K`: items `T` go out through the batch function in
/// batches, at most one in flight per key, and each item gets its reply `R` (or the batch's
/// error `E`, copied to every item of a failed batch).
pub struct Batcher<K, T, R, E> {
    queues: Arc<Mutex<Queues<K, T, R, E>>>,
    work: Work<K, T, R, E>,
    capacity: usize,
}

impl<K, T, R, E> std::fmt::Debug for Batcher<K, T, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_batch", &self.work.max_batch)
            .field("capacity", &self.capacity)
            .field("keys", &lock(&self.queues).by_key.len())
            .finish_non_exhaustive()
    }
}

impl<K, T, R, E> Batcher<K, T, R, E>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Send + 'static,
    R: Send + 'static,
    E: Clone + Send + 'static,
{
    /// A batcher sending each batch with `run(key, items)`, which answers one reply per item in
    /// item order, or one error for the whole batch. Tasks start on first use, so this needs
    /// no runtime; enqueuing does.
    pub fn new<F, Fut>(config: BatcherConfig, run: F) -> Self
    where
        F: Fn(K, Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, E>> + Send + 'static,
    {
        let run: Arc<RunFn<K, T, R, E>> = Arc::new(move |key, items| run(key, items).boxed());
        Self {
            queues: Arc::new(Mutex::new(Queues { by_key: HashMap::new(), next_id: 0 })),
            work: Work {
                run,
                observe: None,
                max_batch: config.max_batch.max(1),
                idle: config.idle,
                skip_abandoned: config.skip_abandoned,
            },
            capacity: config.capacity.max(1),
        }
    }

    /// Calls `observe(key, size)` for every batch just before it goes out (after abandoned
    /// items were left out), e.g. to record a batch-size histogram. Set it before the first
    /// item: tasks already running keep going without it until they end.
    pub fn with_observer(mut self, observe: impl Fn(&K, usize) + Send + Sync + 'static) -> Self {
        self.work.observe = Some(Arc::new(observe));
        self
    }

    /// Queues `item` for `key`, waiting while the key's queue is full, and waits for its reply.
    pub async fn submit(&self, key: K, item: T) -> Result<R, BatchError<E>> {
        self.enqueue(key, item).await?.await
    }

    /// Queues `item` for `key`, waiting while the key's queue is full; the returned [`Reply`]
    /// resolves to its reply. Items queued in turn by one caller go out in that order.
    pub async fn enqueue(&self, key: K, item: T) -> Result<Reply<R, E>, BatchError<E>> {
        let (reply, rx) = oneshot::channel();
        let mut entry = Entry { item, reply };
        for _ in 0..SEND_ATTEMPTS {
            match self.sender(&key).send(entry).await {
                Ok(()) => return Ok(Reply { rx }),
                Err(SendError(back)) => entry = back,
            }
        }
        Err(BatchError::Stopped)
    }

    /// Queues `item` for `key` unless the key's queue is full ([`BatchError::Full`]); the
    /// returned [`Reply`] resolves to its reply.
    pub fn try_enqueue(&self, key: K, item: T) -> Result<Reply<R, E>, BatchError<E>> {
        let (reply, rx) = oneshot::channel();
        let mut entry = Entry { item, reply };
        for _ in 0..SEND_ATTEMPTS {
            match self.sender(&key).try_send(entry) {
                Ok(()) => return Ok(Reply { rx }),
                Err(TrySendError::Full(_)) => return Err(BatchError::Full),
                Err(TrySendError::Closed(back)) => entry = back,
            }
        }
        Err(BatchError::Stopped)
    }

    /// Keys with a running task right now.
    pub fn active_keys(&self) -> usize {
        lock(&self.queues).by_key.len()
    }

    /// The sender of `key`'s queue, starting its task when it has none (or it died).
    fn sender(&self, key: &K) -> mpsc::Sender<Entry<T, R, E>> {
        let mut queues = lock(&self.queues);
        if let Some(q) = queues.by_key.get(key)
            && !q.tx.is_closed()
        {
            return q.tx.clone();
        }
        let id = queues.next_id;
        queues.next_id = id.wrapping_add(1);
        let (tx, rx) = mpsc::channel(self.capacity);
        let task = AbortOnDrop::spawn(run_queue(key.clone(), id, rx, Arc::downgrade(&self.queues), self.work.clone()));
        // A closed queue's task has ended: replacing (and aborting) it stops nothing.
        queues.by_key.insert(key.clone(), Queue { id, tx: tx.clone(), _task: task });
        tx
    }
}

/// Resolves to the reply to one queued item. Dropping it abandons the item (see
/// [`BatcherConfig::skip_abandoned`]).
#[derive(Debug)]
pub struct Reply<R, E> {
    rx: oneshot::Receiver<Result<R, BatchError<E>>>,
}

impl<R, E> Future for Reply<R, E> {
    type Output = Result<R, BatchError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped sender means the task went away with the item.
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(BatchError::Stopped)))
    }
}

/// The task of one key: one batch in flight at a time, each carrying what queued meanwhile.
async fn run_queue<K, T, R, E>(
    key: K,
    id: u64,
    mut rx: mpsc::Receiver<Entry<T, R, E>>,
    queues: Weak<Mutex<Queues<K, T, R, E>>>,
    work: Work<K, T, R, E>,
) where
    K: Eq + Hash + Clone,
    E: Clone,
{
    loop {
        // Under load the next item is already queued: no idle timer then.
        let first = match rx.try_recv() {
            Ok(entry) => entry,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => match tokio::time::timeout(work.idle, rx.recv()).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return,
                Err(_) if retire(&queues, &key, id, &rx) => return,
                Err(_) => continue,
            },
        };
        let mut entries = vec![first];
        while entries.len() < work.max_batch
            && let Ok(entry) = rx.try_recv()
        {
            entries.push(entry);
        }
        if work.skip_abandoned {
            entries.retain(|e| !e.reply.is_closed());
            if entries.is_empty() {
                continue;
            }
        }
        if let Some(observe) = &work.observe {
            observe(&key, entries.len());
        }
        let (items, replies): (Vec<T>, Vec<ReplySender<R, E>>) = entries.into_iter().map(|e| (e.item, e.reply)).unzip();
        let expected = items.len();
        match (work.run)(key.clone(), items).await {
            Ok(results) if results.len() == expected => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(results) => {
                let got = results.len();
                for reply in replies {
                    let _ = reply.send(Err(BatchError::Mismatch { expected, got }));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(BatchError::Failed { error: error.clone() }));
                }
            }
        }
    }
}

/// Removes an idle key's queue, unless an item is queued or a caller holds the sender (it is
/// about to queue one); whether the task should end.
fn retire<K, T, R, E>(
    queues: &Weak<Mutex<Queues<K, T, R, E>>>,
    key: &K,
    id: u64,
    rx: &mpsc::Receiver<Entry<T, R, E>>,
) -> bool
where
    K: Eq + Hash,
{
    let Some(queues) = queues.upgrade() else { return true };
    let mut queues = lock(&queues);
    match queues.by_key.get(key) {
        // Senders are only handed out under this lock, so none can appear before the removal.
        Some(q) if q.id == id => {
            if !rx.is_empty() || q.tx.strong_count() > 1 {
                return false;
            }
        }
        // Not ours: this queue was replaced, which happens only once it closed.
        _ => return true,
    }
    // This drops our own abort guard: harmless, the task has nothing left to do and returns
    // without yielding again (an abort only takes effect at a yield).
    queues.by_key.remove(key);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The batch function's error in these tests.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("refused by the destination")]
    struct Refused;

    /// One batch as the fake destination sees it; the test answers it.
    struct Call {
        key: u32,
        items: Vec<u32>,
        answer: oneshot::Sender<Result<Vec<u32>, Refused>>,
    }

    impl Call {
        /// Answers each item `x` with `x * 10`.
        fn ok(self) {
            let replies = self.items.iter().map(|x| x * 10).collect();
            let _ = self.answer.send(Ok(replies));
        }
    }

    type TestBatcher = Batcher<u32, u32, u32, Refused>;

    fn config(max_batch: usize, capacity: usize) -> BatcherConfig {
        BatcherConfig { max_batch, capacity, idle: Duration::from_secs(30), skip_abandoned: false }
    }

    /// A batcher whose batches arrive as [`Call`]s for the test to answer.
    fn batcher(config: BatcherConfig) -> (TestBatcher, mpsc::UnboundedReceiver<Call>) {
        let (calls, rx) = mpsc::unbounded_channel();
        let b = Batcher::new(config, move |key, items| {
            let calls = calls.clone();
            async move {
                let (answer, rx) = oneshot::channel();
                calls.send(Call { key, items, answer }).map_err(|_| Refused)?;
                rx.await.map_err(|_| Refused)?
            }
        });
        (b, rx)
    }

    /// The next batch; fails the test instead of hanging when none comes.
    async fn next(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
        let call = tokio::time::timeout(Duration::from_secs(10), calls.recv()).await;
        call.expect("a batch within the deadline").expect("the batcher is alive")
    }

    async fn enqueue_all(b: &TestBatcher, key: u32, items: &[u32]) -> Vec<Reply<u32, Refused>> {
        let mut replies = Vec::new();
        for &item in items {
            replies.push(b.enqueue(key, item).await.expect("queued"));
        }
        replies
    }

    async fn results(replies: Vec<Reply<u32, Refused>>) -> Vec<Result<u32, BatchError<Refused>>> {
        futures::future::join_all(replies).await
    }

    #[tokio::test]
    async fn items_queued_while_a_batch_is_in_flight_go_together_in_the_next() {
        let (b, mut calls) = batcher(config(8, 16));
        let first = b.enqueue(1, 1).await.expect("queued");
        let call = next(&mut calls).await;
        assert_eq!(call.items, vec![1]);
        let rest = enqueue_all(&b, 1, &[2, 3, 4]).await;
        assert!(calls.try_recv().is_err(), "a second batch went out while the first was in flight");
        call.ok();
        assert_eq!(first.await, Ok(10));
        let call = next(&mut calls).await;
        assert_eq!(call.items, vec![2, 3, 4]);
        call.ok();
        assert_eq!(results(rest).await, vec![Ok(20), Ok(30), Ok(40)]);
    }

    #[tokio::test]
    async fn max_batch_splits_what_queued_into_several_batches() {
        let (b, mut calls) = batcher(config(2, 16));
        let first = b.enqueue(1, 1).await.expect("queued");
        let call = next(&mut calls).await;
        let rest = enqueue_all(&b, 1, &[2, 3, 4, 5, 6]).await;
        call.ok();
        let mut batches = vec![vec![1]];
        for _ in 0..3 {
            let call = next(&mut calls).await;
            batches.push(call.items.clone());
            call.ok();
        }
        assert_eq!(batches, vec![vec![1], vec![2, 3], vec![4, 5], vec![6]]);
        assert_eq!(first.await, Ok(10));
        assert_eq!(results(rest).await, vec![Ok(20), Ok(30), Ok(40), Ok(50), Ok(60)]);
    }

    #[tokio::test]
    async fn each_caller_gets_the_reply_to_its_own_item() {
        let (b, mut calls) = batcher(config(4, 64));
        let destination = tokio::spawn(async move {
            let mut sizes = Vec::new();
            while let Some(call) = calls.recv().await {
                sizes.push(call.items.len());
                call.ok();
            }
            sizes
        });
        let callers = (1..=20).map(|x| {
            let b = &b;
            async move { (x, b.submit(1, x).await) }
        });
        for (x, reply) in futures::future::join_all(callers).await {
            assert_eq!(reply, Ok(x * 10));
        }
        drop(b);
        let sizes = destination.await.expect("destination");
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "batch sizes {sizes:?}");
    }

    #[tokio::test]
    async fn keys_have_their_own_batches_in_flight_at_once() {
        let (b, mut calls) = batcher(config(8, 16));
        let one = b.enqueue(1, 1).await.expect("queued");
        let call_one = next(&mut calls).await;
        assert_eq!(call_one.key, 1);
        let two = b.enqueue(2, 2).await.expect("queued");
        let call_two = next(&mut calls).await;
        assert_eq!((call_two.key, call_two.items.clone()), (2, vec![2]));
        call_two.ok();
        assert_eq!(two.await, Ok(20));
        call_one.ok();
        assert_eq!(one.await, Ok(10));
        assert_eq!(b.active_keys(), 2);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_callers_and_the_next_batch_runs() {
        let (b, mut calls) = batcher(config(8, 16));
        let first = b.enqueue(1, 1).await.expect("queued");
        let call = next(&mut calls).await;
        let doomed = enqueue_all(&b, 1, &[2, 3]).await;
        call.ok();
        assert_eq!(first.await, Ok(10));
        let call = next(&mut calls).await;
        assert_eq!(call.items, vec![2, 3]);
        let _ = call.answer.send(Err(Refused));
        let failed = Err(BatchError::Failed { error: Refused });
        assert_eq!(results(doomed).await, vec![failed.clone(), failed]);
        let after = b.enqueue(1, 4).await.expect("queued");
        next(&mut calls).await.ok();
        assert_eq!(after.await, Ok(40));
    }

    #[tokio::test]
    async fn a_wrong_number_of_replies_fails_the_batch() {
        let (b, mut calls) = batcher(config(8, 16));
        let first = b.enqueue(1, 1).await.expect("queued");
        let call = next(&mut calls).await;
        let pair = enqueue_all(&b, 1, &[2, 3]).await;
        call.ok();
        assert_eq!(first.await, Ok(10));
        let call = next(&mut calls).await;
        let _ = call.answer.send(Ok(vec![20]));
        let mismatch = Err(BatchError::Mismatch { expected: 2, got: 1 });
        assert_eq!(results(pair).await, vec![mismatch.clone(), mismatch]);
    }

    #[tokio::test]
    async fn dropping_the_batcher_ends_its_tasks_and_waiting_callers_get_stopped() {
        let (b, mut calls) = batcher(config(8, 16));
        let in_flight = b.enqueue(1, 1).await.expect("queued");
        let mut call = next(&mut calls).await;
        let queued = b.enqueue(1, 2).await.expect("queued");
        let work = Arc::clone(&b.work.run);
        drop(b);
        // The batch in flight is dropped with its task: nobody waits for its answer any more.
        call.answer.closed().await;
        assert_eq!(in_flight.await, Err(BatchError::Stopped));
        assert_eq!(queued.await, Err(BatchError::Stopped));
        assert_eq!(Arc::strong_count(&work), 1, "a task still holds the batch function");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_queue_ends_its_task_and_the_next_item_starts_a_new_one() {
        let config = config(8, 16);
        let (b, mut calls) = batcher(config);
        let reply = b.enqueue(1, 1).await.expect("queued");
        next(&mut calls).await.ok();
        assert_eq!(reply.await, Ok(10));
        assert_eq!(b.active_keys(), 1);
        // Virtual time: the runtime jumps to the task's idle deadline first.
        tokio::time::sleep(config.idle + Duration::from_millis(1)).await;
        assert_eq!(b.active_keys(), 0);
        assert_eq!(Arc::strong_count(&b.work.run), 1, "the idle task still runs");
        let reply = b.enqueue(1, 2).await.expect("queued");
        next(&mut calls).await.ok();
        assert_eq!(reply.await, Ok(20));
        assert_eq!(b.active_keys(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_batch_does_not_count_as_idle() {
        let config = config(8, 16);
        let (b, mut calls) = batcher(config);
        let first = b.enqueue(1, 1).await.expect("queued");
        let call = next(&mut calls).await;
        let second = b.enqueue(1, 2).await.expect("queued");
        tokio::time::sleep(config.idle * 3).await;
        assert_eq!(b.active_keys(), 1);
        call.ok();
        next(&mut calls).await.ok();
        assert_eq!((first.await, second.await), (Ok(10), Ok(20)));
    }

    #[tokio::test]
    async fn the_observer_sees_each_batch_size() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (b, mut calls) = batcher(config(2, 16));
        let record = Arc::clone(&seen);
        let b = b.with_observer(move |key, size| lock(&record).push((*key, size)));
        let first = b.enqueue(1, 1).await.expect("queued");
        let call = next(&mut calls).await;
        let rest = enqueue_all(&b, 1, &[2, 3, 4]).await;
        call.ok();
        next(&mut calls).await.ok();
        next(&mut calls).await.ok();
        let other = b.enqueue(7, 5).await.expect("queued");
        next(&mut calls).await.ok();
        assert_eq!(first.await, Ok(10));
        assert_eq!(results(rest).await, vec![Ok(20), Ok(30), Ok(40)]);
        assert_eq!(other.await, Ok(50));
        assert_eq!(*lock(&seen), vec![(1, 1), (1, 2), (1, 1), (7, 1)]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_try_enqueue_and_holds_enqueue_until_there_is_room() {
        let (b, mut calls) = batcher(config(8, 2));
        let first = b.try_enqueue(1, 1).expect("queued");
        let call = next(&mut calls).await;
        let queued = vec![b.try_enqueue(1, 2).expect("queued"), b.try_enqueue(1, 3).expect("queued")];
        assert!(matches!(b.try_enqueue(1, 4), Err(BatchError::Full)));
        let waiting = b.enqueue(1, 5);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        call.ok();
        let last = waiting.await.expect("queued once there was room");
        assert_eq!(first.await, Ok(10));
        let call = next(&mut calls).await;
        assert_eq!(call.items, vec![2, 3]);
        call.ok();
        next(&mut calls).await.ok();
        assert_eq!(results(queued).await, vec![Ok(20), Ok(30)]);
        assert_eq!(last.await, Ok(50));
    }

    #[tokio::test]
    async fn abandoned_items_are_left_out_only_when_asked() {
        for skip_abandoned in [true, false] {
            let (b, mut calls) = batcher(BatcherConfig { skip_abandoned, ..config(8, 16) });
            let first = b.enqueue(1, 1).await.expect("queued");
            let call = next(&mut calls).await;
            let abandoned = b.enqueue(1, 2).await.expect("queued");
            let kept = b.enqueue(1, 3).await.expect("queued");
            drop(abandoned);
            call.ok();
            let call = next(&mut calls).await;
            let expected = if skip_abandoned { vec![3] } else { vec![2, 3] };
            assert_eq!(call.items, expected, "skip_abandoned = {skip_abandoned}");
            call.ok();
            assert_eq!((first.await, kept.await), (Ok(10), Ok(30)));
        }
    }

    #[tokio::test]
    async fn a_caller_waiting_for_room_when_the_task_dies_moves_to_a_new_task() {
        let (release, gate) = oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(gate)));
        let started = Arc::new(tokio::sync::Notify::new());
        let in_flight = Arc::clone(&started);
        let b: TestBatcher = Batcher::new(config(8, 1), move |_key, items: Vec<u32>| {
            let gate = lock(&gate).take();
            let started = Arc::clone(&started);
            async move {
                if let Some(gate) = gate {
                    started.notify_one();
                    let _ = gate.await;
                    panic!("the destination blew up");
                }
                Ok(items)
            }
        });
        let doomed = b.enqueue(1, 1).await.expect("queued");
        in_flight.notified().await;
        let queued = b.enqueue(1, 2).await.expect("queued");
        let waiting = b.enqueue(1, 3);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending(), "the queue should be full");
        let _ = release.send(());
        let moved = waiting.await.expect("queued with a new task");
        assert_eq!((doomed.await, queued.await), (Err(BatchError::Stopped), Err(BatchError::Stopped)));
        assert_eq!(moved.await, Ok(3));
    }

    #[test]
    fn a_batch_error_is_an_error_whose_source_is_the_batch_functions() {
        use std::error::Error as _;
        let e: BatchError<Refused> = BatchError::Failed { error: Refused };
        assert_eq!(e.to_string(), "the batch failed: refused by the destination");
        assert_eq!(e.source().map(|s| s.to_string()), Some(Refused.to_string()));
        // Errors that are not Clone travel behind an Arc.
        let e: BatchError<Arc<std::io::Error>> = BatchError::Failed { error: Arc::new(std::io::Error::other("x")) };
        assert!(e.source().is_some());
    }

    #[tokio::test]
    async fn a_panicking_batch_stops_its_callers_and_the_key_starts_over() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let b: TestBatcher = Batcher::new(config(8, 16), move |_key, items: Vec<u32>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                assert!(!items.contains(&99), "poisoned item");
                Ok(items)
            }
        });
        assert_eq!(b.submit(1, 99).await, Err(BatchError::Stopped));
        assert_eq!(b.submit(1, 5).await, Ok(5));
        assert_eq!(batches.load(Ordering::Relaxed), 2);
    }
}
