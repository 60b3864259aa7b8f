//! A dead chain's step on the dashboard: its page says where it stands in
//! its chain and what a retry runs after it, the API gives the same, and
//! Retry sends it back with the rest of its chain, so the chain goes on.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;

use jobs_core::plumbing::amqprs::FieldValue;
use jobs_core::plumbing::{header_bytes, headers, ChainHeader, Message};
use jobs_core::JobId;
use jobs_test::*;
use jobs_web::WebConfig;
use serde::Serialize;
use serve::{fill_dead, serve};

/// An `x-chain` header as `docs/workflows.md` specifies it.
#[derive(Serialize)]
struct Rest {
    chain: &'static str,
    at: u32,
    of: u32,
    steps: Vec<Pending>,
}

#[derive(Serialize)]
struct Pending {
    name: &'static str,
    queue: String,
    id: &'static str,
    body: serde_bytes_like::Bytes,
}

/// MessagePack bytes (a `bin`), as a step's body travels.
mod serde_bytes_like {
    pub(crate) struct Bytes(pub(crate) Vec<u8>);

    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_step_shows_its_chain_and_retry_sends_the_rest_along() {
    let queue = unique("web-chains");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let rest = Rest {
        chain: "chain-1",
        at: 1,
        of: 3,
        steps: vec![Pending {
            name: "Notify",
            queue: queue.clone(),
            id: "step-3",
            body: serde_bytes_like::Bytes(vec![0x80]),
        }],
    };
    let header = rmp_serde::to_vec_named(&rest).unwrap();
    let header_value = FieldValue::x(header.clone().try_into().unwrap());
    fill_dead(&raw, &queue, 1, |_| {
        Message::job("Upload", JobId::from("step-2"), vec![0x80])
            .header(headers::CHAIN, header_value.clone())
            .header(headers::QUEUE, FieldValue::from(queue.as_str()))
            .header(headers::ERROR_KIND, FieldValue::from("fatal"))
    })
    .await;

    let port = serve(amqp_config(), WebConfig::default(), "").await.port;
    let (status, page) = http_get(port, &format!("/dead/{queue}/job/step-2"));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("step 2 of 3 of chain <code>chain-1</code>; Retry runs it, then Notify"),
        "the page says where the step stands: {page}"
    );
    let (status, body) = http_get(port, &format!("/api/dead/{queue}/step-2"));
    assert_eq!(status, 200, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["chain"], serde_json::json!({ "chain": "chain-1", "step": 2, "of": 3, "next": ["Notify"] }));

    let page = http_request(port, "GET", &format!("/dead/{queue}"), &[], None);
    let cookie = page.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let retry = format!("/dead/{queue}/job/step-2/retry");
    let done = http_request(port, "POST", &retry, &[("Cookie", &cookie)], Some(&format!("csrf={token}")));
    assert_eq!(done.status, 303, "{}", done.body);
    wait_until("the step back in its queue", std::time::Duration::from_secs(10), || async {
        try_counts(&raw, &queue).await.is_some_and(|c| c.0 == 1)
    })
    .await;
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &queue).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some("step-2"));
    let carried = header_bytes(&props, headers::CHAIN).expect("the retried step carries its chain");
    assert_eq!(carried, header, "the rest of the chain, as it was");
    assert_eq!(ChainHeader::decode(&carried).unwrap().place().next, ["Notify"]);
}
