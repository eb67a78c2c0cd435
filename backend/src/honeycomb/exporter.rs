//! The exporter: a bounded queue from ingest, an encoder thread that renders batches per
//! dataset and compresses them, and async senders that deliver them with retries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{mpsc, Notify, Semaphore};
use waggle_wire::{Batch, Record, TraceId};

use super::client::{Answer, Auth, Client};
use super::columns::{push_event, service_name, Shape, TimeCache};
use super::queue::{Queue, Refusal};
use super::settings::{Compression, DatasetMode, ExportSettings, MAX_BATCH_BYTES, MAX_EVENT_BYTES};
use super::stats::{Drop, ExportStats};

const PENDING: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;

/// A closed batch, encoded and compressed, with the share of the queue bounds it holds.
struct Sealed {
    dataset: String,
    body: Bytes,
    events: usize,
    bytes: usize,
}

/// State shared by the encoder thread and the async tasks.
struct Core {
    settings: ExportSettings,
    client: Client,
    queue: Queue,
    stats: ExportStats,
    key: RwLock<String>,
    auth: AtomicU8,
    recheck: Notify,
    drain_deadline: Mutex<Option<Instant>>,
    /// Per-event refusal reasons already logged, so each is logged once.
    logged: Mutex<HashSet<String>>,
}

pub struct Exporter {
    core: Arc<Core>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Honeycomb key: {0}")]
    Key(String),
    #[error("{0}")]
    Client(String),
    #[error("cannot start the encoder thread: {0}")]
    Thread(std::io::Error),
}

impl Exporter {
    /// Starts the encoder thread, the sender and the `/1/auth` check; needs a tokio runtime.
    pub fn start(settings: ExportSettings) -> Result<Arc<Self>, StartError> {
        let key = settings.key.read().map_err(StartError::Key)?;
        let client = Client::new(&settings.base_url, settings.compression, settings.timeout)
            .map_err(StartError::Client)?;
        let core = Arc::new(Core {
            queue: Queue::new(settings.queue_events, settings.queue_bytes),
            settings,
            client,
            stats: ExportStats::default(),
            key: RwLock::new(key),
            auth: AtomicU8::new(PENDING),
            recheck: Notify::new(),
            drain_deadline: Mutex::new(None),
            logged: Mutex::new(HashSet::new()),
        });
        let (tx, rx) = mpsc::channel(1);
        let c = core.clone();
        std::thread::Builder::new()
            .name("honeycomb-encoder".into())
            .spawn(move || encode_loop(&c, &tx))
            .map_err(StartError::Thread)?;
        let sender = tokio::spawn(send_loop(core.clone(), rx));
        tokio::spawn(auth_loop(core.clone()));
        let s = &core.settings;
        tracing::info!(base_url = %s.base_url, dataset = %s.dataset, mode = ?s.mode, compression = ?s.compression, batch_events = s.batch_events, flush_interval_ms = s.flush_interval.as_millis() as u64, queue_events = s.queue_events, "Honeycomb export on");
        Ok(Arc::new(Self {
            core,
            sender: Mutex::new(Some(sender)),
        }))
    }

    /// Hands a batch to the exporter without waiting; when the queue is full (or the key is
    /// refused) its events are dropped and counted.
    pub fn offer(&self, batch: Batch) {
        let n = batch.records.len() as u64;
        if n == 0 {
            return;
        }
        if self.core.auth.load(Relaxed) == REFUSED {
            self.core.stats.drop(Drop::Unauthorized, n);
            return;
        }
        let bytes = held_bytes(&batch);
        match self.core.queue.offer(Arc::new(batch), bytes) {
            Ok(()) => {}
            Err(Refusal::Full) => self.core.stats.drop(Drop::QueueFull, n),
            Err(Refusal::Closed) => self.core.stats.drop(Drop::Shutdown, n),
        }
    }

    /// True once Honeycomb has accepted the key on `GET /1/auth`.
    pub fn ready(&self) -> bool {
        self.core.auth.load(Relaxed) == ACCEPTED
    }

    pub fn stats(&self) -> &ExportStats {
        &self.core.stats
    }

    pub fn render(&self, out: &mut String) {
        self.core
            .stats
            .render(out, self.core.queue.depth(), self.ready());
    }

    /// Stops taking events and delivers what is held, for at most the drain timeout; whatever
    /// is left then is counted as dropped.
    pub async fn shutdown(&self) {
        let deadline = Instant::now() + self.core.settings.drain_timeout;
        if let Ok(mut d) = self.core.drain_deadline.lock() {
            *d = Some(deadline);
        }
        self.core.queue.close();
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = sender {
            let _ = tokio::time::timeout_at(deadline.into(), h).await;
        }
        let (left, bytes) = self.core.queue.depth();
        if left > 0 {
            self.core.stats.drop(Drop::Shutdown, left as u64);
            self.core.queue.release(left, bytes);
            tracing::warn!(
                events = left,
                "Honeycomb export: drain timeout reached; undelivered events dropped"
            );
        }
        tracing::info!(
            sent = self.core.stats.events_sent.load(Relaxed),
            "Honeycomb export stopped"
        );
    }
}

/// What a batch is accounted for in the queue's byte bound: its decoded size.
fn held_bytes(b: &Batch) -> usize {
    let strings: usize = b.strings.iter().map(|s| s.len() + 24).sum();
    strings
        + b.keys.len() * std::mem::size_of::<waggle_wire::Key>()
        + b.records.len() * std::mem::size_of::<Record>()
        + 128
}

/// An open batch for one dataset.
struct Open {
    body: Vec<u8>,
    events: usize,
    bytes: usize,
    opened: Instant,
}

impl Open {
    fn new() -> Self {
        Self {
            body: Vec::with_capacity(64 << 10),
            events: 0,
            bytes: 0,
            opened: Instant::now(),
        }
    }
}

struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    compression: Compression,
}

impl Encoder {
    fn compress(&mut self, body: Vec<u8>) -> std::io::Result<Vec<u8>> {
        use std::io::Write as _;
        match (self.compression, &mut self.zstd) {
            (Compression::Zstd, Some(z)) => z.compress(&body),
            (Compression::Gzip, _) => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 8),
                    flate2::Compression::fast(),
                );
                enc.write_all(&body)?;
                enc.finish()
            }
            _ => Ok(body),
        }
    }
}

fn encode_loop(core: &Core, tx: &mpsc::Sender<Sealed>) {
    let s = &core.settings;
    let mut enc = Encoder {
        // Level 2, as libhoney-go: most of the gain at a fraction of the cost.
        zstd: zstd::bulk::Compressor::new(2).ok(),
        compression: s.compression,
    };
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut clock = TimeCache::default();
    let mut rng = seed();
    let mut event = Vec::with_capacity(2048);
    loop {
        let deadline = open.values().map(|o| o.opened + s.flush_interval).min();
        match core.queue.pop(deadline) {
            Some(item) => {
                let batch = &item.batch;
                let n = batch.records.len();
                let mut shapes: Vec<Option<(Shape, String, u32)>> = Vec::new();
                shapes.resize_with(batch.keys.len(), || None);
                for (i, rec) in batch.records.iter().enumerate() {
                    let share = item.bytes * (i + 1) / n - item.bytes * i / n;
                    let Some(slot) = shapes.get_mut(rec.key as usize) else {
                        core.queue.release(1, share);
                        continue;
                    };
                    let (shape, dataset, rate) = slot.get_or_insert_with(|| {
                        let key = batch
                            .keys
                            .get(rec.key as usize)
                            .cloned()
                            .unwrap_or_default();
                        let service = service_name(batch, &key);
                        let rate = s.sample_rates.rate(&service);
                        let dataset = match s.mode {
                            DatasetMode::Single => s.dataset.clone(),
                            DatasetMode::PerService
                                if !service.is_empty() && service != "unknown" =>
                            {
                                service
                            }
                            DatasetMode::PerService => s.dataset.clone(),
                        };
                        (Shape::new(batch, &key), dataset, rate)
                    });
                    if *rate > 1 && !keep(batch, rec, *rate, &mut rng) {
                        core.stats.sampled_out.fetch_add(1, Relaxed);
                        core.queue.release(1, share);
                        continue;
                    }
                    event.clear();
                    push_event(&mut event, &mut clock, batch, shape, rec, *rate);
                    if event.len() > MAX_EVENT_BYTES {
                        core.stats.drop(Drop::TooLarge, 1);
                        core.queue.release(1, share);
                        continue;
                    }
                    // Keyed lookups by &str: the dataset name is cloned only when a batch opens.
                    let full = open.get(dataset.as_str()).is_some_and(|o| {
                        o.events > 0 && o.body.len() + event.len() + 2 > MAX_BATCH_BYTES
                    });
                    if full {
                        if let Some(o) = open.remove(dataset.as_str()) {
                            seal(core, &mut enc, tx, dataset.clone(), o);
                        }
                    }
                    if !open.contains_key(dataset.as_str()) {
                        open.insert(dataset.clone(), Open::new());
                    }
                    let Some(o) = open.get_mut(dataset.as_str()) else {
                        core.queue.release(1, share);
                        continue;
                    };
                    o.body.push(if o.events == 0 { b'[' } else { b',' });
                    o.body.extend_from_slice(&event);
                    o.events += 1;
                    o.bytes += share;
                    if o.events >= s.batch_events {
                        if let Some(full) = open.remove(dataset.as_str()) {
                            seal(core, &mut enc, tx, dataset.clone(), full);
                        }
                    }
                }
            }
            None if core.queue.is_closed() => {
                for (dataset, o) in open.drain() {
                    seal(core, &mut enc, tx, dataset, o);
                }
                return;
            }
            None => {}
        }
        let now = Instant::now();
        let due: Vec<String> = open
            .iter()
            .filter(|(_, o)| o.opened + s.flush_interval <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for d in due {
            if let Some(o) = open.remove(&d) {
                seal(core, &mut enc, tx, d, o);
            }
        }
    }
}

fn seal(core: &Core, enc: &mut Encoder, tx: &mpsc::Sender<Sealed>, dataset: String, mut o: Open) {
    if o.events == 0 {
        return;
    }
    o.body.push(b']');
    let body = match enc.compress(o.body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, events = o.events, "Honeycomb export: compression failed; batch dropped");
            core.stats.drop(Drop::BatchRefused, o.events as u64);
            core.queue.release(o.events, o.bytes);
            return;
        }
    };
    let sealed = Sealed {
        dataset,
        body: Bytes::from(body),
        events: o.events,
        bytes: o.bytes,
    };
    if let Err(mpsc::error::SendError(s)) = tx.blocking_send(sealed) {
        core.stats.drop(Drop::Shutdown, s.events as u64);
        core.queue.release(s.events, s.bytes);
    }
}

/// Keeps one event in `rate`. Traced requests are kept or not by their trace id, so every
/// sidecar on a trace makes the same choice and Honeycomb sees whole traces.
fn keep(batch: &Batch, rec: &Record, rate: u32, rng: &mut u64) -> bool {
    let h = match &rec.trace_id {
        Some(TraceId::Hex64(b)) => fnv(b),
        Some(TraceId::Hex128(b)) => fnv(b),
        Some(TraceId::Other(r)) => fnv(batch.str(*r).as_bytes()),
        None => next(rng),
    };
    h % u64::from(rate) == 0
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits are weak; fold the high half in before taking a remainder.
    h ^ (h >> 29)
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
        | 1
}

fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

async fn send_loop(core: Arc<Core>, mut rx: mpsc::Receiver<Sealed>) {
    let slots = core.settings.max_in_flight;
    let sem = Arc::new(Semaphore::new(slots));
    while let Some(batch) = rx.recv().await {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let core = core.clone();
        tokio::spawn(async move {
            deliver(&core, batch).await;
            drop(permit);
        });
    }
    let _ = sem.acquire_many(slots as u32).await;
}

fn backoff(s: &ExportSettings, attempt: u32, rng: &mut u64) -> Duration {
    let base = s
        .retry_initial
        .saturating_mul(1u32 << attempt.min(20))
        .min(s.retry_max);
    // Full jitter over the upper half, so a fleet of backends does not retry in step.
    let frac = 0.5 + (next(rng) % 1000) as f64 / 2000.0;
    base.mul_f64(frac)
}

async fn deliver(core: &Core, batch: Sealed) {
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut rng = seed();
    loop {
        if core.auth.load(Relaxed) == REFUSED {
            core.stats.drop(Drop::Unauthorized, batch.events as u64);
            break;
        }
        let key = core.key.read().map(|k| k.clone()).unwrap_or_default();
        match core
            .client
            .send(&key, &batch.dataset, batch.body.clone(), batch.events)
            .await
        {
            Answer::Accepted { refused } => {
                let taken = batch.events.saturating_sub(refused.len());
                core.stats.events_sent.fetch_add(taken as u64, Relaxed);
                core.stats.batches_sent.fetch_add(1, Relaxed);
                core.stats
                    .bytes_sent
                    .fetch_add(batch.body.len() as u64, Relaxed);
                if !refused.is_empty() {
                    core.stats.drop(Drop::Rejected, refused.len() as u64);
                    log_refusals(core, &batch.dataset, &refused);
                }
                break;
            }
            Answer::Unauthorized => {
                if core.auth.swap(REFUSED, Relaxed) != REFUSED {
                    tracing::error!(dataset = %batch.dataset, "Honeycomb refused the key (401): export stopped and /-/ready fails until GET /1/auth accepts a key. It needs an ingest key, or a configuration key with the Send Events permission");
                    core.recheck.notify_one();
                }
                core.stats.drop(Drop::Unauthorized, batch.events as u64);
                break;
            }
            Answer::Refused(why) => {
                tracing::error!(dataset = %batch.dataset, events = batch.events, reason = %why, "Honeycomb refused a batch; it is dropped, not retried");
                core.stats.drop(Drop::BatchRefused, batch.events as u64);
                break;
            }
            Answer::Retry(why) => {
                let deadline = core.drain_deadline.lock().ok().and_then(|d| *d);
                let delay = backoff(&core.settings, attempt, &mut rng);
                if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                    core.stats.drop(Drop::Shutdown, batch.events as u64);
                    tracing::warn!(dataset = %batch.dataset, events = batch.events, reason = %why, "Honeycomb export: no time left to retry before shutdown; batch dropped");
                    break;
                }
                core.stats.retries.fetch_add(1, Relaxed);
                if attempt == 0 {
                    tracing::warn!(dataset = %batch.dataset, events = batch.events, reason = %why, "Honeycomb batch will be retried");
                } else {
                    tracing::debug!(dataset = %batch.dataset, attempt, reason = %why, delay_ms = delay.as_millis() as u64, "Honeycomb batch retry");
                }
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
    core.queue.release(batch.events, batch.bytes);
    core.stats.observe(started.elapsed().as_secs_f64());
}

fn log_refusals(core: &Core, dataset: &str, refused: &[(usize, String)]) {
    let Ok(mut logged) = core.logged.lock() else {
        return;
    };
    for (index, why) in refused {
        // Bounded: a server inventing endless reasons must not grow memory.
        if logged.len() < 256 && logged.insert(why.clone()) {
            tracing::warn!(dataset, index, reason = %why, "Honeycomb refused an event (logged once per reason; all are counted in waggle_honeycomb_events_dropped_total{{reason=\"rejected\"}})");
        }
    }
}

async fn auth_loop(core: Arc<Core>) {
    let mut attempt = 0u32;
    let mut rng = seed();
    loop {
        let key = match core.settings.key.read() {
            Ok(k) => k,
            Err(why) => {
                core.auth.store(REFUSED, Relaxed);
                tracing::error!(reason = %why, "Honeycomb export stopped: no usable key");
                wait(&core, core.settings.auth_recheck).await;
                continue;
            }
        };
        if let Ok(mut k) = core.key.write() {
            *k = key.clone();
        }
        match core.client.auth(&key).await {
            Auth::Accepted {
                key_type,
                environment,
                team,
            } => {
                attempt = 0;
                core.auth.store(ACCEPTED, Relaxed);
                tracing::info!(key_type = %key_type, environment = %environment, team = %team, "Honeycomb accepted the key");
                // Checked again only when a batch is refused with 401.
                core.recheck.notified().await;
            }
            Auth::Refused(why) => {
                core.auth.store(REFUSED, Relaxed);
                tracing::error!(reason = %why, recheck_s = core.settings.auth_recheck.as_secs(), "Honeycomb export stopped and /-/ready fails until the key is accepted");
                wait(&core, core.settings.auth_recheck).await;
            }
            Auth::Retry(why) => {
                let delay = backoff(&core.settings, attempt, &mut rng);
                attempt = attempt.saturating_add(1);
                tracing::warn!(reason = %why, retry_ms = delay.as_millis() as u64, "Honeycomb GET /1/auth failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn wait(core: &Core, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = core.recheck.notified() => {}
    }
}
