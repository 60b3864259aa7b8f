//! Who walks a dead-letter queue now: one page read, or one bulk action (known
//! by whatever the caller names it with: `Arc<Action>`, a number). A walk
//! holds the jobs it has read until it ends, so a second walk of the same
//! queue would see them as gone: reads of a queue take turns, while an
//! action runs on a queue reads of it are refused (the page shows the
//! action's progress instead), and an action waits for the read under way to
//! end before it begins. Walks of different queues go on side by side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The walks of every queue; `A` is what an action holding a queue is known by.
#[derive(Debug)]
pub(crate) struct Walks<A> {
    queues: Mutex<HashMap<String, Use<A>>>,
    /// Told whenever a read ends.
    read_ended: Notify,
}

impl<A> Default for Walks<A> {
    fn default() -> Self {
        Walks { queues: Mutex::default(), read_ended: Notify::new() }
    }
}

/// What walks one queue.
#[derive(Debug)]
struct Use<A> {
    reads: usize,
    action: Option<A>,
}

impl<A> Default for Use<A> {
    fn default() -> Self {
        Use { reads: 0, action: None }
    }
}

/// A read of a queue under way; it ends when dropped.
#[derive(Debug)]
pub(crate) struct Reading<'a, A> {
    walks: &'a Walks<A>,
    queue: String,
}

/// An action holding a queue; it lets go when dropped.
#[derive(Debug)]
pub(crate) struct Holding<A> {
    walks: Arc<Walks<A>>,
    queue: String,
}

impl<A> Walks<A> {
    fn queues(&self) -> MutexGuard<'_, HashMap<String, Use<A>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reads_on(&self, queue: &str) -> usize {
        self.queues().get(queue).map_or(0, |usage| usage.reads)
    }

    /// Forgets a queue nothing walks.
    fn tidy(queues: &mut HashMap<String, Use<A>>, queue: &str) {
        if queues.get(queue).is_some_and(|usage| usage.reads == 0 && usage.action.is_none()) {
            queues.remove(queue);
        }
    }
}

impl<A: Clone> Walks<A> {
    /// A read of `queue`, once the read of it under way (if any) has ended;
    /// or the action running on it. One read of a queue at a time: two would
    /// see each other's held jobs as gone.
    pub(crate) async fn read(&self, queue: &str) -> Result<Reading<'_, A>, A> {
        loop {
            let ended = self.read_ended.notified();
            tokio::pin!(ended);
            // Registered before the check: a read ending in between still wakes it.
            ended.as_mut().enable();
            {
                let mut queues = self.queues();
                let usage = queues.entry(queue.to_owned()).or_default();
                if let Some(action) = &usage.action {
                    return Err(action.clone());
                }
                if usage.reads == 0 {
                    usage.reads = 1;
                    return Ok(Reading { walks: self, queue: queue.to_owned() });
                }
            }
            ended.await;
        }
    }

    /// Claims `queue` for `action` (new reads are refused from now on); `Err`
    /// with the action that holds it already.
    pub(crate) fn claim(self: &Arc<Self>, queue: &str, action: &A) -> Result<Holding<A>, A> {
        let mut queues = self.queues();
        let usage = queues.entry(queue.to_owned()).or_default();
        if let Some(running) = &usage.action {
            return Err(running.clone());
        }
        usage.action = Some(action.clone());
        Ok(Holding { walks: self.clone(), queue: queue.to_owned() })
    }
}

impl<A> Reading<'_, A> {
    /// The queue read.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }
}

impl<A> Holding<A> {
    /// Waits until the reads of the queue that began before the claim have ended.
    pub(crate) async fn reads_ended(&self) {
        loop {
            let ended = self.walks.read_ended.notified();
            tokio::pin!(ended);
            // Registered before the check: a read ending in between still wakes it.
            ended.as_mut().enable();
            if self.walks.reads_on(&self.queue) == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl<A> Drop for Reading<'_, A> {
    fn drop(&mut self) {
        let mut queues = self.walks.queues();
        if let Some(usage) = queues.get_mut(&self.queue) {
            usage.reads = usage.reads.saturating_sub(1);
        }
        Walks::tidy(&mut queues, &self.queue);
        drop(queues);
        self.walks.read_ended.notify_waiters();
    }
}

impl<A> Drop for Holding<A> {
    fn drop(&mut self) {
        let mut queues = self.walks.queues();
        if let Some(usage) = queues.get_mut(&self.queue) {
            usage.action = None;
        }
        Walks::tidy(&mut queues, &self.queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_take_turns_and_an_action_waits_for_them_and_refuses_new_ones() {
        let walks = Arc::new(Walks::<u64>::default());
        let reading = walks.read("q").await.map_err(|_| "free").unwrap();
        // Another queue reads side by side; a second read of `q` waits its turn.
        assert!(walks.read("other").await.is_ok());
        {
            let second = walks.read("q");
            tokio::pin!(second);
            assert!(poll_once(&mut second).await.is_none(), "a second read of q waits");
            let holding = walks.claim("q", &1).map_err(|_| "free").unwrap();
            // A second action is refused; the waiting read hears of the action once the first read ends.
            assert_eq!(walks.claim("q", &2).map(|_| ()).err(), Some(1));
            {
                let waiting = tokio::time::timeout(std::time::Duration::from_secs(5), holding.reads_ended());
                tokio::pin!(waiting);
                assert!(poll_once(&mut waiting).await.is_none(), "the action waits while a read runs");
                drop(reading);
                assert!(waiting.await.is_ok(), "the read ended");
            }
            assert_eq!(second.await.map(|_| ()).err(), Some(1), "the waiting read is refused: the action holds q");
            assert_eq!(walks.read("q").await.map(|_| ()).err(), Some(1));
            drop(holding);
        }
        assert!(walks.read("q").await.is_ok(), "free again once the action ends");
        assert!(walks.queues().is_empty(), "nothing kept for queues nothing walks");
    }

    /// Polls `future` once.
    async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
