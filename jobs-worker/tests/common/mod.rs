//! Helpers shared by the integration tests (included with `#[path]` elsewhere).
//! Every test talks to a real RabbitMQ: `AMQP_URL`, default the local one.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::error::Error as _;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jobs_core::amqprs::channel::{BasicGetArguments, Channel, QueueDeleteArguments};
use jobs_core::amqprs::connection::Connection;
use jobs_core::amqprs::BasicProperties;
use jobs_core::AmqpConfig;

pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

pub fn amqp_config() -> AmqpConfig {
    config_for(&amqp_url())
}

pub fn config_for(url: &str) -> AmqpConfig {
    AmqpConfig::with_url(url).expect("AMQP_URL is not a valid amqp:// URL")
}

/// A queue name no other test (or run) uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("test.{name}.{}.{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos)
}

/// A raw amqprs connection; fails the test, saying how to start a broker, when none answers.
pub async fn raw_connection_to(url: &str) -> Connection {
    match jobs_core::connect(&config_for(url), "jobs-test").await {
        Ok(connection) => connection,
        Err(err) => panic!(
            "RabbitMQ is not reachable ({err}: {}). Start it with `bash deploy/rabbitmq.sh` \
             (or point AMQP_URL at one); these tests never skip.",
            err.source().map(|e| e.to_string()).unwrap_or_default()
        ),
    }
}

pub async fn raw_connection() -> Connection {
    raw_connection_to(&amqp_url()).await
}

/// Ready messages and consumers of `queue` (a passive declare on a channel of its own).
pub async fn counts(connection: &Connection, queue: &str) -> (u32, u32) {
    try_counts(connection, queue).await.unwrap_or_else(|| panic!("queue {queue} does not exist"))
}

/// As [`counts`], `None` when the queue does not exist (yet).
pub async fn try_counts(connection: &Connection, queue: &str) -> Option<(u32, u32)> {
    jobs_core::topology::queue_counts(connection, queue).await
}

/// Takes one message from `queue` (auto-ack), if any.
pub async fn get(channel: &Channel, queue: &str) -> Option<(BasicProperties, Vec<u8>)> {
    let args = BasicGetArguments::new(queue).no_ack(true).finish();
    channel.basic_get(args).await.expect("basic.get").map(|(_, props, body)| (props, body))
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `queue` has `n` consumers.
pub async fn wait_for_consumers(connection: &Connection, queue: &str, n: u32) {
    wait_until(&format!("{n} consumer(s) on {queue}"), Duration::from_secs(20), || async {
        try_counts(connection, queue).await.is_some_and(|c| c.1 >= n)
    })
    .await;
}

/// Deletes test queues and their dead-letter twins.
pub async fn delete_queues(connection: &Connection, queues: &[&str]) {
    let channel = connection.open_channel(None).await.expect("open channel");
    for queue in queues {
        for name in [queue.to_string(), format!("{queue}.dead")] {
            let _ = channel.queue_delete(QueueDeleteArguments::new(&name)).await;
        }
    }
    let _ = channel.close().await;
}

/// A RabbitMQ node of the test's own, on spare ports, for tests that stop or
/// restart a broker: `deploy/node.sh` runs it (the recipe `deploy/cluster.sh`
/// uses too). Needs root (as the broker's packages are installed here).
pub struct TestNode {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// More `rabbitmq.conf` lines, written again at every boot.
    extra_conf: String,
    server: std::sync::Mutex<Option<std::process::Child>>,
}

fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a spare port")
}

impl TestNode {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, "")
    }

    /// A node with extra `rabbitmq.conf` lines (files it names must be readable by `rabbitmq`).
    pub fn start_with(name: &str, extra_conf: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("jobs-node-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("node dir");
        let node = TestNode {
            node: format!("jobs-{name}-{}@localhost", std::process::id()),
            port: spare_port(),
            dist_port: spare_port(),
            dir,
            extra_conf: extra_conf.to_owned(),
            server: std::sync::Mutex::new(None),
        };
        node.boot();
        node
    }

    fn boot(&self) {
        let log = std::fs::File::create(self.dir.join("console.log")).expect("console log");
        let err = log.try_clone().expect("console log");
        let child = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/node.sh"))
            .args([&self.node, &self.port.to_string(), &self.dist_port.to_string()])
            .arg(&self.dir)
            .arg(&self.extra_conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("bash runs deploy/node.sh");
        self.reap(Some(child));
        // `await_startup` fails at once until the node has registered: retry, bounded.
        let start = std::time::Instant::now();
        loop {
            let ok = Command::new("rabbitmqctl")
                .args(["-q", "-n", &self.node, "await_startup", "--timeout", "60"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if self.exited() || start.elapsed() > Duration::from_secs(90) {
                self.ctl(&["await_startup", "--timeout", "5"]);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether the node's process has ended (it failed to start, or was stopped).
    fn exited(&self) -> bool {
        let mut slot = self.server.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_mut().is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("rabbitmqctl").arg("-n").arg(&self.node).args(args).output().expect("rabbitmqctl");
        if !out.status.success() {
            let console = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(30).collect();
            panic!(
                "rabbitmqctl {args:?} on {} failed: {}{}\nnode console (last lines):\n{}",
                self.node,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Waits for the previous server process (stopped) and keeps the new one.
    fn reap(&self, next: Option<std::process::Child>) {
        let mut slot = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut old) = std::mem::replace(&mut *slot, next) {
            let _ = old.wait();
        }
    }

    /// Stops the whole node and boots it again on the same data.
    pub fn restart(&self) {
        self.ctl(&["stop"]);
        self.boot();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("-n").arg(&self.node).arg("stop").output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
