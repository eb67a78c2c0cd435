//! Per-VM buffering and delivery: batches by size and age, bounded memory, bounded calls in
//! flight, retries with capped exponential backoff, and an exact count of what was dropped.

use std::collections::VecDeque;

use waggle_wire::{BatchBuilder, Event, EventRef, Header};

use crate::config::Config;
use crate::identity::Local;

/// Sends one batch body; returns the call's token, or `None` if it could not be started.
pub trait Transport {
    fn send(&mut self, body: &[u8]) -> Option<u32>;
}

/// How the backend answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the batch is delivered.
    Accepted,
    /// 4xx other than 408 and 429: the backend will never take this batch; drop it.
    Refused(u16),
    /// No answer, a timeout, 408, 429 or 5xx: send the same batch again later.
    Failed,
}

impl Outcome {
    /// Classifies an HTTP status (`None`: the call failed or timed out).
    pub fn from_status(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => Outcome::Accepted,
            Some(s @ 400..=499) if s != 408 && s != 429 => Outcome::Refused(s),
            _ => Outcome::Failed,
        }
    }
}

#[derive(Debug)]
struct Sealed {
    sequence: u64,
    events: usize,
    /// The drop count this batch reports; re-reported if the batch itself is refused.
    dropped: u64,
    body: Vec<u8>,
}

/// Counters the filter logs and tests assert on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub recorded: u64,
    pub dropped: u64,
    pub batches_sent: u64,
    pub events_sent: u64,
    pub failed_calls: u64,
    pub refused_batches: u64,
}

#[derive(Debug)]
pub struct Outbox {
    flush_interval_ms: u64,
    max_batch_events: usize,
    max_buffer_events: usize,
    max_in_flight: usize,
    retry_initial_ms: u64,
    retry_max_ms: u64,

    header: Header,
    builder: BatchBuilder,
    opened_at_ms: u64,
    ready: VecDeque<Sealed>,
    in_flight: Vec<(u32, Sealed)>,
    /// Events in the builder, `ready` and `in_flight`: what the buffer bound applies to.
    buffered: usize,
    dropped_unreported: u64,
    failures: u32,
    retry_at_ms: u64,
    rng: u64,
    pub stats: Stats,
}

impl Outbox {
    pub fn new(config: &Config, local: Local, vm_id: u64) -> Self {
        Self {
            flush_interval_ms: config.flush_interval_ms,
            max_batch_events: config.max_batch_events,
            max_buffer_events: config.max_buffer_events,
            max_in_flight: config.max_in_flight,
            retry_initial_ms: config.retry_initial_ms,
            retry_max_ms: config.retry_max_ms,
            header: Header {
                vm_id,
                sequence: 0,
                dropped: 0,
                local: local.workload,
                mesh_id: local.mesh_id,
                mesh: local.mesh,
            },
            builder: BatchBuilder::new(),
            opened_at_ms: 0,
            ready: VecDeque::new(),
            in_flight: Vec::new(),
            buffered: 0,
            dropped_unreported: 0,
            failures: 0,
            retry_at_ms: 0,
            rng: vm_id | 1,
            stats: Stats::default(),
        }
    }

    /// The identity the next batches are sent under (the batch being built included).
    pub fn set_local(&mut self, local: &Local) {
        self.header.local = local.workload.clone();
        self.header.mesh_id = local.mesh_id.clone();
        self.header.mesh = local.mesh;
    }

    /// Buffers one event, or drops and counts it when the buffer is full. Constant work.
    pub fn record(&mut self, event: &Event, now_ms: u64) -> bool {
        self.record_ref(&event.as_ref(), now_ms)
    }

    /// [`Outbox::record`] of a borrowed event: allocates nothing in the steady state (strings
    /// and shapes already in the batch, record storage set aside when the batch opened).
    pub fn record_ref(&mut self, event: &EventRef<'_>, now_ms: u64) -> bool {
        if self.buffered >= self.max_buffer_events {
            self.dropped_unreported += 1;
            self.stats.dropped += 1;
            return false;
        }
        if self.builder.is_empty() {
            self.opened_at_ms = now_ms;
            self.builder.reserve(self.max_batch_events);
        }
        self.builder.push_ref(event);
        self.buffered += 1;
        self.stats.recorded += 1;
        if self.builder.len() >= self.max_batch_events {
            self.seal();
        }
        true
    }

    /// Seals what is due and sends what may be sent. Called on every tick and after answers.
    pub fn pump(&mut self, now_ms: u64, transport: &mut impl Transport) {
        let open_due = !self.builder.is_empty()
            && now_ms.saturating_sub(self.opened_at_ms) >= self.flush_interval_ms;
        // Drops must reach the backend even when traffic stops: an empty batch carries them.
        let drops_due = self.builder.is_empty()
            && self.dropped_unreported > 0
            && self.ready.is_empty()
            && self.in_flight.is_empty();
        if open_due || drops_due {
            self.seal();
        }
        if now_ms < self.retry_at_ms {
            return;
        }
        while self.in_flight.len() < self.max_in_flight {
            let Some(batch) = self.ready.pop_front() else {
                break;
            };
            match transport.send(&batch.body) {
                Some(token) => self.in_flight.push((token, batch)),
                None => {
                    // The call could not even start (e.g. the cluster is unknown): back off.
                    self.ready.push_front(batch);
                    self.fail(now_ms);
                    break;
                }
            }
        }
    }

    /// Settles the call `token`; unknown tokens (not ours) are ignored.
    pub fn on_response(&mut self, token: u32, outcome: Outcome, now_ms: u64) {
        let Some(pos) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, batch) = self.in_flight.swap_remove(pos);
        match outcome {
            Outcome::Accepted => {
                self.buffered -= batch.events;
                self.stats.batches_sent += 1;
                self.stats.events_sent += batch.events as u64;
                self.failures = 0;
                self.retry_at_ms = 0;
            }
            Outcome::Refused(_) => {
                self.buffered -= batch.events;
                self.stats.refused_batches += 1;
                self.stats.dropped += batch.events as u64;
                self.dropped_unreported += batch.events as u64 + batch.dropped;
            }
            Outcome::Failed => {
                // Keep sequence order so the backend sees batches in the order they were made.
                let at = self
                    .ready
                    .iter()
                    .position(|b| b.sequence > batch.sequence)
                    .unwrap_or(self.ready.len());
                self.ready.insert(at, batch);
                self.fail(now_ms);
            }
        }
    }

    fn seal(&mut self) {
        self.header.dropped = std::mem::take(&mut self.dropped_unreported);
        let events = self.builder.len();
        let body = self.builder.finish(&self.header);
        self.ready.push_back(Sealed {
            sequence: self.header.sequence,
            events,
            dropped: self.header.dropped,
            body,
        });
        self.header.sequence += 1;
    }

    fn fail(&mut self, now_ms: u64) {
        self.stats.failed_calls += 1;
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let delay = self
            .retry_initial_ms
            .saturating_mul(1 << exp)
            .min(self.retry_max_ms);
        // Jitter in [delay/2, delay] so the workers of many sidecars do not retry in step.
        let jitter = self.next_random() % (delay / 2 + 1);
        self.retry_at_ms = now_ms + delay - jitter;
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    pub fn buffered(&self) -> usize {
        self.buffered
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the next retry may happen (0 when not backing off).
    pub fn retry_at_ms(&self) -> u64 {
        self.retry_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waggle_wire::{decode, sample};

    #[derive(Default)]
    struct Capture {
        sent: Vec<(u32, Vec<u8>)>,
        refuse: bool,
    }

    impl Transport for Capture {
        fn send(&mut self, body: &[u8]) -> Option<u32> {
            if self.refuse {
                return None;
            }
            let token = self.sent.len() as u32 + 100;
            self.sent.push((token, body.to_vec()));
            Some(token)
        }
    }

    fn outbox(json: &str) -> Outbox {
        let config = Config::parse(json.as_bytes()).unwrap().config;
        Outbox::new(&config, Local::default(), 9)
    }

    #[test]
    fn flushes_by_size_then_by_age() {
        let mut o = outbox(r#"{"max_batch_events": 3, "flush_interval_ms": 1000}"#);
        let mut t = Capture::default();
        let events = sample::inbound(5, 1, false);
        for e in &events {
            o.record(e, 0);
        }
        o.pump(1, &mut t);
        assert_eq!(t.sent.len(), 1, "the full batch goes at once");
        assert_eq!(decode(&t.sent[0].1).unwrap().records.len(), 3);
        o.pump(999, &mut t);
        assert_eq!(t.sent.len(), 1, "the open batch waits for its interval");
        o.pump(1000, &mut t);
        assert_eq!(t.sent.len(), 2);
        let b = decode(&t.sent[1].1).unwrap();
        assert_eq!(b.events().collect::<Vec<_>>(), events[3..]);
        assert_eq!(b.header.sequence, 1);
    }

    #[test]
    fn in_flight_is_bounded_and_success_frees_the_buffer() {
        let mut o = outbox(r#"{"max_batch_events": 1, "max_in_flight": 2}"#);
        let mut t = Capture::default();
        for e in &sample::inbound(5, 2, false) {
            o.record(e, 0);
        }
        o.pump(0, &mut t);
        assert_eq!((t.sent.len(), o.in_flight()), (2, 2));
        o.on_response(100, Outcome::Accepted, 1);
        o.pump(1, &mut t);
        assert_eq!(t.sent.len(), 3);
        assert_eq!(o.buffered(), 4);
        assert_eq!(o.stats.events_sent, 1);
    }

    #[test]
    fn failures_retry_the_same_batch_with_capped_backoff() {
        let mut o = outbox(
            r#"{"max_batch_events": 2, "max_in_flight": 1, "retry_initial_ms": 100, "retry_max_ms": 400}"#,
        );
        let mut t = Capture::default();
        for e in &sample::inbound(2, 3, false) {
            o.record(e, 0);
        }
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..6 {
            o.pump(now, &mut t);
            let token = t.sent.last().unwrap().0;
            o.on_response(token, Outcome::Failed, now);
            let wait = o.retry_at_ms() - now;
            delays.push(wait);
            o.pump(now + wait - 1, &mut t);
            now += wait;
        }
        assert_eq!(
            t.sent.len(),
            6,
            "one attempt per backoff period, none early"
        );
        assert!(
            t.sent.windows(2).all(|w| w[0].1 == w[1].1),
            "every retry sends the same bytes"
        );
        let caps = [100, 200, 400, 400, 400, 400];
        for (d, cap) in delays.iter().zip(caps) {
            assert!(
                *d >= cap / 2 && *d <= cap,
                "delay {d} outside [{}, {cap}]",
                cap / 2
            );
        }
        o.pump(now, &mut t);
        let token = t.sent.last().unwrap().0;
        o.on_response(token, Outcome::Accepted, now);
        assert_eq!(
            (o.buffered(), o.retry_at_ms(), o.stats.batches_sent),
            (0, 0, 1)
        );
        o.pump(now + 10_000, &mut t);
        assert_eq!(t.sent.len(), 7, "a delivered batch is never sent again");
    }

    #[test]
    fn drops_are_bounded_counted_and_reported_in_the_next_header() {
        let mut o =
            outbox(r#"{"max_batch_events": 2, "max_buffer_events": 4, "max_in_flight": 1}"#);
        let mut t = Capture::default();
        let events = sample::inbound(10, 4, false);
        let kept = events.iter().filter(|e| o.record(e, 0)).count();
        assert_eq!((kept, o.stats.dropped), (4, 6));
        o.pump(0, &mut t);
        o.on_response(100, Outcome::Accepted, 0);
        o.pump(0, &mut t);
        o.on_response(101, Outcome::Accepted, 0);
        let dropped: Vec<u64> = t
            .sent
            .iter()
            .map(|(_, b)| decode(b).unwrap().header.dropped)
            .collect();
        assert_eq!(
            dropped,
            [0, 0],
            "these batches were sealed before the drops"
        );
        o.pump(1, &mut t);
        let last = decode(&t.sent.last().unwrap().1).unwrap();
        assert_eq!(
            (last.records.len(), last.header.dropped),
            (0, 6),
            "an empty batch carries the count"
        );
        o.on_response(102, Outcome::Accepted, 1);
        o.pump(5000, &mut t);
        assert_eq!(t.sent.len(), 3, "the count is reported once");
    }

    #[test]
    fn refused_batches_are_dropped_and_counted_not_retried() {
        let mut o = outbox(r#"{"max_batch_events": 2}"#);
        let mut t = Capture::default();
        for e in &sample::inbound(2, 5, false) {
            o.record(e, 0);
        }
        o.pump(0, &mut t);
        o.on_response(100, Outcome::Refused(400), 0);
        assert_eq!(
            (o.buffered(), o.stats.refused_batches, o.retry_at_ms()),
            (0, 1, 0)
        );
        o.record(&sample::inbound(1, 6, false)[0], 0);
        o.pump(2000, &mut t);
        assert_eq!(t.sent.len(), 2);
        assert_eq!(decode(&t.sent[1].1).unwrap().header.dropped, 2);
    }

    #[test]
    fn a_refused_batch_hands_its_drop_count_on() {
        let mut o =
            outbox(r#"{"max_batch_events": 1, "max_buffer_events": 1, "max_in_flight": 1}"#);
        let mut t = Capture::default();
        let events = sample::inbound(3, 8, false);
        o.record(&events[0], 0);
        o.record(&events[1], 0); // dropped: buffer full
        o.pump(0, &mut t);
        o.on_response(100, Outcome::Accepted, 0);
        o.record(&events[2], 0); // sealed with dropped = 1
        o.pump(0, &mut t);
        assert_eq!(decode(&t.sent[1].1).unwrap().header.dropped, 1);
        o.on_response(101, Outcome::Refused(413), 0);
        o.pump(1, &mut t);
        assert_eq!(
            decode(&t.sent[2].1).unwrap().header.dropped,
            2,
            "its own event and the count it carried"
        );
    }

    #[test]
    fn a_call_that_cannot_start_backs_off() {
        let mut o = outbox(r#"{"max_batch_events": 1}"#);
        let mut t = Capture {
            refuse: true,
            ..Default::default()
        };
        o.record(&sample::inbound(1, 7, false)[0], 0);
        o.pump(0, &mut t);
        assert!(o.retry_at_ms() > 0);
        assert_eq!((o.buffered(), o.stats.failed_calls), (1, 1));
        t.refuse = false;
        o.pump(o.retry_at_ms(), &mut t);
        assert_eq!(t.sent.len(), 1);
    }

    #[test]
    fn statuses_classify() {
        let cases = [
            (Some(202), Outcome::Accepted),
            (Some(200), Outcome::Accepted),
            (Some(400), Outcome::Refused(400)),
            (Some(401), Outcome::Refused(401)),
            (Some(413), Outcome::Refused(413)),
            (Some(408), Outcome::Failed),
            (Some(429), Outcome::Failed),
            (Some(503), Outcome::Failed),
            (Some(302), Outcome::Failed),
            (None, Outcome::Failed),
        ];
        for (status, want) in cases {
            assert_eq!(Outcome::from_status(status), want, "{status:?}");
        }
    }
}
