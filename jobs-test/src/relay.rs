//! A TCP relay between a test's worker and the broker that can cut the
//! connections it carries without closing them: they stay open but pass no
//! more bytes either way, as with a broker that stops answering or a network
//! that drops packets (a half-open connection). Connections made after a cut
//! pass bytes as usual.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Debug)]
pub struct Relay {
    /// `AMQP_URL` with the relay standing in for the broker.
    pub url: String,
    /// How many cuts so far; a connection made after cut `n` goes silent at cut `n + 1`.
    cuts: Arc<AtomicU64>,
    /// Bytes from clients to pass before the next cut; `u64::MAX`: no such cut.
    budget: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays to the broker of `AMQP_URL` from a spare local port.
    pub async fn start() -> Self {
        let broker = jobs_core::BrokerUrl::parse(&crate::amqp_url()).expect("AMQP_URL");
        let (host, port) = broker.host_port();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a spare port");
        let relay_port = listener.local_addr().expect("bound").port();
        let url = crate::amqp_url().replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{relay_port}"), 1);
        assert_ne!(url, crate::amqp_url(), "AMQP_URL must name its port for the relay to stand in");
        let cuts = Arc::new(AtomicU64::new(0));
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let task = tokio::spawn({
            let (cuts, budget) = (cuts.clone(), budget.clone());
            async move {
                let mut pipes = JoinSet::new(); // aborted with the task
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect((host.as_str(), port)).await else { continue };
                    let born = cuts.load(Ordering::SeqCst);
                    let ((client_rx, client_tx), (server_rx, server_tx)) = (client.into_split(), server.into_split());
                    pipes.spawn(pipe(client_rx, server_tx, cuts.clone(), born, Some(budget.clone())));
                    pipes.spawn(pipe(server_rx, client_tx, cuts.clone(), born, None));
                }
            }
        });
        Relay { url, cuts, budget, task }
    }

    /// Silences every connection open now; later ones work.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Cuts once clients have sent `bytes` more bytes: in the middle of
    /// whatever they are sending then (a batch of publishes, say).
    pub fn cut_after(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes until its connection is cut; then holds it open, passing
/// nothing. With a `budget` (client to broker), a cut comes when it runs out.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    cuts: Arc<AtomicU64>,
    born: u64,
    budget: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let mut n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cuts.load(Ordering::SeqCst) > born {
            return std::future::pending().await;
        }
        if let Some(budget) = &budget {
            let left = budget.load(Ordering::SeqCst);
            if left != u64::MAX {
                let pass = (n as u64).min(left);
                budget.store(left - pass, Ordering::SeqCst);
                if pass < n as u64 || left - pass == 0 {
                    // Out of budget: pass what it allows, then cut every connection open now.
                    n = pass as usize;
                    budget.store(u64::MAX, Ordering::SeqCst);
                    let _ = to.write_all(&buf[..n]).await;
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return std::future::pending().await;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
