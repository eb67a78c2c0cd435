//! The bounded hand-off between ingest and the exporter. Its bounds cover every event the
//! exporter holds, from arrival until delivered or dropped, so memory stays capped however slow
//! Honeycomb is; ingest never blocks on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use waggle_wire::Batch;

/// A decoded batch waiting to be encoded, with the bytes it is accounted for.
pub struct Item {
    pub batch: Arc<Batch>,
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    Closed,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Item>,
    /// Events and bytes held anywhere in the exporter (queued, batching or in flight).
    events: usize,
    bytes: usize,
}

pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    closed: AtomicBool,
    max_events: usize,
    max_bytes: usize,
}

impl Queue {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Condvar::new(),
            closed: AtomicBool::new(false),
            max_events,
            max_bytes,
        }
    }

    /// Takes the whole batch or none of it.
    pub fn offer(&self, batch: Arc<Batch>, bytes: usize) -> Result<(), Refusal> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refusal::Closed);
        }
        let n = batch.records.len();
        let Ok(mut inner) = self.inner.lock() else {
            return Err(Refusal::Closed);
        };
        if inner.events + n > self.max_events || inner.bytes + bytes > self.max_bytes {
            return Err(Refusal::Full);
        }
        inner.events += n;
        inner.bytes += bytes;
        inner.items.push_back(Item { batch, bytes });
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// The next item, waiting until `deadline` at most; `None` on timeout or when closed and empty.
    pub fn pop(&self, deadline: Option<Instant>) -> Option<Item> {
        let mut inner = self.inner.lock().ok()?;
        loop {
            if let Some(item) = inner.items.pop_front() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            inner = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.ready.wait_timeout(inner, d - now).ok()?.0
                }
                None => self.ready.wait(inner).ok()?,
            };
        }
    }

    /// Gives back the share of the bounds held by events that are done with.
    pub fn release(&self, events: usize, bytes: usize) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.events = inner.events.saturating_sub(events);
            inner.bytes = inner.bytes.saturating_sub(bytes);
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// (events, bytes) held.
    pub fn depth(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (i.events, i.bytes))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waggle_wire::Record;

    fn batch(n: usize) -> Arc<Batch> {
        let rec = Record {
            key: 0,
            start_unix_us: 0,
            duration_us: 0,
            request_bytes: 0,
            response_bytes: 0,
            trace_id: None,
            path: None,
        };
        Arc::new(Batch {
            records: vec![rec; n],
            ..Batch::default()
        })
    }

    #[test]
    fn bounds_hold_until_released() {
        let q = Queue::new(10, 1000);
        q.offer(batch(6), 100).unwrap();
        assert_eq!(q.offer(batch(5), 100), Err(Refusal::Full), "11 events > 10");
        q.offer(batch(4), 100).unwrap();
        assert_eq!(q.offer(batch(1), 10), Err(Refusal::Full));
        let item = q.pop(Some(Instant::now())).unwrap();
        assert_eq!(
            q.offer(batch(1), 10),
            Err(Refusal::Full),
            "popped is still held"
        );
        q.release(item.batch.records.len(), item.bytes);
        q.offer(batch(1), 10).unwrap();
        assert_eq!(q.offer(batch(1), 900), Err(Refusal::Full), "byte bound");
        assert_eq!(q.depth(), (5, 110));
        q.close();
        assert_eq!(q.offer(batch(1), 1), Err(Refusal::Closed));
        assert!(q.pop(None).is_some() && q.pop(None).is_some());
        assert!(q.pop(None).is_none(), "closed and empty");
    }
}
