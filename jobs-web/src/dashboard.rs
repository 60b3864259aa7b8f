//! The dashboard's state and the tasks that feed it: the heartbeat reader
//! (from `now - window` at start, then from where it left off after a lost
//! connection), the queue poller (every 2 s), and the connection dead-job
//! actions go through; the follower of `jobs.control` (which queues are
//! paused); and the client Run now and Pause call with. Pages only read
//! what these keep.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::events::{EventReader, StartAt};
use jobs_core::plumbing::topology::{dead_queue, queue_counts, Declarer};
use jobs_core::plumbing::{close_connection, connect, read_control, Management, Publisher};
use jobs_core::{report, AmqpConfig, ControlCommand, DeadLetters, Paused};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::actions::{Actions, Walks};
use crate::config::{Auth, WebConfig};
use crate::history::History;
use crate::runs::Runs;

/// One job queue, as the poller last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct QueueRow {
    /// The queue.
    pub name: String,
    /// Jobs waiting.
    pub ready: Option<u64>,
    /// Jobs delivered and not yet acked (from the management API; unknown without it).
    pub unacked: Option<u64>,
    /// Consumers.
    pub consumers: Option<u64>,
    /// Jobs in `<queue>.dead`.
    pub dead: Option<u64>,
    /// Jobs published to it per second (management API).
    pub rate_in: Option<f64>,
    /// Jobs acked from it per second (management API).
    pub rate_out: Option<f64>,
    /// Its `x-max-priority` (management API): it takes priorities 0 to this.
    pub max_priority: Option<u64>,
    /// For an ordered type's shard (`<queue>.shard.<n>`, a single-active-consumer
    /// queue): its base queue (paused and resumed with it).
    pub shard_of: Option<String>,
    /// And the worker whose consumer is its active one: it runs the shard's jobs now.
    pub held_by: Option<String>,
}

/// A queue with its paused state, for `/api/queues` (the paused fields as `worker queues --json` names them).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueState {
    #[serde(flatten)]
    pub row: QueueRow,
    /// Paused now; `null` while `jobs.control` cannot be read.
    pub paused: Option<bool>,
    /// Who paused it, when paused.
    pub paused_by: Option<String>,
    /// When, Unix milliseconds.
    pub paused_at_ms: Option<u64>,
}

/// Whether the dashboard reaches the broker.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct BrokerStatus {
    /// Reading heartbeats now.
    pub connected: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

/// The dashboard: build it with [`Dashboard::new`], start its tasks with
/// [`Dashboard::start`], serve [`Dashboard::router`].
#[derive(Debug)]
pub struct Dashboard {
    pub(crate) amqp: AmqpConfig,
    pub(crate) web: WebConfig,
    pub(crate) auth: Auth,
    pub(crate) history: Mutex<History>,
    pub(crate) queues: RwLock<Vec<QueueRow>>,
    pub(crate) broker: RwLock<BrokerStatus>,
    /// The connection dead-job pages read through, when open.
    pub(crate) dead: std::sync::Mutex<Option<Arc<DeadLetters>>>,
    /// Held while that connection is made: one at a time.
    pub(crate) dead_connecting: tokio::sync::Mutex<()>,
    /// Retries and deletes of many dead jobs, running and recent.
    pub(crate) actions: Actions,
    /// What walks each dead queue now: page reads, or one action.
    pub(crate) walks: Arc<Walks>,
    /// The client Run now calls the scheduler's leader with (it connects on first use).
    pub(crate) client: jobs_core::Client,
    /// What recent Run nows enqueued.
    pub(crate) runs: Runs,
    /// The queues paused now, as `jobs.control` says; `None` while it cannot be read.
    pub(crate) paused: RwLock<Option<Paused>>,
    /// Jobs someone cancelled in the last [`CANCELLING_FOR`], not yet
    /// dead-lettered: job id → who asked, and when.
    pub(crate) cancelling: std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>,
}

/// The most cancels in flight the dashboard keeps track of (the oldest go first).
const MAX_CANCELLING: usize = 10_000;
/// How long a cancel is shown on a running job that has not ended (a running
/// job's cancel ends it within its grace; one of a job not running waits).
const CANCELLING_FOR: u64 = 3_600_000;

/// Milliseconds since the Unix epoch.
pub(crate) use jobs_core::plumbing::events::now_ms;

impl Dashboard {
    /// A dashboard for the broker of `amqp`.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] when a secret file of `[web]` cannot be read.
    pub fn new(amqp: AmqpConfig, web: WebConfig) -> Result<Arc<Self>, jobs_core::Error> {
        let auth = web.auth()?;
        Ok(Arc::new(Dashboard {
            history: Mutex::new(History::new(web.window)),
            client: jobs_core::Client::new(amqp.clone()),
            amqp,
            web,
            auth,
            queues: RwLock::default(),
            broker: RwLock::default(),
            dead: std::sync::Mutex::default(),
            dead_connecting: tokio::sync::Mutex::default(),
            actions: Actions::default(),
            walks: Arc::default(),
            runs: Runs::default(),
            paused: RwLock::default(),
            cancelling: std::sync::Mutex::default(),
        }))
    }

    /// Starts reading heartbeats and polling queues; the tasks run until aborted.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().read_beats()),
            tokio::spawn(self.clone().poll_queues()),
            tokio::spawn(self.clone().follow_control()),
        ]
    }

    /// Who cancelled the job `id`, while it is not dead-lettered yet.
    pub(crate) fn cancelled_by(&self, id: &str) -> Option<String> {
        let cancelling = self.cancelling.lock().unwrap_or_else(|e| e.into_inner());
        cancelling.get(id).filter(|(_, at)| now_ms().saturating_sub(*at) < CANCELLING_FOR).map(|(by, _)| by.clone())
    }

    /// Notes a cancel's records; the other commands are given back.
    fn note_cancel(&self, command: ControlCommand) -> Option<ControlCommand> {
        let mut cancelling = self.cancelling.lock().unwrap_or_else(|e| e.into_inner());
        match command {
            ControlCommand::Cancel { id, by, at_ms } => {
                let now = now_ms();
                if now.saturating_sub(at_ms) >= CANCELLING_FOR {
                    return None;
                }
                if cancelling.len() >= MAX_CANCELLING {
                    cancelling.retain(|_, (_, at)| now.saturating_sub(*at) < CANCELLING_FOR);
                }
                if cancelling.len() >= MAX_CANCELLING {
                    let oldest = cancelling.iter().min_by_key(|(_, (_, at))| *at).map(|(id, _)| id.clone());
                    if let Some(oldest) = oldest {
                        cancelling.remove(&oldest);
                    }
                }
                cancelling.insert(id, (by, at_ms));
                None
            }
            ControlCommand::Cancelled { id, .. } => {
                cancelling.remove(&id);
                None
            }
            ControlCommand::Cancelling { .. } => None,
            command => Some(command),
        }
    }

    /// The queues paused now; `None` while `jobs.control` cannot be read.
    pub(crate) fn paused(&self) -> Option<Paused> {
        self.paused.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_paused(&self, paused: Option<Paused>) {
        *self.paused.write().unwrap_or_else(|e| e.into_inner()) = paused;
    }

    /// Follows `jobs.control` for good, as the workers do: read to a mark
    /// from its start, then each command as it comes; read again from the
    /// start after a lost connection.
    async fn follow_control(self: Arc<Self>) {
        let mut pause = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        // Said once per error, not every try (a user without write access to
        // jobs.control, whose mark it cannot append, would fill the log).
        let mut said = None;
        loop {
            match self.follow_once().await {
                Ok(()) => {
                    pause.reset();
                    said = None;
                }
                Err(err) => {
                    let text = report(&err);
                    if said.as_ref() != Some(&text) {
                        warn!(error = %text, "cannot read jobs.control: queue states shown as - until it can; retrying (the dashboard's user needs read and write access to it)");
                        said = Some(text);
                    } else {
                        debug!(error = %text, retry_in = ?pause.peek(), "jobs.control still cannot be read");
                    }
                }
            }
            self.set_paused(None);
            pause.wait().await;
        }
    }

    async fn follow_once(&self) -> Result<(), jobs_core::Error> {
        let connection = connect(&self.amqp, "jobs-web-control").await?;
        let result = async {
            let publisher = Publisher::open(&connection, self.amqp.confirm_timeout).await?;
            let mut paused = Paused::default();
            self.cancelling.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let mut reader = read_control(&connection, &publisher, |command| {
                if let Some(command) = self.note_cancel(command) {
                    paused.apply(command);
                }
            })
            .await?;
            self.set_paused(Some(paused));
            while let Some((_, kind, body)) = reader.next().await {
                let Some(command) = ControlCommand::of_record(kind.as_deref(), &body) else { continue };
                if let Some(command) = self.note_cancel(command) {
                    if let Some(paused) = self.paused.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        paused.apply(command);
                    }
                }
            }
            Ok(())
        }
        .await;
        close_connection(connection).await;
        result
    }

    pub(crate) fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn broker_status(&self) -> BrokerStatus {
        self.broker.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn queue_rows(&self) -> Vec<QueueRow> {
        self.queues.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The queues, each with its paused state.
    pub(crate) fn queue_states(&self) -> Vec<QueueState> {
        let paused = self.paused();
        self.queue_rows()
            .into_iter()
            .map(|row| {
                let pause = paused.as_ref().and_then(|p| p.queues().get(&row.name)).cloned();
                QueueState {
                    paused: paused.as_ref().map(|_| pause.is_some()),
                    paused_by: pause.as_ref().map(|p| p.by.clone()),
                    paused_at_ms: pause.map(|p| p.at_ms),
                    row,
                }
            })
            .collect()
    }

    fn set_broker(&self, connected: bool, error: Option<String>) {
        *self.broker.write().unwrap_or_else(|e| e.into_inner()) = BrokerStatus { connected, error };
    }

    /// Reads the heartbeat stream for good: from the start of the window the
    /// first time, from the beat after the last one read after a reconnect.
    async fn read_beats(self: Arc<Self>) {
        let mut pause = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.read_once().await {
                Ok(()) => pause.reset(),
                Err(err) => {
                    let text = report(&err);
                    warn!(error = %text, retry_in = ?pause.peek(), "cannot read heartbeats; retrying");
                    self.set_broker(false, Some(text));
                }
            }
            pause.wait().await;
        }
    }

    async fn read_once(&self) -> Result<(), jobs_core::Error> {
        let connection = connect(&self.amqp, "jobs-web").await?;
        let result = async {
            let declarer = Declarer::open(&connection).await?;
            self.amqp.topology().declare_events(&declarer).await?;
            declarer.close().await;
            let last = self.history().last_offset;
            let start = match last {
                Some(offset) => StartAt::Offset(offset + 1),
                None => StartAt::Time(SystemTime::now() - self.web.window),
            };
            let mut reader = EventReader::open(&connection, start).await?;
            self.set_broker(true, None);
            info!(start = %start_text(start), "reading heartbeats");
            let mut prune = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    beat = reader.next() => match beat {
                        Some((offset, beat)) => self.history().add(offset, beat),
                        None => break,
                    },
                    _ = prune.tick() => self.history().prune(now_ms()),
                }
            }
            self.set_broker(false, Some("the connection to RabbitMQ closed".into()));
            Ok(())
        }
        .await;
        close_connection(connection).await;
        result
    }

    /// Refreshes the queue table every 2 s: from the management API when it
    /// answers (one request, with unacked counts and rates), else by asking
    /// the broker over AMQP about each queue the workers consume.
    async fn poll_queues(self: Arc<Self>) {
        let management = Management::new(&self.amqp);
        let mut connection = None;
        loop {
            let known = self.history().queues();
            let rows = match self.queues_from_management(&management, &known).await {
                Some(rows) => rows,
                None => self.queues_from_amqp(&mut connection, &known).await,
            };
            *self.queues.write().unwrap_or_else(|e| e.into_inner()) = rows;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn queues_from_management(&self, management: &Management, known: &[String]) -> Option<Vec<QueueRow>> {
        let list = management.queues().await.ok()?;
        let list = list.as_array()?;
        let by_name = |name: &str| list.iter().find(|q| q["name"] == name);
        let n = |q: Option<&Value>, key: &str| q.and_then(|q| q[key].as_u64());
        let rate = |q: Option<&Value>, key: &str| q.and_then(|q| q["message_stats"][key]["rate"].as_f64());
        let mut names: Vec<String> = list
            .iter()
            .filter(|q| q["exclusive"] != true && q["type"] != "stream")
            .filter_map(|q| q["name"].as_str())
            .filter(|name| is_job_queue(name))
            .map(str::to_owned)
            .chain(known.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        // The shards' active consumers, in one request when there are shards.
        let shard_of = |q: Option<&Value>, name: &str| {
            let sac = q.and_then(|q| q.pointer("/arguments/x-single-active-consumer")) == Some(&Value::Bool(true));
            let (base, n) = name.rsplit_once(".shard.")?;
            (sac && n.parse::<u16>().is_ok()).then(|| base.to_owned())
        };
        let active = match names.iter().any(|name| shard_of(by_name(name), name).is_some()) {
            true => management.active_consumers().await.unwrap_or_default(),
            false => Vec::new(),
        };
        Some(
            names
                .into_iter()
                .map(|name| {
                    let q = by_name(&name);
                    let held_by = active
                        .iter()
                        .find(|(queue, _)| *queue == name)
                        .map(|(_, tag)| jobs_core::plumbing::tag_worker(tag, &name).to_owned());
                    QueueRow {
                        shard_of: shard_of(q, &name),
                        held_by,
                        ready: n(q, "messages_ready"),
                        unacked: n(q, "messages_unacknowledged"),
                        consumers: n(q, "consumers"),
                        dead: n(by_name(&dead_queue(&name)), "messages_ready"),
                        rate_in: rate(q, "publish_details").or(q.map(|_| 0.0)),
                        rate_out: rate(q, "ack_details").or(q.map(|_| 0.0)),
                        max_priority: q.and_then(|q| q.pointer("/arguments/x-max-priority")?.as_u64()),
                        name,
                    }
                })
                .collect(),
        )
    }

    async fn queues_from_amqp(
        &self,
        slot: &mut Option<jobs_core::plumbing::amqprs::connection::Connection>,
        known: &[String],
    ) -> Vec<QueueRow> {
        if slot.as_ref().map_or(true, |c| !c.is_open()) {
            *slot = connect(&self.amqp, "jobs-web-queues").await.ok();
        }
        let mut rows = Vec::with_capacity(known.len());
        for name in known {
            let mut row = QueueRow { name: name.clone(), ..QueueRow::default() };
            if let Some(connection) = slot.as_ref() {
                let counts = queue_counts(connection, name).await;
                row.ready = counts.map(|c| u64::from(c.0));
                row.consumers = counts.map(|c| u64::from(c.1));
                row.dead = queue_counts(connection, &dead_queue(name)).await.map(|c| u64::from(c.0));
            }
            rows.push(row);
        }
        rows
    }
}

/// Where the reader starts, for the log: a time in RFC 3339.
fn start_text(start: StartAt) -> String {
    match start {
        StartAt::Time(at) => format!("at {}", humantime::format_rfc3339_seconds(at)),
        StartAt::Offset(offset) => format!("at offset {offset}"),
        StartAt::Next => "with the next beat".into(),
    }
}

/// Whether `name` is a job queue, not one of the framework's others.
fn is_job_queue(name: &str) -> bool {
    !(name.ends_with(".dead")
        || name.starts_with("jobs.delay.")
        || name == jobs_core::plumbing::events::EVENTS_STREAM
        || name.starts_with("amq."))
}
