//! A broker node of a test's own.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A RabbitMQ node of the test's own, on spare ports, for tests that stop or
/// restart a broker: `deploy/node.sh` runs it (the recipe `deploy/cluster.sh`
/// uses too). Needs root (as the broker's packages are installed here).
#[derive(Debug)]
pub struct TestNode {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// More `rabbitmq.conf` lines, written again at every boot.
    extra_conf: String,
    /// An `advanced.config`, if any (Erlang terms).
    advanced: String,
    server: std::sync::Mutex<Option<std::process::Child>>,
}

/// A TCP port free on loopback now.
pub fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a spare port")
}

impl TestNode {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, "")
    }

    /// A node with extra `rabbitmq.conf` lines (files it names must be readable by `rabbitmq`).
    pub fn start_with(name: &str, extra_conf: &str) -> Self {
        Self::start_advanced(name, extra_conf, "")
    }

    /// A node with extra `rabbitmq.conf` lines and an `advanced.config`
    /// (for settings `rabbitmq.conf` has no key for).
    pub fn start_advanced(name: &str, extra_conf: &str, advanced: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("jobs-node-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("node dir");
        let node = TestNode {
            node: format!("jobs-{name}-{}@localhost", std::process::id()),
            port: spare_port(),
            dist_port: spare_port(),
            dir,
            extra_conf: extra_conf.to_owned(),
            advanced: advanced.to_owned(),
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
            .arg(&self.advanced)
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

    /// Stops the node and boots it again on the same data with other extra
    /// `rabbitmq.conf` lines: an upgrade of the broker's configuration.
    pub fn restart_with(&mut self, extra_conf: &str) {
        self.ctl(&["stop"]);
        self.extra_conf = extra_conf.to_owned();
        self.boot();
    }

    /// The storage version of classic queue `queue` in vhost `/` (1 or 2), as the node says.
    pub fn queue_version(&self, queue: &str) -> Option<u8> {
        let expr = format!(
            "case rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, <<\"{queue}\">>)) of \
             {{ok, Q}} -> proplists:get_value(version, proplists:get_value(backing_queue_status, \
             rabbit_amqqueue:info(Q, [backing_queue_status]))); _ -> none end."
        );
        let out = Command::new("rabbitmqctl").args(["-q", "-n", &self.node, "eval", &expr]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("-n").arg(&self.node).arg("stop").output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
