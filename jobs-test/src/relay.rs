//! A TCP relay between a test's worker and the broker that can cut the
//! connections it carries without closing them: they stay open but pass no
//! more bytes either way, as with a broker that stops answering or a network
//! that drops packets (a half-open connection). Connections made after a cut
//! pass bytes as usual.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Set: the next `basic.publish` a client sends is dropped and its
    /// connection closed, with everything the client sent before it passed.
    publish_trap: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    /// Set: new connections are closed at once (a broker that cannot be reached).
    refusing: Arc<AtomicBool>,
    /// Each connection's first bytes from its client (they name it) and its switch.
    named: Arc<std::sync::Mutex<Vec<Named>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A connection, as [`Relay::cut_named`] finds it: the first bytes its client
/// sent (its `connection.start-ok` carries the connection's name), and the
/// switch that silences it.
#[derive(Debug, Clone, Default)]
struct Named {
    first: Arc<std::sync::Mutex<Vec<u8>>>,
    silenced: Arc<AtomicBool>,
}

/// How many of a client's first bytes are kept to find its connection's name.
const NAME_BYTES: usize = 4096;

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
        let publish_trap = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let refusing = Arc::new(AtomicBool::new(false));
        let named: Arc<std::sync::Mutex<Vec<Named>>> = Arc::default();
        let task = tokio::spawn({
            let (cuts, budget, trap, accepted) = (cuts.clone(), budget.clone(), publish_trap.clone(), accepted.clone());
            let (refusing, registry) = (refusing.clone(), named.clone());
            async move {
                let mut pipes = JoinSet::new(); // aborted with the task
                while let Ok((client, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect((host.as_str(), port)).await else { continue };
                    let born = cuts.load(Ordering::SeqCst);
                    let ((client_rx, client_tx), (server_rx, server_tx)) = (client.into_split(), server.into_split());
                    let (closer_tx, closer_rx) = tokio::sync::oneshot::channel();
                    let this = Named::default();
                    registry.lock().expect("relay registry").push(this.clone());
                    let upstream = Upstream {
                        budget: budget.clone(),
                        trap: trap.clone(),
                        close: closer_tx,
                        first: this.first.clone(),
                    };
                    let cut = Cut { cuts: cuts.clone(), born, silenced: this.silenced.clone() };
                    pipes.spawn(pipe(client_rx, server_tx, cut.clone(), Some(upstream)));
                    let downstream = pipe(server_rx, client_tx, cut, None);
                    pipes.spawn(async move {
                        // The other direction ends when the trap closes the connection.
                        tokio::select! {
                            _ = downstream => {}
                            _ = closer_rx => {}
                        }
                    });
                }
            }
        });
        Relay { url, cuts, budget, publish_trap, accepted, refusing, named, task }
    }

    /// Silences the connections open now whose name (`connection_name`, as
    /// `jobs_core::plumbing::connect` gives it) contains `name`; the others,
    /// and later ones, go on. How many it silenced.
    pub fn cut_named(&self, name: &str) -> usize {
        let registry = self.named.lock().expect("relay registry");
        let mut silenced = 0;
        for connection in registry.iter() {
            let first = connection.first.lock().expect("first bytes");
            if first.windows(name.len()).any(|w| w == name.as_bytes()) {
                connection.silenced.store(true, Ordering::SeqCst);
                silenced += 1;
            }
        }
        silenced
    }

    /// How many times connections were cut so far (by [`Relay::cut`] or a spent [`Relay::cut_after`]).
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// The count of cuts, to watch from another task.
    pub fn cuts_counter(&self) -> Arc<AtomicU64> {
        self.cuts.clone()
    }

    /// How many connections clients made through the relay so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Silences every connection open now; later ones work.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Arms the publish trap: the next `basic.publish` a client sends is
    /// dropped, and its connection closed both ways (as a network failure
    /// would), while everything sent before it (an ack, say) arrives. Returns
    /// the switch, for code that arms it later (a job's `perform`).
    pub fn publish_trap(&self) -> Arc<AtomicBool> {
        self.publish_trap.clone()
    }

    /// Closes every connection made from now on at once, as a broker that
    /// cannot be reached again; those open now go on.
    pub fn refuse_new(&self) {
        self.refusing.store(true, Ordering::SeqCst);
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

/// What a client-to-broker pipe watches.
struct Upstream {
    budget: Arc<AtomicU64>,
    trap: Arc<AtomicBool>,
    /// Ends the broker-to-client pipe too when the trap closes the connection.
    close: tokio::sync::oneshot::Sender<()>,
    /// The client's first bytes, kept for [`Relay::cut_named`].
    first: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// What silences a connection: a cut after it was made, or its own switch.
#[derive(Debug, Clone)]
struct Cut {
    cuts: Arc<AtomicU64>,
    born: u64,
    silenced: Arc<AtomicBool>,
}

impl Cut {
    fn now(&self) -> bool {
        self.cuts.load(Ordering::SeqCst) > self.born || self.silenced.load(Ordering::SeqCst)
    }
}

/// The AMQP 0-9-1 protocol header a client sends first.
const PROTOCOL_HEADER: usize = 8;

/// The length of the frame at the start of `bytes` (header, payload, end
/// octet), if its header is there; and whether it is a `basic.publish` method.
fn frame(bytes: &[u8]) -> Option<(usize, bool)> {
    if bytes.len() < 7 {
        return None;
    }
    let size = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) as usize;
    let publish = bytes[0] == 1 && bytes.len() >= 11 && bytes[7..11] == [0, 60, 0, 40];
    if bytes[0] == 1 && bytes.len() < 11 && size >= 4 {
        return None; // the class and method are not here yet
    }
    Some((7 + size + 1, publish))
}

/// Copies bytes until its connection is cut; then holds it open, passing
/// nothing. With an `upstream` (client to broker), a cut comes when the budget
/// runs out, and the armed publish trap closes the connection at a publish.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, cut: Cut, upstream: Option<Upstream>) {
    let mut buf = vec![0; 16 * 1024];
    // Client bytes not yet passed on: whole frames go, so that a publish is seen whole.
    let mut held: Vec<u8> = Vec::new();
    let mut header_left = PROTOCOL_HEADER;
    loop {
        let mut n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.now() {
            return std::future::pending().await;
        }
        let Some(up) = &upstream else {
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
            continue;
        };
        {
            let mut first = up.first.lock().expect("first bytes");
            let room = NAME_BYTES.saturating_sub(first.len()).min(n);
            first.extend_from_slice(&buf[..room]);
        }
        let left = up.budget.load(Ordering::SeqCst);
        if left != u64::MAX {
            let pass = (n as u64).min(left);
            up.budget.store(left - pass, Ordering::SeqCst);
            if pass < n as u64 || left - pass == 0 {
                // Out of budget: pass what it allows, then cut every connection open now.
                n = pass as usize;
                up.budget.store(u64::MAX, Ordering::SeqCst);
                held.extend_from_slice(&buf[..n]);
                let _ = to.write_all(&held).await;
                cut.cuts.fetch_add(1, Ordering::SeqCst);
                return std::future::pending().await;
            }
        }
        held.extend_from_slice(&buf[..n]);
        let mut ready = header_left.min(held.len());
        header_left -= ready;
        while let Some((len, publish)) = frame(&held[ready..]) {
            if publish && up.trap.swap(false, Ordering::SeqCst) {
                let _ = to.write_all(&held[..ready]).await;
                // Close both ways, as a broken network would: the broker sees the
                // connection go, and the client loses it before any confirm.
                let _ = to.shutdown().await;
                if let Some(up) = upstream {
                    let _ = up.close.send(());
                }
                return;
            }
            if held.len() - ready < len {
                break;
            }
            ready += len;
        }
        if to.write_all(&held[..ready]).await.is_err() {
            return;
        }
        held.drain(..ready);
    }
}
