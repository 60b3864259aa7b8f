//! Cleaning up what a test made, on every path out of it.

use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{ExchangeDeleteArguments, QueueDeleteArguments};

/// Deletes queues (each with its `<queue>.dead` twin) and exchanges when
/// dropped: at the end of the test, and when an assertion fails half-way.
/// Bounded (10 s) and it never panics; the run's vhost goes at the end anyway.
#[derive(Debug, Default)]
pub struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    /// Deletes these queues and their `.dead` twins.
    pub fn queues(queues: &[&str]) -> Self {
        Cleanup { queues: queues.iter().map(|q| q.to_string()).collect(), exchanges: Vec::new() }
    }

    /// Deletes these exchanges (and the `<exchange>.dead` queues) too.
    #[must_use]
    pub fn exchanges(mut self, exchanges: &[&str]) -> Self {
        self.exchanges.extend(exchanges.iter().map(|e| e.to_string()));
        self.queues.extend(exchanges.iter().map(|e| e.to_string()));
        self
    }

    async fn run(queues: Vec<String>, exchanges: Vec<String>) -> Option<()> {
        let url = std::env::var("AMQP_URL").ok()?;
        let config = jobs_core::AmqpConfig::with_url(&url).ok()?;
        let connection = jobs_core::plumbing::connect(&config, "jobs-test-cleanup").await.ok()?;
        let channel = connection.open_channel(None).await.ok()?;
        for queue in &queues {
            for name in [queue.clone(), format!("{queue}.dead")] {
                let _ = channel.queue_delete(QueueDeleteArguments::new(&name)).await;
            }
        }
        for exchange in &exchanges {
            let _ = channel.exchange_delete(ExchangeDeleteArguments::new(exchange)).await;
        }
        let _ = channel.close().await;
        jobs_core::plumbing::close_connection(connection).await;
        Some(())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.queues.is_empty() && self.exchanges.is_empty() {
            return;
        }
        let (queues, exchanges) = (std::mem::take(&mut self.queues), std::mem::take(&mut self.exchanges));
        // A thread of its own with its own runtime: drop may run inside the
        // test's runtime, or while it unwinds.
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            // The timeout is made inside the runtime: it needs its timer.
            let _ = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), Self::run(queues, exchanges)).await });
        });
        let _ = done.join();
    }
}
