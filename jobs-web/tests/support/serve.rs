//! A dashboard served on a spare port of 127.0.0.1, for the tests of this
//! crate, and dead jobs put straight into a dead queue.

use std::time::Duration;

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::{Destination, Message, Publisher};
use jobs_web::{Dashboard, WebConfig};
use tokio::task::JoinHandle;

/// A dashboard of the broker of `amqp`, started and served.
pub(crate) struct Served {
    pub(crate) port: u16,
    /// The server and the dashboard's tasks: abort them to stop it.
    #[allow(dead_code)]
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Serves a dashboard of `amqp` with `web`, its router mounted at `prefix` (`""`: the root).
pub(crate) async fn serve(amqp: jobs_core::AmqpConfig, web: WebConfig, prefix: &str) -> Served {
    let dashboard = Dashboard::new(amqp, web).expect("a dashboard");
    let mut tasks = dashboard.start();
    let app = if prefix.is_empty() { dashboard.router() } else { axum::Router::new().nest(prefix, dashboard.router()) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a spare port");
    let port = listener.local_addr().expect("its address").port();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));
    Served { port, tasks }
}

/// Publishes `n` dead jobs to `<queue>.dead` (declared with its job queue),
/// the `i`-th made by `job(i)`, confirmed.
#[allow(dead_code)]
pub(crate) async fn fill_dead(raw: &Connection, queue: &str, n: usize, job: impl Fn(usize) -> Message) {
    let declarer = jobs_core::plumbing::topology::Declarer::open(raw).await.expect("a declarer");
    jobs_test::amqp_config().topology().declare_job_queue(&declarer, queue).await.expect("the queue declared");
    let publisher = Publisher::open(raw, Duration::from_secs(60)).await.expect("a publisher");
    let dead = Destination::dead(queue);
    for start in (0..n).step_by(10_000) {
        let messages = (start..(start + 10_000).min(n)).map(|i| job(i).into_outgoing(&dead)).collect();
        for result in publisher.publish_many(messages).await.expect("published") {
            result.expect("confirmed");
        }
    }
}
