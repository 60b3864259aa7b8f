//! What one connection of the client has declared already, so that the hot
//! path declares nothing twice (read without waiting).

use std::collections::HashSet;

use crate::destination::Declare;

/// The objects declared on one connection.
#[derive(Debug, Default)]
pub(crate) struct Declared {
    pub(crate) exchanges: HashSet<String>,
    pub(crate) queues: HashSet<String>,
    /// Queues bound to the delay cascade's delivery exchange.
    pub(crate) bound: HashSet<String>,
    /// The delay cascade itself.
    pub(crate) delays: bool,
}

impl Declared {
    /// Whether everything `declare` asks for is there.
    pub(crate) fn ready(&self, declare: &Declare) -> bool {
        match declare {
            Declare::Nothing => true,
            Declare::Exchange { name, .. } => self.exchanges.contains(name),
            Declare::Journal(journal) => self.queues.contains(journal.name()),
            Declare::Queue { queue, delayed, shards } => {
                self.queues.contains(queue)
                    && (*shards == 0 || self.queues.contains(&crate::names::shard_queue(queue, 0)))
                    && (!delayed || (self.delays && self.bound.contains(queue)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delayed_queue_is_ready_once_the_cascade_and_its_binding_are() {
        let mut declared = Declared::default();
        let delayed = Declare::Queue { queue: "q".into(), delayed: true, shards: 0 };
        assert!(declared.ready(&Declare::Nothing));
        assert!(!declared.ready(&delayed));
        declared.queues.insert("q".into());
        assert!(declared.ready(&Declare::Queue { queue: "q".into(), delayed: false, shards: 0 }));
        assert!(!declared.ready(&delayed));
        declared.delays = true;
        declared.bound.insert("q".into());
        assert!(declared.ready(&delayed));
    }
}
