//! A Honeycomb API emulator, faithful to the documented Events API (`POST /1/batch/{dataset}`,
//! `GET /1/auth`): it checks headers, decodes zstd and gzip, validates every event against the
//! documented shape and limits, answers with the per-event status array, records what it
//! accepted, and can be told to misbehave (429, 5xx, per-event 400s, 401, slowness, hang-ups).

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::capture::{Received, Reply, Server};

/// One event Honeycomb accepted.
#[derive(Debug, Clone)]
pub struct Event {
    pub dataset: String,
    pub time: Option<Value>,
    pub samplerate: Option<Value>,
    pub data: Map<String, Value>,
}

/// One batch request as it arrived, for comparing clients' request shapes.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    pub headers: Vec<(String, String)>,
    pub encoding: Option<String>,
    pub wire_bytes: usize,
    pub json_bytes: usize,
    /// The decoded body, when it was a JSON array.
    pub events: Vec<Value>,
    /// What the emulator answered (0 for a hang-up).
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A misbehaviour, applied to the next batch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without reading the events (429, 500, 503, 400...).
    Status(u16),
    /// Close the connection without answering, events not taken.
    HangUp,
    /// Wait this long, then process the request normally.
    Slow(Duration),
}

type Rejector = dyn Fn(&Map<String, Value>) -> Option<String> + Send + Sync;

#[derive(Default)]
struct State {
    /// key → (type, may send events)
    keys: HashMap<String, (&'static str, bool)>,
    faults: VecDeque<Fault>,
    /// Applied to every batch request while set, after scripted faults run out.
    always: Option<Fault>,
    reject: Option<Arc<Rejector>>,
    accepted: Vec<Event>,
    requests: Vec<Request>,
    /// Departures from the documented request shape (tests expect none).
    problems: Vec<String>,
    auth_calls: usize,
    light: bool,
}

#[derive(Clone)]
pub struct Emulator {
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
}

pub const INGEST_KEY: &str = "hcxik_01emulatoringestkey0000000000000000000000000000000000000000";

impl Emulator {
    /// Starts on an ephemeral port, accepting [`INGEST_KEY`].
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        state
            .lock()
            .expect("lock")
            .keys
            .insert(INGEST_KEY.into(), ("ingest", true));
        let s = state.clone();
        let server = Server::start(move |r: &Received| handle(&s, r)).expect("emulator");
        Self {
            state,
            server: Arc::new(server),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("lock"))
    }

    pub fn add_key(&self, key: &str, key_type: &'static str, send_events: bool) {
        self.with(|s| s.keys.insert(key.into(), (key_type, send_events)));
    }

    pub fn revoke(&self, key: &str) {
        self.with(|s| s.keys.remove(key));
    }

    /// Queues faults for the next batch requests, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.with(|s| s.faults.extend(faults));
    }

    /// A fault for every batch request (after the script), or none.
    pub fn always(&self, fault: Option<Fault>) {
        self.with(|s| s.always = fault);
    }

    /// Refuses (per-event 400) every event for which `f` names a reason.
    pub fn reject(
        &self,
        f: impl Fn(&Map<String, Value>) -> Option<String> + Send + Sync + 'static,
    ) {
        self.with(|s| s.reject = Some(Arc::new(f)));
    }

    /// Keeps counts only, not events or request bodies (for benchmarks).
    pub fn light(&self) {
        self.with(|s| s.light = true);
    }

    pub fn accepted(&self) -> Vec<Event> {
        self.with(|s| s.accepted.clone())
    }

    pub fn accepted_count(&self) -> usize {
        self.with(|s| s.accepted.len())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.with(|s| s.requests.clone())
    }

    pub fn problems(&self) -> Vec<String> {
        self.with(|s| s.problems.clone())
    }

    pub fn auth_calls(&self) -> usize {
        self.with(|s| s.auth_calls)
    }

    /// Waits until at least `n` events were accepted or `timeout` passes; returns the count.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.accepted_count();
            if got >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn error(status: u16, msg: &str) -> Reply {
    Reply::json(status, json!({ "error": msg }).to_string())
}

fn handle(state: &Mutex<State>, r: &Received) -> Reply {
    let path = r.path.split('?').next().unwrap_or_default().to_owned();
    let key = r.header("x-honeycomb-team").map(str::to_owned);
    let mut st = state.lock().expect("lock");
    let known = key.as_ref().and_then(|k| st.keys.get(k).copied());
    if path == "/1/auth" && r.method == "GET" {
        st.auth_calls += 1;
        return match known {
            None => error(401, "unknown API key - check your credentials"),
            Some((kind, events)) => {
                let access = if kind == "ingest" {
                    json!({ "createDatasets": true })
                } else {
                    json!({ "events": events, "markers": false, "queries": true, "createDatasets": true })
                };
                Reply::json(
                    200,
                    json!({
                        "id": "hcxik_01emulator",
                        "type": kind,
                        "api_key_access": access,
                        "environment": { "name": "Emulated", "slug": "emulated" },
                        "team": { "name": "waggle", "slug": "waggle" },
                    })
                    .to_string(),
                )
            }
        };
    }
    let Some(raw) = path.strip_prefix("/1/batch/") else {
        st.problems
            .push(format!("{} {path}: not an Events API endpoint", r.method));
        return error(404, "not found");
    };
    if r.method != "POST" {
        st.problems
            .push(format!("{} {path}: batches are POSTed", r.method));
        return error(405, "method not allowed");
    }
    let dataset = percent_decode(raw);
    let fault = st.faults.pop_front().or_else(|| st.always.clone());
    let mut delay = Duration::ZERO;
    let mut request = Request {
        dataset: dataset.clone(),
        headers: r.headers.clone(),
        encoding: r.header("content-encoding").map(str::to_owned),
        wire_bytes: r.body.len(),
        json_bytes: 0,
        events: Vec::new(),
        status: 0,
    };
    match fault {
        Some(Fault::Status(s)) => {
            request.status = s;
            st.requests.push(request);
            let msg = match s {
                429 => "Request dropped due to rate limiting.",
                400 => "Request body is malformed and cannot be read.",
                _ => "internal error",
            };
            return error(s, msg);
        }
        Some(Fault::HangUp) => {
            st.requests.push(request);
            return Reply::hang_up();
        }
        Some(Fault::Slow(d)) => delay = d,
        None => {}
    }
    if known.is_none_or(|(_, events)| !events) {
        request.status = 401;
        st.requests.push(request);
        return Reply {
            delay,
            ..error(401, "unknown API key - check your credentials")
        };
    }
    if dataset.trim().is_empty() {
        st.problems.push("empty dataset name".into());
    }
    if !r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        st.problems.push(format!(
            "content-type {:?} is not application/json",
            r.header("content-type")
        ));
    }
    let body = match decode(r.header("content-encoding"), &r.body) {
        Ok(b) => b,
        Err(e) => {
            st.problems.push(e);
            request.status = 400;
            st.requests.push(request);
            return error(400, "Request body is malformed and cannot be read.");
        }
    };
    request.json_bytes = body.len();
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            st.problems.push(format!("body is not JSON: {e}"));
            request.status = 400;
            st.requests.push(request);
            return error(400, "Request body is malformed and cannot be read.");
        }
    };
    let Value::Array(events) = parsed else {
        st.problems.push("body is not a JSON array".into());
        request.status = 400;
        st.requests.push(request);
        return error(400, "Request body is malformed and cannot be read.");
    };
    if events.is_empty() {
        request.status = 400;
        st.requests.push(request);
        return error(400, "Request body should not be empty.");
    }
    let mut statuses = Vec::with_capacity(events.len());
    let reject = st.reject.clone();
    for ev in &events {
        match validate(ev) {
            Err(why) => {
                st.problems.push(why.clone());
                statuses.push(json!({ "status": 400, "error": why }));
            }
            Ok(data) => {
                if let Some(why) = reject.as_ref().and_then(|f| f(data)) {
                    statuses.push(json!({ "status": 400, "error": why }));
                    continue;
                }
                statuses.push(json!({ "status": 202 }));
                let light = st.light;
                st.accepted.push(Event {
                    dataset: dataset.clone(),
                    time: if light { None } else { ev.get("time").cloned() },
                    samplerate: if light {
                        None
                    } else {
                        ev.get("samplerate").cloned()
                    },
                    data: if light { Map::new() } else { data.clone() },
                });
            }
        }
    }
    request.status = 200;
    if !st.light {
        request.events = events;
    }
    st.requests.push(request);
    Reply {
        delay,
        ..Reply::json(200, Value::Array(statuses).to_string())
    }
}

/// The documented event shape: `data` with 1 to 2,000 string, number or boolean fields, strings
/// up to 64 KB, under 1 MB in all; `time` RFC 3339 or Unix seconds; `samplerate` a positive
/// integer.
fn validate(ev: &Value) -> Result<&Map<String, Value>, String> {
    let Value::Object(obj) = ev else {
        return Err("Request body is malformed and cannot be read.".into());
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "data" | "time" | "samplerate"))
    {
        return Err(format!("unknown event member {k:?}"));
    }
    let Some(Value::Object(data)) = obj.get("data") else {
        return Err("event has no data object".into());
    };
    if data.is_empty() {
        return Err("Request body should not be empty.".into());
    }
    if data.len() > 2000 {
        return Err("Event has too many columns.".into());
    }
    if ev.to_string().len() >= 1_000_000 {
        return Err("Event is too large.".into());
    }
    for (k, v) in data {
        match v {
            Value::String(s) if s.len() > 65_536 => {
                return Err(format!("string field {k} exceeds 64KB"))
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            other => return Err(format!("field {k} has unsupported type: {other}")),
        }
    }
    match obj.get("time") {
        None => {}
        Some(Value::String(t)) => {
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("time {t:?} is not RFC3339: {e}"))?;
        }
        Some(Value::Number(_)) => {}
        Some(other) => return Err(format!("time {other} is neither RFC3339 nor a number")),
    }
    match obj.get("samplerate") {
        None => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {}
        Some(other) => return Err(format!("samplerate {other} is not a positive integer")),
    }
    Ok(data)
}

fn decode(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
    match encoding {
        None => Ok(body.to_vec()),
        Some("zstd") => zstd::stream::decode_all(body).map_err(|e| format!("bad zstd body: {e}")),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("bad gzip body: {e}"))?;
            Ok(out)
        }
        Some(other) => Err(format!(
            "content-encoding {other:?} is neither gzip nor zstd"
        )),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
