//! The session's ack queue, without I/O: which PUBACKs may go out, in what
//! order, and what waits while the WAL is full.
//!
//! - A publish appended to the WAL waits with its sequence number (and its
//!   packet id when QoS 1) until the WAL's durable count passes it; then its
//!   PUBACK goes out, in receive order (MQTT §4.6), with every other one the
//!   same group commit covers. A QoS 0 publish takes a place in the order
//!   but is never acknowledged.
//! - A publish received while the WAL is full is held, and so is every one
//!   after it, so that the WAL appends them in receive order once it has
//!   room. At `receive_maximum` held, reading pauses: TCP backpressure to
//!   the broker.

use std::collections::VecDeque;

use crate::wal::Record;

pub(super) struct AckQueue {
    /// Appended, not yet durable: (sequence number, packet id of a QoS 1 publish).
    waiting: VecDeque<(u64, Option<u16>)>,
    /// Received while the WAL was full, in receive order.
    held: VecDeque<(Record, Option<u16>)>,
    held_max: usize,
}

impl AckQueue {
    pub fn new(held_max: usize) -> AckQueue {
        AckQueue { waiting: VecDeque::new(), held: VecDeque::new(), held_max: held_max.max(1) }
    }

    /// Publishes received (one socket read's, in receive order): `append`
    /// takes them from the front while the WAL has room, reporting each
    /// one's sequence number, unless others are held before them; what is
    /// left is held, behind those.
    pub fn received(
        &mut self,
        burst: &mut VecDeque<(Record, Option<u16>)>,
        append: impl FnOnce(&mut VecDeque<(Record, Option<u16>)>, &mut dyn FnMut(u64, Option<u16>)),
    ) {
        if self.held.is_empty() {
            let waiting = &mut self.waiting;
            append(burst, &mut |seq, pkid| waiting.push_back((seq, pkid)));
        }
        self.held.extend(burst.drain(..));
    }

    /// Appends what is held, oldest first: `append` takes from the front
    /// while the WAL has room, as for [`AckQueue::received`].
    pub fn release_held(
        &mut self,
        append: impl FnOnce(&mut VecDeque<(Record, Option<u16>)>, &mut dyn FnMut(u64, Option<u16>)),
    ) {
        if !self.held.is_empty() {
            let waiting = &mut self.waiting;
            append(&mut self.held, &mut |seq, pkid| waiting.push_back((seq, pkid)));
        }
    }

    /// The packet ids to acknowledge now that records below `durable` are
    /// durable, in receive order.
    pub fn durable(&mut self, durable: u64, mut ack: impl FnMut(u16)) {
        while self.waiting.front().is_some_and(|(seq, _)| *seq < durable) {
            if let Some((_, Some(pkid))) = self.waiting.pop_front() {
                ack(pkid);
            }
        }
    }

    /// Whether appended records wait for a group commit.
    pub fn awaiting_commit(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The newest sequence number waiting, if any.
    pub fn last_waiting(&self) -> Option<u64> {
        self.waiting.back().map(|(s, _)| *s)
    }

    /// Publishes appended or held but not acknowledged.
    pub fn unacked(&self) -> usize {
        self.waiting.len() + self.held.len()
    }

    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether the socket may be read (fewer than `receive_maximum` held).
    pub fn may_read(&self) -> bool {
        self.held.len() < self.held_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> Record {
        Record { qos: 1, received_ms: 0, topic: format!("t/{n}"), payload: vec![n].into() }
    }

    #[test]
    fn acks_go_out_in_receive_order_once_durable_and_qos0_is_never_acked() {
        let mut q = AckQueue::new(8);
        let mut next = 0u64;
        let mut append = |_: Record| {
            next += 1;
            next - 1
        };
        let mut burst: VecDeque<_> = [(1, Some(10)), (2, None), (3, Some(12)), (4, Some(11))]
            .into_iter()
            .map(|(n, pkid)| (rec(n), pkid))
            .collect();
        q.received(&mut burst, |b, done| {
            while let Some((r, pkid)) = b.pop_front() {
                done(append(r), pkid);
            }
        });
        assert!(burst.is_empty() && !q.holding());
        let mut acked = Vec::new();
        q.durable(2, |p| acked.push(p));
        assert_eq!(acked, vec![10], "sequence 2 (packet 12) is not durable yet; QoS 0 took its place silently");
        q.durable(4, |p| acked.push(p));
        assert_eq!(acked, vec![10, 12, 11], "receive order, not packet id order");
        assert!(!q.awaiting_commit());
    }

    #[test]
    fn a_full_wal_holds_every_publish_after_the_first_held_and_appends_them_in_order() {
        let mut q = AckQueue::new(2);
        let mut appended = Vec::new();
        // The WAL is full: it takes none.
        q.received(&mut VecDeque::from([(rec(1), Some(1))]), |_, _| {});
        assert!(q.may_read());
        // Room again, but one is held: the next waits behind it.
        q.received(&mut VecDeque::from([(rec(2), Some(2))]), |b, _| unreachable!("{b:?} would overtake the held one"));
        assert!(!q.may_read(), "receive_maximum (2) held: reading pauses");
        assert_eq!(q.unacked(), 2);
        // The WAL has room for one, then is full again.
        q.release_held(|b, done| {
            let (r, pkid) = b.pop_front().expect("one held");
            appended.push(r.payload[0]);
            done(appended.len() as u64 - 1, pkid);
        });
        assert_eq!(appended, vec![1], "stops when the WAL is full again");
        assert!(q.holding() && q.may_read());
        q.release_held(|b, done| {
            while let Some((r, pkid)) = b.pop_front() {
                appended.push(r.payload[0]);
                done(appended.len() as u64 - 1, pkid);
            }
        });
        assert_eq!(appended, vec![1, 2]);
        let mut acked = Vec::new();
        q.durable(2, |p| acked.push(p));
        assert_eq!((acked, q.last_waiting(), q.unacked()), (vec![1, 2], None, 0));
    }
}
