//! Standing for a leadership and acting on it safely, for each role that
//! needs a leader (the scheduler, the batch aggregator, the rate keepers,
//! the unique keeper; all but the scheduler lead through [`act`]): the
//! [`Leader`] campaign on a connection of the role's own, stood again with
//! backoff until released, and the fence that keeps a leader whose link went
//! silent from acting (a third of the heartbeat timeout, probed three times
//! within it), said as it closes and opens.

use std::time::Duration;

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, Hold, Leader, Publisher, LEADER_PROBE};
use jobs_core::{report, AmqpConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A role that needs a leader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Role {
    /// Its leadership.
    pub(crate) leader: Leader,
    /// Its name in logs and in its connection's name (`<worker>:<name>`).
    pub(crate) name: &'static str,
    /// How often the leader renews its hold.
    pub(crate) renew: Duration,
    /// Its [`fence`].
    pub(crate) fence: Duration,
}

/// Whether a role's worker acts as its leader now: it leads, and the fence
/// is open. Shared with the heartbeats and kept in the role's leader gauge.
#[derive(Debug)]
pub(crate) struct Acting {
    leading: std::sync::atomic::AtomicBool,
    fenced: std::sync::atomic::AtomicBool,
    /// The gauge, 1 while it acts (`jobs_scheduler_leader`, ..).
    gauge: &'static str,
    /// The job type the gauge is labelled with, for a role per type (`jobs_rate_leader{job}`).
    job: Option<&'static str>,
}

impl Acting {
    /// Not leading, its gauge at 0.
    pub(crate) fn new(gauge: &'static str) -> Self {
        let acting = Acting { leading: Default::default(), fenced: Default::default(), gauge, job: None };
        acting.show();
        acting
    }

    /// Not leading, its gauge labelled with the job type `job` at 0.
    pub(crate) fn of_job(gauge: &'static str, job: &'static str) -> Self {
        let acting = Acting { leading: Default::default(), fenced: Default::default(), gauge, job: Some(job) };
        acting.show();
        acting
    }

    /// Whether it leads, the fence open.
    pub(crate) fn acts(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.leading.load(Relaxed) && !self.fenced.load(Relaxed)
    }

    /// It leads now, or no longer.
    pub(crate) fn lead(&self, leading: bool) {
        self.leading.store(leading, std::sync::atomic::Ordering::Relaxed);
        self.show();
    }

    /// The fence closed, or opened again.
    pub(crate) fn fence(&self, fenced: bool) {
        self.fenced.store(fenced, std::sync::atomic::Ordering::Relaxed);
        self.show();
    }

    fn show(&self) {
        let value = if self.acts() { 1.0 } else { 0.0 };
        match self.job {
            Some(job) => metrics::gauge!(self.gauge, "job" => job).set(value),
            None => metrics::gauge!(self.gauge).set(value),
        }
    }
}

/// How long a leader may go without an answer from the broker on its
/// leadership's link before it stops acting as leader: a third of the heartbeat
/// timeout (`amqp.heartbeat`; the broker gives up on a silent link after
/// about the whole of it, and only then makes another leader); 10 s with
/// heartbeats off (then the broker never gives up on a silent link, and no
/// other worker leads until its TCP connection fails).
pub(crate) fn fence(amqp: &AmqpConfig) -> Duration {
    match amqp.heartbeat {
        0 => Duration::from_secs(10),
        seconds => Duration::from_secs(u64::from(seconds)) / 3,
    }
}

/// How often the leader probes its link: three times within the fence, at most each second.
pub(crate) fn probe(fence: Duration) -> Duration {
    (fence / 3).min(LEADER_PROBE)
}

/// A role's whole life in a worker: stands for its leadership (named
/// `name`, renewed each `renew`) until the acting side ends, the fence
/// watched beside it (each change told to `fenced`). `acting` is given the
/// hold and the fence and returns the acting side; the leadership is let go
/// only once that side has stopped.
pub(crate) async fn serve<Act>(
    amqp: &AmqpConfig,
    worker: &str,
    (leader, name, renew): (Leader, &'static str, Duration),
    fenced: impl Fn(bool) + Send + 'static,
    acting: impl FnOnce(watch::Receiver<Hold>, Duration) -> Act,
) where
    Act: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, hold) = watch::channel(Hold::default());
    let fence = fence(amqp);
    let mut tasks = tokio::task::JoinSet::new(); // aborted when this is dropped
    tasks.spawn(watch_fence(hold.clone(), fence, worker.to_owned(), name, fenced));
    let released = CancellationToken::new();
    let act = acting(hold, fence);
    tasks.spawn({
        let released = released.clone();
        async move {
            act.await;
            released.cancel();
        }
    });
    let role = Role { leader, name, renew, fence };
    stand_until(amqp, worker, &role, &tx, &released).await;
}

/// Stands for `role`'s leadership, again after each lost link (with
/// backoff), until `released` is cancelled; `hold` says how it stands.
pub(crate) async fn stand_until(
    amqp: &AmqpConfig,
    worker: &str,
    role: &Role,
    hold: &watch::Sender<Hold>,
    released: &CancellationToken,
) {
    if amqp.heartbeat == 0 {
        warn!(
            role = role.name,
            "amqp.heartbeat is 0: a leader whose link goes silent is not replaced until its TCP connection fails"
        );
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !released.is_cancelled() {
        let started = tokio::time::Instant::now();
        if let Err(err) = stand(amqp, worker, role, hold, released).await {
            warn!(error = %report(&err), "the {} lost its link to the broker; standing again", role.name);
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        tokio::select! {
            _ = backoff.wait() => {}
            _ = released.cancelled() => {}
        }
    }
}

async fn stand(
    amqp: &AmqpConfig,
    worker: &str,
    role: &Role,
    hold: &watch::Sender<Hold>,
    released: &CancellationToken,
) -> Result<(), jobs_core::Error> {
    let connection = connect(amqp, &format!("{worker}:{}", role.name)).await?;
    let result = async {
        let declarer = Declarer::open(&connection).await?;
        role.leader.declare(&declarer).await?;
        declarer.close().await;
        let publisher = Publisher::open(&connection, amqp.confirm_timeout).await?;
        tokio::select! {
            campaign = role.leader.campaign(&connection, &publisher, role.renew, probe(role.fence), hold) => campaign,
            _ = released.cancelled() => Ok(()),
        }
    }
    .await;
    hold.send_modify(|h| (h.leading, h.heard) = (false, None));
    close_connection(connection).await;
    result
}

/// Why a lead ended.
pub(crate) enum Ended {
    /// The leadership went to another, or was won again since, or the fence closed.
    Lost,
    /// Its link failed (a stream not read or written, a channel gone): it
    /// leads again on a new one, a second later.
    Failed(String),
    /// The worker stops.
    Gone,
}

/// What a role does while this worker leads it, one lead per term.
pub(crate) trait Acts: Send {
    /// What its lines say: "this worker {leads}", "… no longer {leads}",
    /// and "the {name} lost its link".
    const LEADS: &'static str;
    /// Its name in lines.
    const NAME: &'static str;

    /// Acts for the lead of `term` until it ends.
    fn lead(&mut self, term: u64, stopping: &CancellationToken) -> impl std::future::Future<Output = Ended> + Send;

    /// It leads now, or no longer (its gauge, its beats).
    fn leading(&self, leading: bool);

    /// The fields its lines carry besides the worker (a rate keeper's job type).
    fn job(&self) -> Option<&'static str> {
        None
    }
}

/// Leads `role` each term this worker wins (`hold`, within `fence`) until
/// `stopping`: says each start and end, and leads again a second after a
/// lead whose link failed.
pub(crate) async fn act<A: Acts>(
    mut role: A,
    mut hold: watch::Receiver<Hold>,
    fence: Duration,
    worker: &str,
    stopping: CancellationToken,
) {
    loop {
        let Some(term) = next_term(&mut hold, fence, &stopping).await else { return };
        role.leading(true);
        info!(worker, job = role.job(), "this worker {}", A::LEADS);
        let ended = role.lead(term, &stopping).await;
        role.leading(false);
        match ended {
            Ended::Lost => info!(worker, job = role.job(), "this worker no longer {}", A::LEADS),
            Ended::Failed(why) => {
                warn!(worker, job = role.job(), error = %why, "the {} lost its link; leading again", A::NAME);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopping.cancelled() => return,
                }
            }
            Ended::Gone => return,
        }
    }
}

/// A lead's link to its stream: a connection of its own, the stream
/// declared, a publisher for its records.
pub(crate) struct JournalLink {
    pub(crate) connection: jobs_core::plumbing::amqprs::connection::Connection,
    pub(crate) publisher: Publisher,
}

impl JournalLink {
    /// Connects as `name`, declares `journal` and opens a publisher.
    pub(crate) async fn open(
        amqp: &AmqpConfig,
        name: &str,
        journal: &jobs_core::plumbing::Journal,
    ) -> Result<Self, jobs_core::Error> {
        let connection = connect(amqp, name).await?;
        let opened = async {
            let declarer = Declarer::open(&connection).await?;
            journal.declare(&declarer).await?;
            declarer.close().await;
            Publisher::open(&connection, amqp.confirm_timeout).await
        }
        .await;
        match opened {
            Ok(publisher) => Ok(JournalLink { connection, publisher }),
            Err(err) => {
                close_connection(connection).await;
                Err(err)
            }
        }
    }

    /// Closes its connection.
    pub(crate) async fn close(self) {
        close_connection(self.connection).await;
    }
}

/// Waits until this worker leads with its fence open, and says the lead's
/// term; `None` when `stopping` comes first, or the campaign is over.
pub(crate) async fn next_term(
    hold: &mut watch::Receiver<Hold>,
    fence: Duration,
    stopping: &CancellationToken,
) -> Option<u64> {
    tokio::select! {
        held = hold.wait_for(|h| h.holds(fence)) => held.ok().map(|h| h.term),
        _ = stopping.cancelled() => None,
    }
}

/// Says when the fence closes on a leader whose link went silent (and
/// opens again), as it happens, whatever the acting side is waiting on;
/// tells `fenced` each change.
pub(crate) async fn watch_fence(
    mut hold: watch::Receiver<Hold>,
    fence: Duration,
    worker: String,
    role: &'static str,
    fenced: impl Fn(bool),
) {
    let mut was = false;
    loop {
        // At each change of the hold (each probe's answer), and at least every probe.
        if let Ok(Err(_)) = tokio::time::timeout(probe(fence), hold.changed()).await {
            return;
        }
        let hold = *hold.borrow();
        let now = hold.leading && !hold.holds(fence);
        if now && !was {
            warn!(
                worker = %worker,
                fence = ?fence,
                "the broker has not answered the {role}'s link within the fence: this worker fires nothing until it does (another may lead by then)"
            );
        } else if was && !now && hold.leading {
            info!(worker = %worker, "the broker answers the {role}'s link again");
        }
        if now != was {
            fenced(now);
        }
        was = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_well_under_the_heartbeat_timeout() {
        let mut amqp = AmqpConfig { heartbeat: 30, ..AmqpConfig::default() };
        assert_eq!(fence(&amqp), Duration::from_secs(10));
        assert_eq!(probe(fence(&amqp)), LEADER_PROBE, "at most each second");
        amqp.heartbeat = 3;
        assert_eq!(fence(&amqp), Duration::from_secs(1));
        assert_eq!(probe(fence(&amqp)), Duration::from_secs(1) / 3, "three probes within the fence");
        amqp.heartbeat = 0;
        assert_eq!(fence(&amqp), Duration::from_secs(10));
    }
}
