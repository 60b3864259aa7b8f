//! Chains: jobs that run one after another, each once the one before it
//! succeeded, a value handed along from each step to the next.
//!
//! The steps after the running one travel with it, in its `x-chain` header
//! (MessagePack: the chain's id, the step's place, and each step still to
//! run, encoded whole at enqueue); the value the step before handed on is in
//! `x-chain-input`. A worker that runs a step to success publishes the next
//! step with the rest of the chain, waits for the broker's confirm, and only
//! then acks the step: a crash in between runs the step again (at-least-once),
//! and never loses the rest. A step that goes dead keeps its headers in
//! `<queue>.dead`, so that retrying it continues the chain from there.
//!
//! A content header must fit in one frame (128 KiB by default): a chain whose
//! steps after the first encode to more than [`MAX_CHAIN_BYTES`] is refused
//! at enqueue ([`Error::ChainTooLarge`]), and a step whose output encodes to
//! more than [`MAX_STEP_OUTPUT`] goes dead (pass a key to what it stored instead).

use std::future::Future;
use std::marker::PhantomData;

use amqprs::{BasicProperties, ByteArray, FieldTable, FieldValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::headers;
use crate::destination::{Destination, JobRoute};
use crate::message::Message;
use crate::testing::EnqueuedJob;
use crate::window::{One, Stopped};
use crate::{codec, Client, Error, Job, JobContext, JobError, JobId};

/// The most bytes the steps after a chain's first may take, encoded (the
/// `x-chain` header of the first step). With [`MAX_STEP_OUTPUT`] and the
/// failure headers of a dead step, a step's headers stay within one frame.
pub const MAX_CHAIN_BYTES: usize = 48 << 10;

/// The most bytes a step's output may take, encoded, to be handed to the next step.
pub const MAX_STEP_OUTPUT: usize = 32 << 10;

/// A job that takes a value from the step before it in a chain and hands one
/// to the step after: declare it with `#[job(step)]` (instead of `Perform`).
///
/// ```
/// use jobs_core::prelude::*;
///
/// #[derive(Serialize, Deserialize, Job)]
/// #[job(step, queue = "images")]
/// struct Resize { path: String }
///
/// impl Step for Resize {
///     type Input = ();
///     type Output = String; // where the resized image is
///     async fn run(self, _input: (), _ctx: JobContext) -> Result<String, JobError> {
///         Ok(format!("{}.small", self.path))
///     }
/// }
///
/// #[derive(Serialize, Deserialize, Job)]
/// #[job(step, queue = "images")]
/// struct Upload { bucket: String }
///
/// impl Step for Upload {
///     type Input = String; // the output of the step before
///     type Output = ();
///     async fn run(self, path: String, _ctx: JobContext) -> Result<(), JobError> {
///         println!("upload {path} to {}", self.bucket);
///         Ok(())
///     }
/// }
///
/// let chain = chain![Resize { path: "cat.jpg".into() }, Upload { bucket: "photos".into() }];
/// # let _ = chain;
/// ```
///
/// A `Perform` job is a step too: it takes `()` and hands on `()`. The
/// compiler refuses a chain whose step does not take what the one before hands on:
///
/// ```compile_fail
/// # use jobs_core::prelude::*;
/// # #[derive(Serialize, Deserialize, Job)]
/// # #[job(step)]
/// # struct Resize { path: String }
/// # impl Step for Resize {
/// #     type Input = ();
/// #     type Output = String;
/// #     async fn run(self, _: (), _: JobContext) -> Result<String, JobError> { Ok(self.path) }
/// # }
/// #[derive(Serialize, Deserialize, Job)]
/// #[job(step)]
/// struct Count;
///
/// impl Step for Count {
///     type Input = u64;
///     type Output = ();
///     async fn run(self, _n: u64, _: JobContext) -> Result<(), JobError> { Ok(()) }
/// }
///
/// let chain = chain![Resize { path: "cat.jpg".into() }, Count]; // a String is not a u64
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is a step (`#[job(step)]`) but does not implement `Step`",
    label = "this step has no `run`",
    note = "add `impl jobs_core::Step for {Self} {{ type Input = ...; type Output = ...; async fn run(self, input: Self::Input, ctx: jobs_core::JobContext) -> Result<Self::Output, jobs_core::JobError> {{ .. }} }}`"
)]
pub trait Step: Job {
    /// What the step before hands on (`()` for a first step).
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What this step hands to the next.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the step once with the value the step before handed on.
    fn run(self, input: Self::Input, ctx: JobContext) -> impl Future<Output = Result<Self::Output, JobError>> + Send;
}

/// What a chain's step takes (`Input`) and hands on: `#[derive(Job)]`
/// implements it for every job sent to a queue that is not a call.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot follow a step that hands on `{Input}`",
    label = "this step does not take `{Input}`",
    note = "a chain's first step takes `()`, and each next step takes what the one before hands on (its `Step::Output`; a `Perform` job takes and hands on `()`); calls (`#[job(rpc)]`) and jobs routed through an exchange cannot be steps"
)]
pub trait Follows<Input>: Job {
    /// What the step hands on.
    type Output;
}

/// One step still to run, encoded whole at enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    name: String,
    queue: String,
    id: String,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// The `x-chain` header: which chain, which step of how many, and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Rest {
    chain: String,
    at: u32,
    of: u32,
    steps: Vec<Pending>,
}

/// Jobs to run one after another, each once the one before it succeeded;
/// `Out` is what the last step hands on. Build it with [`chain!`](crate::chain!)
/// (or [`Chain::new`] and [`Chain::then`]).
#[must_use = "a chain does nothing until it is enqueued"]
pub struct Chain<Out> {
    first: (JobRoute<'static>, Option<&'static crate::registry::Registration>),
    steps: Vec<Pending>,
    error: Option<Error>,
    _out: PhantomData<fn() -> Out>,
}

impl<Out> std::fmt::Debug for Chain<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Chain").field("steps", &names).finish()
    }
}

fn pending<J: Job>(job: &J) -> Result<Pending, Error> {
    if J::UNIQUE_FOR.is_some() {
        return Err(Error::Unsupported("a unique job (unique_for) as a chain's step: enqueue it with enqueue()"));
    }
    if J::EXPIRES_IN.is_some() {
        return Err(Error::Unsupported("a job with a deadline (expires_in) as a chain's step: not carried yet"));
    }
    Ok(Pending {
        name: J::NAME.to_owned(),
        queue: J::QUEUE.to_owned(),
        id: JobId::new().to_string(),
        body: codec::encode(job)?,
    })
}

impl Chain<()> {
    /// A chain whose first step is `first`.
    pub fn new<J: Follows<()>>(first: J) -> Chain<J::Output> {
        let route = JobRoute::of::<J>();
        let (steps, error) = match pending(&first) {
            Ok(step) => (vec![step], None),
            Err(err) => (Vec::new(), Some(err)),
        };
        Chain { first: (route, J::__registration()), steps, error, _out: PhantomData }
    }
}

impl<Out> Chain<Out> {
    /// The chain with `next` run after its last step, taking what that step hands on.
    pub fn then<J: Follows<Out>>(mut self, next: J) -> Chain<J::Output> {
        match pending(&next) {
            Ok(step) => self.steps.push(step),
            Err(err) => {
                self.error.get_or_insert(err);
            }
        }
        Chain { first: self.first, steps: self.steps, error: self.error, _out: PhantomData }
    }

    /// How many steps the chain has.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the chain has no step (never: a chain starts with one).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Enqueues the chain's first step on the current client ([`Client::current`])
    /// and returns the ids of its steps, in order, once the broker confirmed
    /// the first. The first id is the chain's.
    ///
    /// # Errors
    /// [`Error::ChainTooLarge`] when the steps after the first encode to more
    /// than [`MAX_CHAIN_BYTES`]; otherwise as [`Client::enqueue`].
    pub async fn enqueue(self) -> Result<Vec<JobId>, Error> {
        Client::current()?.enqueue_chain(self).await
    }
}

/// A chain of jobs, each run once the one before it succeeded:
/// `chain![a, b, c]` is `Chain::new(a).then(b).then(c)`. Each step must take
/// what the one before hands on ([`Step`]); the compiler checks it.
///
/// ```no_run
/// use jobs_core::prelude::*;
///
/// #[derive(Serialize, Deserialize, Job)]
/// struct Resize { path: String }
/// #[derive(Serialize, Deserialize, Job)]
/// struct Notify { user: String }
/// # impl Perform for Resize { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
/// # impl Perform for Notify { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
///
/// # async fn demo() -> Result<(), Error> {
/// let ids = chain![Resize { path: "cat.jpg".into() }, Notify { user: "ann".into() }].enqueue().await?;
/// println!("chain {}", ids[0]);
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! chain {
    ($first:expr $(, $next:expr)* $(,)?) => {
        $crate::Chain::new($first)$(.then($next))*
    };
}

impl Client {
    /// Enqueues `chain`'s first step, the rest in its headers, and returns the
    /// ids of its steps once the broker confirmed the first. Every step's
    /// queue is declared first, so that no step waits on a queue not there.
    ///
    /// # Errors
    /// As [`Chain::enqueue`].
    pub async fn enqueue_chain<Out>(&self, chain: Chain<Out>) -> Result<Vec<JobId>, Error> {
        if let Some(err) = chain.error {
            return Err(err);
        }
        let Chain { first: (route, registration), mut steps, .. } = chain;
        let ids: Vec<JobId> = steps.iter().map(|s| JobId::from(s.id.as_str())).collect();
        let of = u32::try_from(steps.len()).unwrap_or(u32::MAX);
        let head = steps.remove(0);
        let rest = Rest { chain: head.id.clone(), at: 0, of, steps };
        let header = rmp_serde::to_vec_named(&rest)
            .map_err(|e| Error::Encode { job: route.name, source: crate::Cause::new(e) })?;
        if header.len() > MAX_CHAIN_BYTES {
            return Err(Error::ChainTooLarge { steps: of as usize, bytes: header.len(), limit: MAX_CHAIN_BYTES });
        }
        let topology = self.config().topology();
        let destination = Destination::resolve_for(route, &crate::EnqueueOptions::default(), topology)?;
        let mut queues: Vec<String> = Vec::new();
        for step in &rest.steps {
            Destination::to_queue(topology, &step.queue, None)?;
            if !queues.contains(&step.queue) {
                queues.push(step.queue.clone());
            }
        }
        if let Some(recorder) = self.recorder() {
            let job = EnqueuedJob::of(route.name, registration, ids[0].clone(), &destination, head.body)
                .in_chain(Some(header), None);
            recorder.record(job);
            return Ok(ids);
        }
        let message = Message::job(route.name, ids[0].clone(), head.body).header(headers::CHAIN, bytes(header));
        let config = self.config().clone();
        let declare = |session: std::sync::Arc<crate::session::Session>| {
            let (config, queues) = (config.clone(), queues.clone());
            async move { session.prepare_queues(&config, &queues).await }
        };
        let mut one = One { message: &message, destination: &destination, done: false };
        let (published, _): (_, Option<()>) = self.publish_source(&destination, declare, &mut one, false).await;
        published.map_err(Stopped::into_error)?;
        tracing::debug!(chain = %ids[0], steps = ids.len(), to = destination.target(), "chain enqueued");
        Ok(ids)
    }
}

/// A byte-array header (`x`, which RabbitMQ carries as it is). Its sizes are
/// within the limits above, far below the `u32::MAX` bytes an array may hold.
pub(crate) fn bytes(value: Vec<u8>) -> FieldValue {
    match ByteArray::try_from(value) {
        Ok(array) => FieldValue::x(array),
        Err(_) => FieldValue::V,
    }
}

/// A header as bytes: a byte array, or text (as a producer of another language may write it).
pub(crate) fn table_bytes(table: &FieldTable, name: &str) -> Option<Vec<u8>> {
    match table.get(&name.try_into().ok()?)? {
        FieldValue::x(array) => Some(Vec::from(array.clone())),
        FieldValue::S(text) => Some(text.as_ref().as_bytes().to_vec()),
        _ => None,
    }
}

/// A message's header `name` as bytes (`x-chain`, `x-chain-input`).
pub fn header_bytes(props: &BasicProperties, name: &str) -> Option<Vec<u8>> {
    table_bytes(props.headers()?, name)
}

/// Where a step stands in its chain, as its `x-chain` header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainPlace {
    /// The chain's id (its first step's).
    #[serde(serialize_with = "as_text")]
    pub chain: JobId,
    /// The step's place, from 1.
    pub step: u32,
    /// How many steps the chain has.
    pub of: u32,
    /// The job types of the steps still to run after it, in order.
    pub next: Vec<String>,
}

fn as_text<S: serde::Serializer>(id: &JobId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(id.as_str())
}

/// A step's `x-chain` header, decoded: where it stands, and what runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHeader(Rest);

impl ChainHeader {
    /// Decodes an `x-chain` header.
    ///
    /// # Errors
    /// The decoder's words, when it is not a chain's header.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let rest: Rest = codec::decode(bytes).map_err(|e| format!("the `x-chain` header does not decode: {e}"))?;
        if rest.at >= rest.of || rest.steps.len() as u64 + u64::from(rest.at) + 1 != u64::from(rest.of) {
            return Err(format!(
                "the `x-chain` header says step {} of {} with {} after it",
                u64::from(rest.at) + 1,
                rest.of,
                rest.steps.len()
            ));
        }
        if let Some(step) = rest.steps.iter().find(|s| s.name.is_empty() || s.id.is_empty()) {
            return Err(format!("the `x-chain` header has a step without a type or an id (queue `{}`)", step.queue));
        }
        Ok(ChainHeader(rest))
    }

    /// Where the step stands.
    pub fn place(&self) -> ChainPlace {
        ChainPlace {
            chain: JobId::from(self.0.chain.as_str()),
            step: self.0.at + 1,
            of: self.0.of,
            next: self.0.steps.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// The step after this one, given what this one handed on (`output`,
    /// encoded); `None` after the last step.
    ///
    /// # Errors
    /// A reason to give the step's dead copy: its output is over
    /// [`MAX_STEP_OUTPUT`], or the next step's queue is not a queue name.
    pub fn next(&self, output: Option<Vec<u8>>) -> Result<Option<NextStep>, String> {
        let Some((step, after)) = self.0.steps.split_first() else {
            return Ok(None);
        };
        if let Some(output) = output.as_ref().filter(|o| o.len() > MAX_STEP_OUTPUT) {
            return Err(format!(
                "its output is {} bytes encoded, over the {MAX_STEP_OUTPUT} a chain hands to its next step; store it elsewhere and hand on a key",
                output.len()
            ));
        }
        crate::topology::validate_queue_name(&step.queue)
            .map_err(|e| format!("the chain's next step `{}` names a bad queue: {e}", step.name))?;
        let rest = Rest { chain: self.0.chain.clone(), at: self.0.at + 1, of: self.0.of, steps: after.to_vec() };
        let header = rmp_serde::to_vec_named(&rest).map_err(|e| e.to_string())?;
        Ok(Some(NextStep {
            name: step.name.clone(),
            queue: step.queue.clone(),
            id: JobId::from(step.id.as_str()),
            body: step.body.clone(),
            header,
            input: output,
        }))
    }
}

/// The step a worker publishes after the one it ran succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextStep {
    /// Its job type.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Its id, given at enqueue.
    pub id: JobId,
    body: Vec<u8>,
    header: Vec<u8>,
    input: Option<Vec<u8>>,
}

impl NextStep {
    /// The step as a message: a first attempt, the rest of the chain and its input in its headers.
    pub fn message(&self) -> Message {
        let mut message = Message::job(&self.name, self.id.clone(), self.body.clone())
            .header(headers::CHAIN, bytes(self.header.clone()));
        if let Some(input) = &self.input {
            message = message.header(headers::CHAIN_INPUT, bytes(input.clone()));
        }
        message
    }

    /// Where it goes: its queue, now.
    pub fn destination(&self) -> Destination {
        Destination::direct(&self.queue)
    }

    /// The step as the testing mode records it.
    pub(crate) fn recorded(&self) -> EnqueuedJob {
        EnqueuedJob::of(&self.name, None, self.id.clone(), &self.destination(), self.body.clone())
            .in_chain(Some(self.header.clone()), self.input.clone())
    }
}

/// Decodes a step's input: what the step before handed on, or nothing
/// (`()`, `None`) for a first step or one after a `Perform` job.
pub(crate) fn decode_input<T: DeserializeOwned>(input: Option<&[u8]>) -> Result<T, rmp_serde::decode::Error> {
    const NIL: &[u8] = &[0xc0];
    codec::decode(input.unwrap_or(NIL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> Pending {
        Pending { name: name.into(), queue: "q".into(), id: format!("id-{name}"), body: vec![0x90] }
    }

    #[test]
    fn a_header_hands_on_the_next_step_and_the_rest() {
        let header = ChainHeader(Rest { chain: "c".into(), at: 0, of: 3, steps: vec![step("B"), step("C")] });
        let place = header.place();
        assert_eq!((place.chain.as_str(), place.step, place.of, place.next.len()), ("c", 1, 3, 2));
        let next = header.next(Some(vec![1])).unwrap().unwrap();
        assert_eq!((next.name.as_str(), next.id.as_str(), next.input.as_deref()), ("B", "id-B", Some(&[1u8][..])));
        let after = ChainHeader::decode(&next.header).unwrap();
        assert_eq!(after.place(), ChainPlace { chain: "c".into(), step: 2, of: 3, next: vec!["C".into()] });
        let last = ChainHeader::decode(&after.next(None).unwrap().unwrap().header).unwrap();
        assert_eq!(last.place().step, 3);
        assert_eq!(last.next(None), Ok(None), "after the last step, nothing");
    }

    #[test]
    fn an_output_too_large_to_hand_on_is_a_reason() {
        let header = ChainHeader(Rest { chain: "c".into(), at: 0, of: 2, steps: vec![step("B")] });
        let err = header.next(Some(vec![0; MAX_STEP_OUTPUT + 1])).unwrap_err();
        assert!(err.contains("over the 32768"), "{err}");
    }

    #[test]
    fn garbage_and_inconsistent_headers_are_refused_with_words() {
        assert!(ChainHeader::decode(b"garbage").unwrap_err().contains("does not decode"));
        let lying = Rest { chain: "c".into(), at: 2, of: 2, steps: vec![] };
        let err = ChainHeader::decode(&rmp_serde::to_vec_named(&lying).unwrap()).unwrap_err();
        assert!(err.contains("step 3 of 2"), "{err}");
        let nameless = Rest { chain: "c".into(), at: 0, of: 2, steps: vec![step("")] };
        assert!(ChainHeader::decode(&rmp_serde::to_vec_named(&nameless).unwrap()).is_err());
    }

    #[test]
    fn a_missing_input_is_unit_or_none() {
        assert!(decode_input::<()>(None).is_ok());
        assert_eq!(decode_input::<Option<u8>>(None).unwrap(), None);
        assert!(decode_input::<String>(None).is_err());
        assert_eq!(decode_input::<String>(Some(&rmp_serde::to_vec("x").unwrap())).unwrap(), "x");
    }
}

#[cfg(test)]
mod testing_mode {
    use crate::prelude::*;

    #[derive(Serialize, Deserialize, Job)]
    #[job(step, queue = "chain-unit-a")]
    struct Measure {
        text: String,
    }

    impl Step for Measure {
        type Input = ();
        type Output = usize;
        async fn run(self, (): (), _ctx: JobContext) -> Result<usize, JobError> {
            Ok(self.text.len())
        }
    }

    #[derive(Serialize, Deserialize, Job)]
    #[job(step, queue = "chain-unit-b")]
    struct Double;

    impl Step for Double {
        type Input = usize;
        type Output = String;
        async fn run(self, n: usize, ctx: JobContext) -> Result<String, JobError> {
            let place = ctx.chain().ok_or_else(|| JobError::fatal("not in a chain"))?;
            Ok(format!("{} (step {} of {})", n * 2, place.step, place.of))
        }
    }

    #[derive(Serialize, Deserialize, Job)]
    #[job(step, queue = "chain-unit-a")]
    struct Print;

    impl Step for Print {
        type Input = String;
        type Output = ();
        async fn run(self, text: String, _ctx: JobContext) -> Result<(), JobError> {
            if text == "10 (step 2 of 3)" {
                Ok(())
            } else {
                Err(JobError::fatal(format!("got {text}")))
            }
        }
    }

    #[tokio::test]
    async fn the_testing_mode_runs_a_chain_step_by_step_handing_values_on() {
        let test = TestClient::new();
        let ids = test.scope(chain![Measure { text: "hello".into() }, Double, Print].enqueue()).await.unwrap();
        assert_eq!(ids.len(), 3);
        let queued = test.enqueued();
        assert_eq!(queued.len(), 1, "only the first step is enqueued");
        assert_eq!(
            queued[0].chain().map(|p| (p.step, p.of, p.next)),
            Some((1, 3, vec!["Double".into(), "Print".into()]))
        );
        assert_eq!(test.run_all().await.unwrap(), 3);
        let performed: Vec<_> = test.performed().iter().map(|j| (j.name.clone(), j.id.clone())).collect();
        assert_eq!(
            performed,
            vec![
                ("Measure".into(), ids[0].clone()),
                ("Double".into(), ids[1].clone()),
                ("Print".into(), ids[2].clone())
            ]
        );
    }
}
