//! A binary of this package run as a process, its output lines collected as they come.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(name: &str, binary: &str, args: &[&str]) -> Self {
        Self::start_with(name, binary, args, &[])
    }

    /// [`Process::start`] with more environment variables (these win).
    pub fn start_with(name: &str, binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .env("JOBS__AMQP__URL", crate::amqp_url())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let out = Arc::new(Mutex::new(Vec::new()));
        let streams: Vec<Box<dyn std::io::Read + Send>> =
            vec![Box::new(child.stdout.take().expect("stdout")), Box::new(child.stderr.take().expect("stderr"))];
        for stream in streams {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock().expect("lines").push(line);
                }
            });
        }
        Process { name: name.to_owned(), child, out }
    }

    pub fn lines(&self) -> Vec<String> {
        self.out.lock().expect("lines").clone()
    }

    pub fn has(&self, needle: &str) -> bool {
        self.out.lock().expect("lines").iter().any(|l| l.contains(needle))
    }

    pub fn count(&self, needle: &str) -> usize {
        self.out.lock().expect("lines").iter().filter(|l| l.contains(needle)).count()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the process is still running, without reaping it: the state
    /// `/proc` shows for its pid (Linux).
    pub fn is_running_now(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .is_ok_and(|stat| !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')))
    }

    pub fn signal(&self, signal: i32) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().expect("kill(1)");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < limit, "{} did not exit within {limit:?}: {:?}", self.name, self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_line(&self, needle: &str, limit: Duration) {
        let what = format!("{} to print {needle:?}", self.name);
        crate::wait_until(&what, limit, || async { self.has(needle) }).await;
    }

    /// SIGTERM, then a clean exit; what it printed, all of it.
    pub async fn stop(mut self) -> Vec<String> {
        self.signal(15);
        let status = self.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status:?}: {:?}", self.name, self.lines());
        // Its pipes are closed: the readers have every line once they end.
        crate::wait_until("the last output lines", Duration::from_secs(5), || async {
            Arc::strong_count(&self.out) == 1
        })
        .await;
        self.lines()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary to its end; returns (success, stdout + stderr).
pub fn run(binary: &str, args: &[&str]) -> (bool, String) {
    run_on(&crate::amqp_url(), binary, args)
}

/// [`run`] against the broker (and vhost) of `url`.
pub fn run_on(url: &str, binary: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary).args(args).env("JOBS__AMQP__URL", url).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
