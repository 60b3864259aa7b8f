//! # jobs-test
//!
//! Support for this workspace's integration tests (not published): every test
//! talks to a real RabbitMQ, on the vhost of the run named by `AMQP_URL`
//! (`bash deploy/test.sh` makes one), and fails, saying how to start one, when
//! none answers; it never skips.
//!
//! Modules, one concept each:
//! - `broker`: the URL and config, raw connections, queue counts, unique names;
//! - `cleanup`: [`Cleanup`], deleting a test's queues and exchanges on every path;
//! - `wait`: [`wait_until`], a bounded wait on an event;
//! - `http`: [`http_get`], plain HTTP on loopback;
//! - `cluster`: [`TestCluster`], three nodes of a test's own, joined;
//! - `node`: [`TestNode`], a broker node of a test's own, for tests that stop one;
//! - `user`: [`TestUser`], a user with permissions of a test's own;
//! - `vhost`: [`TestVhost`], a fresh vhost of a test's own;
//! - `relay`: [`Relay`], a TCP relay that can silence the connections it carries;
//! - `worker`: [`Fixture`], [`RunningWorker`], a worker in the test's process;
//! - `process`: [`Process`], a binary run as a child process, its output collected.
#![allow(missing_docs, clippy::unwrap_used)]

mod broker;
mod cleanup;
mod cluster;
mod http;
mod node;
mod process;
mod relay;
mod user;
mod vhost;
mod wait;
mod worker;

pub use broker::*;
pub use cleanup::Cleanup;
pub use cluster::TestCluster;
pub use http::{http_get, http_request, HttpResponse};
pub use jobs_core::plumbing::percent_encode;
pub use node::{spare_port, TestNode};
pub use process::{run, run_on, Process};
pub use relay::Relay;
pub use user::TestUser;
pub use vhost::TestVhost;
pub use wait::wait_until;
pub use worker::{init_logs, spawn_built, spawn_with, spawn_worker, worker_config, Fixture, RunningWorker};

/// Raw AMQP, for tests that act as another client would.
pub use jobs_core::plumbing::amqprs;
