//! Calls (tutorial 6, RPC): a job published with `reply_to` set to RabbitMQ's
//! direct reply-to, and its answer awaited on the channel that published it.

use std::sync::Arc;
use std::time::Duration;

use crate::codec;
use crate::destination::Destination;
use crate::error::Cause;
use crate::message::Message;
use crate::plumbing::ReplyStatus;
use crate::replies::DIRECT_REPLY_TO;
use crate::session::Session;
use crate::testing::{self, EnqueuedJob};
use crate::window::{One, Stopped};
use serde::de::DeserializeOwned;

use crate::{Client, EnqueueOptions, Error, FailureKind, Job, JobId, Respond};

impl Client {
    /// Enqueues an RPC job and waits (at most `amqp.call_timeout`) for its answer,
    /// which comes back over RabbitMQ's direct reply-to. Many calls may be in
    /// flight on one client; an answer that comes after its caller gave up is dropped.
    ///
    /// # Errors
    /// [`Error::CallFailed`] with the worker's error, [`Error::CallTimeout`],
    /// [`Error::BadReply`], or as [`Client::enqueue`].
    pub async fn call<J: Respond>(&self, job: &J) -> Result<J::Output, Error> {
        self.call_with(job, self.config().call_timeout).await
    }

    /// [`Client::call`] with its own timeout.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_with<J: Respond>(&self, job: &J, timeout: Duration) -> Result<J::Output, Error> {
        let destination = Destination::resolve::<J>(&EnqueueOptions::default(), self.config().topology())?;
        self.call_to::<J, J::Output>(job, timeout, destination, false).await
    }

    /// [`Client::call_with`] straight to `destination`, which the broker drops
    /// unread once its caller gave up (it is not run later by a worker that starts).
    pub(crate) async fn call_expiring<J: Job, O: DeserializeOwned>(
        &self,
        job: &J,
        timeout: Duration,
        destination: Destination,
    ) -> Result<O, Error> {
        self.call_to::<J, O>(job, timeout, destination, true).await
    }

    /// A call of `job`, answered with an `O`.
    async fn call_to<J: Job, O: DeserializeOwned>(
        &self,
        job: &J,
        timeout: Duration,
        destination: Destination,
        expire: bool,
    ) -> Result<O, Error> {
        if J::UNIQUE_FOR.is_some() {
            return Err(Error::Unsupported("a call of a unique job (unique_for): enqueue it with enqueue()"));
        }
        let id = JobId::new();
        let body = codec::encode(job)?;
        if let Some(recorder) = self.recorder() {
            // The testing mode answers calls at once, running the job inline.
            let enqueued = EnqueuedJob::new::<J>(id.clone(), &destination, body);
            return testing::answer(id, recorder.run(self, &enqueued).await?);
        }
        // The answer comes on the channel that published the call: a call
        // whose connection went is published again, and waits on the new one.
        let listen = |session: Arc<Session>| {
            let id = id.clone();
            async move {
                let replies = session.replies().await?;
                let answer = replies.expect(&id);
                Ok((replies, answer))
            }
        };
        // Its caller waits `timeout`: a worker that takes it later neither runs nor answers it.
        let mut message = Message::job(J::NAME, id.clone(), body).reply_to(DIRECT_REPLY_TO);
        if let Some(deadline) = std::time::SystemTime::now().checked_add(timeout) {
            message = message.expires_at(deadline);
        }
        if expire {
            message = message.expires(timeout);
        }
        let mut one = One { message: &message, destination: &destination, done: false };
        let (published, listening) = self.publish_source(&destination, listen, &mut one, false).await;
        let Some((replies, answer)) = listening else {
            return Err(published
                .err()
                .map(Stopped::into_error)
                .unwrap_or_else(|| Error::Closed { id, reason: "no connection to wait for the answer on".into() }));
        };
        if let Err(stopped) = published {
            replies.forget(&id);
            return Err(stopped.into_error());
        }
        let (props, body) = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                return Err(Error::Closed { id, reason: "the connection closed before the answer came".into() })
            }
            Err(_) => {
                replies.forget(&id);
                return Err(Error::CallTimeout { id, after: timeout });
            }
        };
        let status = codec::header_str(&props, codec::headers::REPLY_STATUS).and_then(ReplyStatus::parse);
        match status {
            Some(ReplyStatus::Ok) => {
                codec::decode(&body).map_err(|source| Error::BadReply { id, source: Cause::new(source) })
            }
            Some(ReplyStatus::Failed(kind)) => {
                let error: String = codec::decode(&body).unwrap_or_else(|_| "(unreadable error)".into());
                Err(Error::CallFailed { id, kind, error })
            }
            None => {
                let error: String = codec::decode(&body).unwrap_or_else(|_| "(unreadable error)".into());
                Err(Error::CallFailed { id, kind: FailureKind::Failed, error })
            }
        }
    }
}
