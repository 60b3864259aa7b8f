//! The record of batches and what it adds up to: the records appended to the
//! stream `jobs.batches` (a batch's definition, its members, that it is
//! sealed, its members' outcomes, the callbacks fired, snapshots), and the
//! [`Book`] that folds them into each batch's sets.
//!
//! The fold is a union of sets, so it gives the same book whatever the order
//! of the records and however often one is read: a job that ran twice
//! counts once, a snapshot read beside the records it covers changes
//! nothing, and a new aggregator can rebuild from any snapshot and every
//! record since. A member's success outweighs its death (a dead job retried
//! to success is a success).
//!
//! A batch is complete once it is sealed and every member has ended
//! (succeeded or dead); a success once every member succeeded. It leaves the
//! book once its success is fired (it is kept in [`Book::recent`]), or when
//! nothing has touched it for [`FORGET_AFTER`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a batch that nothing touches stays in the book (and in
/// snapshots): a batch whose dead jobs are never retried is forgotten then.
pub const FORGET_AFTER: Duration = Duration::from_secs(30 * 86_400);

/// How many finished batches [`Book::recent`] keeps.
pub const RECENT: usize = 50;

/// A callback of a batch: a job encoded whole at enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// Its job type.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// The job, MessagePack.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Which callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    /// Every member ended (succeeded or dead).
    Complete,
    /// Every member succeeded.
    Success,
}

impl CallbackKind {
    /// `complete` or `success`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackKind::Complete => "complete",
            CallbackKind::Success => "success",
        }
    }
}

/// One record of the stream `jobs.batches`; its kind is the message's `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A batch's definition (kind `open`).
    Open(Definition),
    /// Members of a batch (kind `members`): at enqueue, or child jobs added by `parent`.
    Members {
        /// The batch.
        batch: String,
        /// The members' job ids.
        ids: Vec<String>,
        /// The member that added them, for child jobs.
        parent: Option<String>,
    },
    /// Every member of the batch's enqueue is recorded (kind `sealed`).
    Sealed {
        /// The batch.
        batch: String,
    },
    /// Members that ended (kind `outcomes`).
    Outcomes(Vec<Outcome>),
    /// A callback fired, confirmed (kind `fired`).
    Fired {
        /// The batch.
        batch: String,
        /// Which.
        kind: CallbackKind,
    },
    /// Part of a snapshot: open batches as the aggregator knew them (kind `snapshot`).
    SnapshotPart {
        /// The snapshot's id.
        snapshot: String,
        /// Batches.
        states: Vec<State>,
    },
    /// A snapshot's end (kind `snapshot-done`): its parts, and the stream
    /// offset of the last record it covers (every record up to it is folded in).
    SnapshotDone {
        /// The snapshot's id.
        snapshot: String,
        /// How many parts it has.
        parts: u32,
        /// The last offset it covers.
        covered: u64,
    },
}

impl Record {
    /// The record's kind (its message `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Open(_) => "open",
            Record::Members { .. } => "members",
            Record::Sealed { .. } => "sealed",
            Record::Outcomes(_) => "outcomes",
            Record::Fired { .. } => "fired",
            Record::SnapshotPart { .. } => "snapshot",
            Record::SnapshotDone { .. } => "snapshot-done",
        }
    }

    /// The record's body.
    ///
    /// # Errors
    /// When it cannot be encoded (never, for these types).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// A record read back; `None` for another kind of message (a marker) or garbage.
    pub fn decode(body: &[u8]) -> Option<Self> {
        rmp_serde::from_slice(body).ok()
    }
}

/// That a member ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The batch.
    pub batch: String,
    /// The member's job id.
    pub id: String,
    /// It succeeded (else it went dead).
    pub ok: bool,
    /// The queue it ran from (where a dead one waits, in `<queue>.dead`).
    #[serde(default)]
    pub queue: String,
}

/// What a batch is: set once, at enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// The batch id.
    pub batch: String,
    /// What it is for, as the app said.
    pub description: Option<String>,
    /// When it was enqueued, Unix milliseconds.
    pub at_ms: u64,
    /// Run once every member ended.
    pub on_complete: Option<Callback>,
    /// Run once every member succeeded.
    pub on_success: Option<Callback>,
}

/// A batch as the book knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Its definition, once read (a batch whose definition is older than
    /// what was read is not acted on).
    pub definition: Option<Definition>,
    /// Every member recorded is.
    pub sealed: bool,
    /// Its members' job ids.
    pub members: HashSet<String>,
    /// Outcomes recorded, by job id (`true`: succeeded), members or not yet.
    pub outcomes: HashMap<String, bool>,
    /// The queue of each member that went dead (its dead copy is in `<queue>.dead`).
    #[serde(default)]
    pub dead_in: HashMap<String, String>,
    /// Callbacks fired and confirmed.
    pub fired: Vec<CallbackKind>,
    /// When a record last touched it, Unix milliseconds.
    pub touched_ms: u64,
    /// Its counts, kept as members and outcomes come (not recorded: made
    /// again as a snapshot is read).
    #[serde(skip)]
    tally: Counts,
}

impl State {
    fn new(now_ms: u64) -> Self {
        State {
            definition: None,
            sealed: false,
            members: HashSet::new(),
            outcomes: HashMap::new(),
            dead_in: HashMap::new(),
            fired: Vec::new(),
            touched_ms: now_ms,
            tally: Counts::default(),
        }
    }

    /// Its counts now (kept as records come: no walk of its members).
    pub fn counts(&self) -> Counts {
        self.tally
    }

    /// Counts it all again (a state read from a snapshot).
    fn recount(&mut self) {
        let mut counts = Counts { total: self.members.len() as u64, ..Counts::default() };
        for id in &self.members {
            match self.outcomes.get(id) {
                Some(true) => counts.succeeded += 1,
                Some(false) => counts.dead += 1,
                None => {}
            }
        }
        self.tally = counts;
    }

    fn add_member(&mut self, id: String) {
        let ended = self.outcomes.get(&id).copied();
        if self.members.insert(id) {
            self.tally.total += 1;
            match ended {
                Some(true) => self.tally.succeeded += 1,
                Some(false) => self.tally.dead += 1,
                None => {}
            }
        }
    }

    /// The dead members' ids, sorted, at most `max`.
    pub fn dead_ids(&self, max: usize) -> Vec<String> {
        self.dead(max).into_iter().map(|(id, _)| id).collect()
    }

    /// The dead members' ids and queues, sorted by id, at most `max` (a
    /// walk of the dead, not of every member).
    pub fn dead(&self, max: usize) -> Vec<(String, Option<String>)> {
        let mut dead: Vec<(String, Option<String>)> = self
            .dead_in
            .iter()
            .filter(|(id, _)| self.members.contains(*id) && self.outcomes.get(*id) == Some(&false))
            .map(|(id, queue)| (id.clone(), Some(queue.clone()).filter(|q| !q.is_empty())))
            .collect();
        dead.sort();
        dead.truncate(max);
        dead
    }

    /// The callbacks due now: complete once sealed and every member ended,
    /// success once every member succeeded (complete first); each at most once.
    pub fn due(&self) -> Vec<CallbackKind> {
        if self.definition.is_none() || !self.sealed {
            return Vec::new();
        }
        let counts = self.counts();
        let mut due = Vec::new();
        if counts.succeeded + counts.dead == counts.total && !self.fired.contains(&CallbackKind::Complete) {
            due.push(CallbackKind::Complete);
        }
        if counts.succeeded == counts.total && !self.fired.contains(&CallbackKind::Success) {
            due.push(CallbackKind::Success);
        }
        due
    }

    /// Whether it is done with: its complete and its success fired.
    pub fn finished(&self) -> bool {
        self.fired.contains(&CallbackKind::Complete) && self.fired.contains(&CallbackKind::Success)
    }

    fn merge(&mut self, other: State) {
        if self.definition.is_none() {
            self.definition = other.definition;
        }
        self.sealed |= other.sealed;
        for (id, ok) in other.outcomes {
            self.outcome(id, ok);
        }
        for id in other.members {
            self.add_member(id);
        }
        for (id, queue) in other.dead_in {
            self.dead_in.entry(id).or_insert(queue);
        }
        for kind in other.fired {
            if !self.fired.contains(&kind) {
                self.fired.push(kind);
            }
        }
        self.touched_ms = self.touched_ms.max(other.touched_ms);
    }

    fn outcome(&mut self, id: String, ok: bool) {
        let before = self.outcomes.get(&id).copied();
        let after = before.map_or(ok, |b| b || ok);
        if before == Some(after) {
            return;
        }
        if self.members.contains(&id) {
            if before == Some(false) {
                self.tally.dead -= 1;
            }
            *(if after { &mut self.tally.succeeded } else { &mut self.tally.dead }) += 1;
        }
        self.outcomes.insert(id, after);
    }
}

/// A batch's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Members in all (child jobs included).
    pub total: u64,
    /// Members that succeeded.
    pub succeeded: u64,
    /// Members that went dead (and did not succeed since).
    pub dead: u64,
}

impl Counts {
    /// Where a batch still open is: `enqueueing` (not sealed: members may
    /// still come), `running`, or `complete` (every member ended, some dead:
    /// `success` waits for them to be retried to success).
    pub fn phase(&self, sealed: bool) -> &'static str {
        match (sealed, self.succeeded + self.dead >= self.total) {
            (false, _) => "enqueueing",
            (true, false) => "running",
            (true, true) => "complete",
        }
    }
}

/// A finished batch, as [`Book::recent`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The batch id.
    pub batch: String,
    /// Its description.
    pub description: Option<String>,
    /// Its counts at the end.
    pub counts: Counts,
    /// When it finished, Unix milliseconds.
    pub at_ms: u64,
}

/// Every batch the records tell of, folded.
#[derive(Debug, Default)]
pub struct Book {
    batches: HashMap<String, State>,
    recent: VecDeque<Finished>,
}

impl Book {
    /// An empty book.
    pub fn new() -> Self {
        Book::default()
    }

    /// Folds `record` in (read at `now_ms`); returns the batches it touched.
    pub fn apply(&mut self, record: Record, now_ms: u64) -> Vec<String> {
        match record {
            Record::Open(definition) => {
                let batch = definition.batch.clone();
                let state = touch(&mut self.batches, &batch, now_ms);
                if state.definition.is_none() {
                    state.definition = Some(definition);
                }
                vec![batch]
            }
            Record::Members { batch, ids, .. } => {
                let state = touch(&mut self.batches, &batch, now_ms);
                for id in ids {
                    state.add_member(id);
                }
                vec![batch]
            }
            Record::Sealed { batch } => {
                touch(&mut self.batches, &batch, now_ms).sealed = true;
                vec![batch]
            }
            Record::Outcomes(outcomes) => {
                let mut touched = Vec::new();
                for Outcome { batch, id, ok, queue } in outcomes {
                    let state = touch(&mut self.batches, &batch, now_ms);
                    if !ok {
                        state.dead_in.insert(id.clone(), queue);
                    }
                    state.outcome(id, ok);
                    if !touched.contains(&batch) {
                        touched.push(batch);
                    }
                }
                touched
            }
            Record::Fired { batch, kind } => {
                let state = touch(&mut self.batches, &batch, now_ms);
                if !state.fired.contains(&kind) {
                    state.fired.push(kind);
                }
                vec![batch]
            }
            Record::SnapshotPart { states, .. } => {
                let mut touched = Vec::new();
                for mut other in states {
                    let Some(batch) = other.definition.as_ref().map(|d| d.batch.clone()) else { continue };
                    match self.batches.get_mut(&batch) {
                        Some(state) => state.merge(other),
                        None => {
                            other.recount();
                            self.batches.insert(batch.clone(), other);
                        }
                    }
                    touched.push(batch);
                }
                touched
            }
            Record::SnapshotDone { .. } => Vec::new(),
        }
    }

    /// The batch `batch`.
    pub fn get(&self, batch: &str) -> Option<&State> {
        self.batches.get(batch)
    }

    /// Every batch in the book, in no order.
    pub fn batches(&self) -> impl Iterator<Item = &State> {
        self.batches.values()
    }

    /// The batches finished lately, the latest first.
    pub fn recent(&self) -> impl Iterator<Item = &Finished> {
        self.recent.iter()
    }

    /// Forgets finished batches (into [`Book::recent`]), those untouched for
    /// [`FORGET_AFTER`], and, with `partial`, those whose definition was never
    /// read (what a rebuild read of batches that ended before its window).
    pub fn prune(&mut self, now_ms: u64, partial: bool) {
        let forget_ms = u64::try_from(FORGET_AFTER.as_millis()).unwrap_or(u64::MAX);
        let mut finished = Vec::new();
        self.batches.retain(|batch, state| {
            if state.finished() {
                let description = state.definition.as_ref().and_then(|d| d.description.clone());
                finished.push(Finished { batch: batch.clone(), description, counts: state.counts(), at_ms: now_ms });
                return false;
            }
            let stale = now_ms.saturating_sub(state.touched_ms) > forget_ms;
            !(stale || (partial && state.definition.is_none()))
        });
        for done in finished {
            self.recent.push_front(done);
        }
        self.recent.truncate(RECENT);
    }

    /// The book as a snapshot `id` covering the stream up to offset
    /// `covered`: parts of about `part_bytes` each (a batch larger goes in a
    /// part of its own), then their end.
    pub fn snapshot(&self, id: &str, covered: u64, part_bytes: usize) -> Vec<Record> {
        let mut records = Vec::new();
        let (mut part, mut bytes) = (Vec::new(), 0);
        for state in self.batches.values().filter(|s| s.definition.is_some()) {
            let size = 64 + state.members.len() * 28 + state.outcomes.len() * 30 + state.dead_in.len() * 60;
            if !part.is_empty() && bytes + size > part_bytes {
                records.push(Record::SnapshotPart { snapshot: id.to_owned(), states: std::mem::take(&mut part) });
                bytes = 0;
            }
            part.push(state.clone());
            bytes += size;
        }
        if !part.is_empty() {
            records.push(Record::SnapshotPart { snapshot: id.to_owned(), states: part });
        }
        let parts = u32::try_from(records.len()).unwrap_or(u32::MAX);
        records.push(Record::SnapshotDone { snapshot: id.to_owned(), parts, covered });
        records
    }
}

/// The state of `batch` (new if need be), touched at `now_ms`.
fn touch<'a>(batches: &'a mut HashMap<String, State>, batch: &str, now_ms: u64) -> &'a mut State {
    let state = batches.entry(batch.to_owned()).or_insert_with(|| State::new(now_ms));
    state.touched_ms = state.touched_ms.max(now_ms);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(batch: &str) -> Record {
        Record::Open(Definition {
            batch: batch.into(),
            description: Some("July".into()),
            at_ms: 1,
            on_complete: None,
            on_success: None,
        })
    }

    fn members(batch: &str, ids: &[&str]) -> Record {
        Record::Members { batch: batch.into(), ids: ids.iter().map(|s| s.to_string()).collect(), parent: None }
    }

    fn outcome(batch: &str, id: &str, ok: bool) -> Record {
        Record::Outcomes(vec![Outcome { batch: batch.into(), id: id.into(), ok, queue: "q".into() }])
    }

    fn sealed(batch: &str) -> Record {
        Record::Sealed { batch: batch.into() }
    }

    fn due(book: &Book, batch: &str) -> Vec<CallbackKind> {
        book.get(batch).map(State::due).unwrap_or_default()
    }

    #[test]
    fn complete_waits_for_the_seal_and_every_member_and_a_job_run_twice_counts_once() {
        let mut book = Book::new();
        for record in [open("b"), members("b", &["1", "2"]), outcome("b", "1", true), outcome("b", "1", true)] {
            book.apply(record, 5);
        }
        book.apply(outcome("b", "2", true), 5);
        assert_eq!(due(&book, "b"), [], "not sealed: more members may come");
        book.apply(sealed("b"), 5);
        assert_eq!(due(&book, "b"), [CallbackKind::Complete, CallbackKind::Success]);
        assert_eq!(book.get("b").unwrap().counts(), Counts { total: 2, succeeded: 2, dead: 0 });
    }

    #[test]
    fn a_dead_member_completes_without_success_until_it_is_retried_to_success() {
        let mut book = Book::new();
        for record in
            [open("b"), members("b", &["1", "2"]), sealed("b"), outcome("b", "1", true), outcome("b", "2", false)]
        {
            book.apply(record, 5);
        }
        assert_eq!(due(&book, "b"), [CallbackKind::Complete]);
        book.apply(Record::Fired { batch: "b".into(), kind: CallbackKind::Complete }, 5);
        assert_eq!(due(&book, "b"), [], "fired once");
        assert_eq!(book.get("b").unwrap().dead(10), [("2".to_owned(), Some("q".to_owned()))]);
        book.apply(outcome("b", "2", true), 6);
        assert_eq!(due(&book, "b"), [CallbackKind::Success], "the dead one succeeded on retry");
        book.apply(outcome("b", "2", false), 7);
        assert_eq!(book.get("b").unwrap().counts().succeeded, 2, "a success outweighs a later death");
    }

    #[test]
    fn a_child_job_holds_its_batch_open_until_it_ends_and_an_empty_batch_completes_at_once() {
        let mut book = Book::new();
        for record in [open("b"), members("b", &["p"]), sealed("b")] {
            book.apply(record, 5);
        }
        // The parent adds a child before its own outcome is recorded.
        book.apply(Record::Members { batch: "b".into(), ids: vec!["p.0".into()], parent: Some("p".into()) }, 5);
        book.apply(outcome("b", "p", true), 5);
        assert_eq!(due(&book, "b"), [], "the child has not ended");
        book.apply(outcome("b", "p.0", true), 5);
        assert_eq!(due(&book, "b"), [CallbackKind::Complete, CallbackKind::Success]);
        book.apply(open("empty"), 5);
        book.apply(sealed("empty"), 5);
        assert_eq!(due(&book, "empty"), [CallbackKind::Complete, CallbackKind::Success]);
    }

    #[test]
    fn any_order_and_any_repeat_of_the_records_give_the_same_book() {
        let records = [
            open("b"),
            members("b", &["1", "2", "3"]),
            outcome("b", "3", false),
            sealed("b"),
            outcome("b", "1", true),
            outcome("b", "2", true),
            outcome("b", "3", true),
        ];
        let mut forward = Book::new();
        records.iter().cloned().for_each(|r| drop(forward.apply(r, 1)));
        let mut backward = Book::new();
        records.iter().rev().cloned().chain(records.iter().cloned()).for_each(|r| drop(backward.apply(r, 1)));
        assert_eq!(forward.get("b"), backward.get("b"));
        // A snapshot of half the records, then every record since and before: the same again.
        let mut half = Book::new();
        records[..3].iter().cloned().for_each(|r| drop(half.apply(r, 1)));
        let mut rebuilt = Book::new();
        for part in half.snapshot("s", 0, 1) {
            rebuilt.apply(part, 1);
        }
        records[2..].iter().cloned().for_each(|r| drop(rebuilt.apply(r, 1)));
        assert_eq!(rebuilt.get("b"), forward.get("b"));
        let mut decoded = Book::new();
        for part in forward.snapshot("s", 0, 1 << 20) {
            decoded.apply(Record::decode(&part.encode().unwrap()).unwrap(), 1);
        }
        assert_eq!(decoded.get("b"), forward.get("b"), "a snapshot survives its encoding (its counts made again)");
        assert_eq!(decoded.get("b").unwrap().counts(), Counts { total: 3, succeeded: 3, dead: 0 });
    }

    #[test]
    fn finished_batches_go_to_recent_and_partial_and_stale_ones_are_forgotten() {
        let mut book = Book::new();
        let fired = |kind| Record::Fired { batch: "done".into(), kind };
        for record in [open("done"), sealed("done"), fired(CallbackKind::Complete), fired(CallbackKind::Success)] {
            book.apply(record, 10);
        }
        book.apply(outcome("gone", "x", true), 10); // its definition is older than the read
        book.apply(open("idle"), 10);
        book.prune(20, false);
        assert!(book.get("done").is_none());
        assert_eq!(book.recent().next().map(|f| f.batch.as_str()), Some("done"));
        assert!(book.get("gone").is_some(), "kept while reading");
        book.prune(20, true);
        assert!(book.get("gone").is_none(), "a partial batch after a rebuild");
        let forget = u64::try_from(FORGET_AFTER.as_millis()).unwrap();
        book.prune(10 + forget + 1, false);
        assert!(book.get("idle").is_none(), "untouched for 30 days");
    }
}

#[cfg(test)]
mod more {
    use super::*;

    fn definition(batch: &str) -> Record {
        Record::Open(Definition {
            batch: batch.into(),
            description: None,
            at_ms: 1,
            on_complete: None,
            on_success: None,
        })
    }

    #[test]
    fn counts_kept_as_records_come_match_a_count_of_it_all() {
        let mut book = Book::new();
        book.apply(definition("b"), 1);
        // Outcomes before membership, repeats, a death then a success, a non-member.
        let outcome = |id: &str, ok| Outcome { batch: "b".into(), id: id.into(), ok, queue: "q".into() };
        book.apply(Record::Outcomes(vec![outcome("1", false), outcome("9", true)]), 1);
        book.apply(
            Record::Members { batch: "b".into(), ids: vec!["1".into(), "2".into(), "3".into()], parent: None },
            1,
        );
        book.apply(
            Record::Outcomes(vec![outcome("2", true), outcome("2", true), outcome("1", true), outcome("1", false)]),
            1,
        );
        let state = book.get("b").unwrap();
        let mut recounted = state.clone();
        recounted.recount();
        assert_eq!(state.counts(), recounted.counts());
        assert_eq!(state.counts(), Counts { total: 3, succeeded: 2, dead: 0 });
    }

    #[test]
    fn a_snapshot_is_cut_in_parts_and_ends_with_what_it_covers() {
        let mut book = Book::new();
        for n in 0..10 {
            book.apply(definition(&format!("b{n}")), 1);
        }
        let records = book.snapshot("s1", 42, 100);
        assert!(records.len() > 2, "small parts: {}", records.len());
        let parts = records.len() as u32 - 1;
        assert_eq!(records.last(), Some(&Record::SnapshotDone { snapshot: "s1".into(), parts, covered: 42 }));
        let mut rebuilt = Book::new();
        records.into_iter().for_each(|r| drop(rebuilt.apply(r, 1)));
        assert_eq!(rebuilt.batches().count(), 10);
    }

    #[test]
    fn a_batch_leaves_the_book_only_once_both_callbacks_fired() {
        let mut book = Book::new();
        book.apply(definition("b"), 1);
        book.apply(Record::Sealed { batch: "b".into() }, 1);
        book.apply(Record::Fired { batch: "b".into(), kind: CallbackKind::Success }, 1);
        book.prune(2, true);
        assert!(book.get("b").is_some(), "complete not fired yet: kept");
        assert_eq!(book.get("b").unwrap().due(), [CallbackKind::Complete]);
    }
}
