//! Weighted queues: `worker.queue_weights` (`--queue-weights
//! critical=6,default=3,low=1`) shares the worker's `concurrency` between
//! queues by weight, as Sidekiq's weights do, on classic and quorum queues
//! alike.
//!
//! Each weighted queue is consumed with a prefetch of the whole
//! `concurrency`, and a delivery runs only once it has a *turn*: there are
//! `concurrency` turns across the weighted queues. While every weighted queue
//! has deliveries waiting, a turn that comes free goes to the queue that is
//! furthest behind its share (stride scheduling: each start moves a queue's
//! pass on by `1 / weight`; the lowest pass goes next), so starts follow the
//! weights, 6:3:1. A queue with nothing waiting takes no part: its share is
//! *lent* to the others, turn by turn. When it has work again its pass is
//! brought up to the others' (it gets no credit for the time it was idle),
//! and it gets the next free turns in its weight's proportion; no running job
//! is stopped to give a share back.
//!
//! The cost: a delivery waiting for its turn is held unacked by this worker
//! (at most `concurrency` of each weighted queue, running ones included);
//! were the worker killed, the broker hands those to another. A stop, a
//! lost connection or a pause of its queue ends the wait, and so does half
//! the broker's `consumer_timeout` (its clock runs for a held delivery):
//! the delivery goes back to the end of its queue, unstarted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::plumbing::events::WeightBeat;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A queue's pass moves on by `STRIDE / weight` per start (in `u128`: no
/// wrap in any worker's life).
const STRIDE: u128 = 1 << 32;

/// The turns of a worker's weighted queues (clones share them).
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The weighted queues, by name: their index in `State::queues`.
    index: HashMap<String, usize>,
    state: Mutex<State>,
    /// Cancelled at a stop: no waiting delivery gets a turn then.
    stopping: CancellationToken,
    /// The longest a delivery waits for its turn before it goes back to its
    /// queue: its unacked time counts against the broker's `consumer_timeout`.
    max_wait: Duration,
}

#[derive(Debug)]
struct State {
    /// Turns not taken.
    free: u16,
    queues: Vec<Share>,
    /// The pass of the last turn given: where a queue that was idle starts again.
    now: u128,
}

#[derive(Debug)]
struct Share {
    name: String,
    weight: u16,
    pass: u128,
    running: u16,
    started: u64,
    waiting: VecDeque<oneshot::Sender<Turn>>,
}

/// One turn: a delivery of a weighted queue may run while it is held.
#[derive(Debug)]
pub(crate) struct Turn {
    inner: Option<Arc<Inner>>,
    queue: usize,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.give_back(self.queue);
        }
    }
}

impl Weights {
    /// `concurrency` turns shared by `weights` (each at least 1); a delivery
    /// waits `max_wait` at most.
    pub(crate) fn new(weights: &[(String, u16)], concurrency: u16, max_wait: Duration) -> Self {
        let queues: Vec<Share> = weights
            .iter()
            .map(|(name, weight)| Share {
                name: name.clone(),
                weight: (*weight).max(1),
                pass: 0,
                running: 0,
                started: 0,
                waiting: VecDeque::new(),
            })
            .collect();
        let index = weights.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();
        let state = Mutex::new(State { free: concurrency.max(1), queues, now: 0 });
        Weights { inner: Arc::new(Inner { index, state, stopping: CancellationToken::new(), max_wait }) }
    }

    /// A turn for a delivery of `queue`; `None` for a queue without a weight
    /// (it runs as its own prefetch allows). Waits while the turns are taken;
    /// gives up (`Err`) at a stop, when `end` or `waiting` is cancelled, or
    /// after the longest wait.
    pub(crate) async fn turn(
        &self,
        queue: &str,
        end: &CancellationToken,
        waiting: &CancellationToken,
    ) -> Result<Option<Turn>, ()> {
        let Some(&i) = self.inner.index.get(queue) else { return Ok(None) };
        if self.inner.stopping.is_cancelled() {
            return Err(());
        }
        let rx = {
            let mut state = self.inner.lock();
            let anyone_waits = state.queues.iter().any(|q| !q.waiting.is_empty());
            if state.free > 0 && !anyone_waits {
                state.free -= 1;
                state.start(i);
                state.gauge(i);
                return Ok(Some(Turn { inner: Some(self.inner.clone()), queue: i }));
            }
            let (tx, rx) = oneshot::channel();
            let now = state.now;
            let share = &mut state.queues[i];
            if share.waiting.is_empty() && share.running == 0 {
                // Back from idle: no credit for the time it had nothing.
                share.pass = share.pass.max(now);
            }
            state.queues[i].waiting.push_back(tx);
            state.gauge(i);
            rx
        };
        let given = tokio::select! {
            turn = rx => return turn.map(Some).map_err(drop),
            _ = self.inner.stopping.cancelled() => Err(()),
            _ = end.cancelled() => Err(()),
            _ = waiting.cancelled() => Err(()),
            _ = tokio::time::sleep(self.inner.max_wait) => Err(()),
        };
        // Gave up: its sender is closed now (skipped by `give_back`).
        self.inner.lock().gauge(i);
        given
    }

    /// No waiting delivery gets a turn from now on (a stop).
    pub(crate) fn stop(&self) {
        self.inner.stopping.cancel();
        // The waiting ones give up now; their senders are dropped here.
        let mut state = self.inner.lock();
        for share in &mut state.queues {
            share.waiting.clear();
        }
        for i in 0..state.queues.len() {
            state.gauge(i);
        }
    }

    /// What a heartbeat says of each weighted queue: its weight, running
    /// and waiting deliveries, and starts so far.
    pub(crate) fn beat(&self) -> Vec<WeightBeat> {
        let state = self.inner.lock();
        state
            .queues
            .iter()
            .map(|q| WeightBeat {
                queue: q.name.clone(),
                weight: q.weight,
                running: q.running,
                waiting: u32::try_from(q.live_waiting()).unwrap_or(u32::MAX),
                started: q.started,
            })
            .collect()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A turn of queue `i` ended: it goes to the waiting queue furthest
    /// behind its share, or is free.
    fn give_back(self: &Arc<Self>, i: usize) {
        let mut state = self.lock();
        state.queues[i].running = state.queues[i].running.saturating_sub(1);
        loop {
            let next = state
                .queues
                .iter()
                .enumerate()
                .filter(|(_, q)| !q.waiting.is_empty())
                .min_by_key(|(_, q)| q.pass)
                .map(|(j, _)| j);
            let Some(j) = next else {
                state.free += 1;
                state.gauge(i);
                return;
            };
            let Some(tx) = state.queues[j].waiting.pop_front() else { continue };
            if tx.is_closed() {
                continue;
            }
            state.start(j);
            match tx.send(Turn { inner: Some(self.clone()), queue: j }) {
                Ok(()) => {
                    state.gauge(i);
                    state.gauge(j);
                    return;
                }
                Err(mut turn) => {
                    // Gave up in the meantime: the turn goes on to the next.
                    turn.inner = None;
                    state.queues[j].running -= 1;
                    state.queues[j].started -= 1;
                }
            }
        }
    }
}

impl Share {
    /// Deliveries waiting now (not those that gave up).
    fn live_waiting(&self) -> usize {
        self.waiting.iter().filter(|tx| !tx.is_closed()).count()
    }
}

impl State {
    /// `jobs_queue_weight_running{queue}` and `jobs_queue_weight_waiting{queue}`.
    fn gauge(&self, i: usize) {
        let share = &self.queues[i];
        metrics::gauge!("jobs_queue_weight_running", "queue" => share.name.clone()).set(f64::from(share.running));
        metrics::gauge!("jobs_queue_weight_waiting", "queue" => share.name.clone()).set(share.live_waiting() as f64);
    }

    fn start(&mut self, i: usize) {
        let share = &mut self.queues[i];
        share.pass = share.pass.max(self.now);
        self.now = share.pass;
        share.pass += STRIDE / u128::from(share.weight);
        share.running += 1;
        share.started += 1;
    }
}

/// Parses `critical=6,default=3,low=1` (`--queue-weights`).
///
/// # Errors
/// What is wrong with which part.
pub(crate) fn parse_pair(text: &str) -> Result<(String, u16), String> {
    let (queue, weight) =
        text.rsplit_once('=').ok_or_else(|| format!("`{text}`: give each queue as name=weight, e.g. critical=6"))?;
    let weight: u16 = weight
        .trim()
        .parse()
        .ok()
        .filter(|w| *w >= 1)
        .ok_or_else(|| format!("`{text}`: the weight is a whole number from 1 to 65535"))?;
    let queue = queue.trim();
    if queue.is_empty() {
        return Err(format!("`{text}`: no queue name before `=`"));
    }
    Ok((queue.to_owned(), weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn weights(concurrency: u16) -> Weights {
        Weights::new(&[("critical".into(), 6), ("default".into(), 3), ("low".into(), 1)], concurrency, HOUR)
    }

    type Grants = tokio::sync::mpsc::UnboundedReceiver<(&'static str, Turn)>;

    /// `n` deliveries of `queue` waiting for a turn; each sends it on as it gets one.
    fn wait(
        w: &Arc<Weights>,
        queue: &'static str,
        n: usize,
        to: &tokio::sync::mpsc::UnboundedSender<(&'static str, Turn)>,
    ) {
        for _ in 0..n {
            let (w, to) = (w.clone(), to.clone());
            tokio::spawn(async move {
                if let Ok(Some(turn)) = w.turn(queue, &CancellationToken::new(), &CancellationToken::new()).await {
                    let _ = to.send((queue, turn));
                }
            });
        }
    }

    /// Gives back the oldest held turn `n` times, and counts who got each.
    async fn pass_on(held: &mut VecDeque<Turn>, grants: &mut Grants, n: usize) -> HashMap<&'static str, u32> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            drop(held.pop_front());
            let (queue, turn) = grants.recv().await.unwrap();
            *counts.entry(queue).or_default() += 1;
            held.push_back(turn);
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn starts_follow_the_weights_while_every_queue_waits() {
        let w = Arc::new(weights(4));
        let end = CancellationToken::new();
        let mut held = VecDeque::new();
        // Four run at once (taken in arrival order); then every queue has 400 waiting.
        for q in ["critical", "default", "low", "low"] {
            held.push_back(w.turn(q, &end, &end).await.unwrap().unwrap());
        }
        let (to, mut grants) = tokio::sync::mpsc::unbounded_channel();
        for q in ["critical", "default", "low"] {
            wait(&w, q, 400, &to);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let counts = pass_on(&mut held, &mut grants, 500).await;
        // Exact to one start (where the strides began).
        let near = |n: u32, share: u32| n.abs_diff(share) <= 1;
        assert!(near(counts["critical"], 300) && near(counts["default"], 150) && near(counts["low"], 50), "{counts:?}");
        w.stop();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_queue_lends_its_share_and_gets_it_back_when_it_has_work() {
        let w = Arc::new(weights(10));
        let end = CancellationToken::new();
        // Only `low` has work: it takes all ten turns, and 200 starts more.
        let mut held = VecDeque::new();
        for _ in 0..10 {
            held.push_back(w.turn("low", &end, &end).await.unwrap().unwrap());
        }
        let (to, mut grants) = tokio::sync::mpsc::unbounded_channel();
        wait(&w, "low", 400, &to);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(pass_on(&mut held, &mut grants, 200).await["low"], 200);
        // `critical` has work again: it gets six turns of every seven, and no
        // more for having been idle (else it would take the next 1,200 alone).
        wait(&w, "critical", 100, &to);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let counts = pass_on(&mut held, &mut grants, 70).await;
        assert!(counts["critical"].abs_diff(60) <= 1 && counts["low"].abs_diff(10) <= 1, "{counts:?}");
        w.stop();
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(w.inner.lock().free, 10, "every turn came back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_or_an_end_gives_up_waiting_and_a_given_up_turn_goes_on() {
        let w = Arc::new(weights(1));
        let end = CancellationToken::new();
        let first = w.turn("default", &end, &end).await.unwrap().unwrap();
        let gone = CancellationToken::new();
        let given_up = {
            let (w, gone) = (w.clone(), gone.clone());
            tokio::spawn(async move { w.turn("critical", &gone, &gone).await.map(|t| t.is_some()) })
        };
        let next = {
            let (w, end) = (w.clone(), end.clone());
            tokio::spawn(async move { w.turn("low", &end, &end).await.map(|t| t.is_some()) })
        };
        tokio::task::yield_now().await;
        gone.cancel();
        assert_eq!(given_up.await.unwrap(), Err(()));
        drop(first);
        assert_eq!(next.await.unwrap(), Ok(true), "the turn passed over the one that gave up");
        assert_eq!(
            w.turn("nowhere", &end, &end).await.map(|t| t.is_none()),
            Ok(true),
            "an unweighted queue has no turns"
        );
        w.stop();
        assert!(w.turn("low", &end, &end).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_waits_no_longer_than_the_longest_wait_or_its_consumer() {
        let w = Arc::new(Weights::new(&[("a".into(), 1)], 1, Duration::from_secs(10)));
        let end = CancellationToken::new();
        let held = w.turn("a", &end, &end).await.unwrap().unwrap();
        let started = tokio::time::Instant::now();
        assert!(w.turn("a", &end, &end).await.is_err(), "past the longest wait: given up");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let consumer = CancellationToken::new();
        let waiter = {
            let (w, end, consumer) = (w.clone(), end.clone(), consumer.clone());
            tokio::spawn(async move { w.turn("a", &end, &consumer).await.is_err() })
        };
        tokio::task::yield_now().await;
        assert_eq!(w.beat()[0].waiting, 1);
        consumer.cancel();
        assert!(waiter.await.unwrap(), "its consumer ended: given up");
        assert_eq!(w.beat()[0].waiting, 0, "no longer counted as waiting");
        drop(held);
        assert_eq!(w.inner.lock().free, 1, "the turn came back, not to a waiter that gave up");
    }

    #[test]
    fn pairs_parse_and_errors_say_what_is_wrong() {
        assert_eq!(parse_pair("critical=6"), Ok(("critical".into(), 6)));
        assert_eq!(parse_pair("a=b=2"), Ok(("a=b".into(), 2)));
        assert!(parse_pair("critical").unwrap_err().contains("name=weight"));
        assert!(parse_pair("critical=0").unwrap_err().contains("from 1"));
        assert!(parse_pair("=3").unwrap_err().contains("no queue name"));
    }
}
