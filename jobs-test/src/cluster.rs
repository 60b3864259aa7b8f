//! A three-node RabbitMQ cluster of a test's own (`deploy/cluster.sh`).

use std::process::Command;
use std::time::{Duration, Instant};

/// Three nodes on spare ports, joined; stopped and removed when dropped.
#[derive(Debug)]
pub struct TestCluster {
    dir: String,
    prefix: String,
    /// The AMQP URLs of nodes 1, 2, 3.
    pub urls: Vec<String>,
}

impl TestCluster {
    /// Starts the cluster (needs root, as the broker's packages are installed
    /// here). Up to three tries, each on other ports and node names: a node's
    /// distribution port can be taken by a connection of the moment.
    pub fn start() -> Self {
        let id = std::process::id();
        let mut failures = Vec::new();
        for attempt in 0..3u16 {
            let base = 15000 + (id % 20000) as u16 + attempt * 5;
            let mut cluster = TestCluster {
                dir: format!("/tmp/jobs-cluster-{id}-{attempt}"),
                prefix: format!("jobs-t{id}{attempt}-"),
                urls: Vec::new(),
            };
            match cluster.try_script(&["start", &cluster.dir.clone(), &base.to_string()]) {
                Ok(out) => {
                    cluster.urls = out.lines().map(str::to_owned).collect();
                    assert_eq!(cluster.urls.len(), 3, "cluster.sh prints three URLs");
                    return cluster;
                }
                // Dropped: its nodes are stopped before the next try.
                Err(err) => failures.push(err),
            }
        }
        panic!("the test cluster did not start in three tries: {failures:#?}");
    }

    fn try_script(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cluster.sh"))
            .args(args)
            .env("CLUSTER_PREFIX", &self.prefix)
            .output()
            .expect("bash runs deploy/cluster.sh");
        if !out.status.success() {
            return Err(format!("cluster.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The node name of node `n` (1, 2, 3).
    pub fn node(&self, n: u32) -> String {
        format!("{}{n}@localhost", self.prefix)
    }

    /// `rabbitmqctl -n <node n> args...`, which must succeed.
    pub fn ctl(&self, n: u32, args: &[&str]) -> String {
        let name = self.node(n);
        let out = Command::new("rabbitmqctl").arg("-n").arg(&name).args(args).output().expect("rabbitmqctl");
        assert!(out.status.success(), "rabbitmqctl {args:?} on {name}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until node `asked` sees `count` nodes running in the cluster.
    pub fn wait_running(&self, asked: u32, count: usize) {
        let start = Instant::now();
        loop {
            let out = Command::new("rabbitmqctl")
                .args(["-n", &self.node(asked), "cluster_status", "--formatter", "json"])
                .output()
                .expect("rabbitmqctl");
            let running = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
                .unwrap_or(0);
            if running == count {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{count} nodes not running after 60 s (saw {running})");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cluster.sh"))
            .args(["stop", &self.dir])
            .env("CLUSTER_PREFIX", &self.prefix)
            .output();
    }
}
