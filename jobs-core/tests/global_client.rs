//! `job.enqueue()` on the process-wide client: an error before it is set, then
//! the job lands in its type's queue.
#![allow(clippy::unwrap_used)]

use jobs_core::{Client, Error, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "test.global-client")]
struct Ping {
    n: u32,
}

impl Perform for Ping {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn enqueue_uses_the_global_client_once_it_is_set() {
    let err = Ping { n: 1 }.enqueue().await.unwrap_err();
    assert!(matches!(err, Error::NoGlobalClient), "{err:?}");
    assert!(err.to_string().contains("init_global_from_config") && err.to_string().contains("Client::scope"), "{err}");

    // The type's queue has a fixed name: on a vhost of its own, gone with it.
    let vhost = TestVhost::create("global-client").await;
    let raw = raw_connection_to(&vhost.url()).await;
    Client::init_global(Client::new(config_for(&vhost.url()))).unwrap();
    assert!(matches!(Client::init_global(Client::new(amqp_config())), Err(Error::GlobalClientAlreadySet)));
    let id = Ping { n: 2 }.enqueue().await.unwrap();
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, Ping::QUEUE).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
}
