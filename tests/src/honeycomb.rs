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
    /// Configuration keys → whether they may run queries.
    query_keys: HashMap<String, bool>,
    /// Query specifications by id, with their dataset.
    queries: HashMap<String, (String, Value)>,
    /// Query results: id → (when created, how long until complete, the answer).
    results: HashMap<String, (Instant, Duration, Value)>,
    result_times: VecDeque<Instant>,
    /// How long a query result takes to complete.
    query_delay: Duration,
    /// Query results allowed per minute (Honeycomb: 10).
    query_limit: usize,
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
/// A configuration key with Manage Queries and Columns and Run Queries.
pub const QUERY_KEY: &str = "emulatorquerykey000001";

impl Emulator {
    /// Starts on an ephemeral port, accepting [`INGEST_KEY`].
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        state
            .lock()
            .expect("lock")
            .keys
            .insert(INGEST_KEY.into(), ("ingest", true));
        {
            let mut st = state.lock().expect("lock");
            st.query_keys.insert(QUERY_KEY.into(), true);
            st.query_limit = 10;
        }
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

    /// A configuration key; `run_queries` false gives it no query permission (403).
    pub fn add_query_key(&self, key: &str, run_queries: bool) {
        self.with(|s| s.query_keys.insert(key.into(), run_queries));
    }

    /// Query results complete this long after they are created.
    pub fn query_delay(&self, d: Duration) {
        self.with(|s| s.query_delay = d);
    }

    /// Query results created so far (each counts against the 10-per-minute limit).
    pub fn query_results_created(&self) -> usize {
        self.with(|s| s.results.len())
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
    if path.starts_with("/1/queries/") || path.starts_with("/1/query_results/") {
        return query_api(&mut st, r, &path, key.as_deref());
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

/// The Query Data API: `POST /1/queries/{dataset}`, `POST /1/query_results/{dataset}`,
/// `GET /1/query_results/{dataset}/{id}`, answered from the events this emulator accepted.
fn query_api(st: &mut State, r: &Received, path: &str, key: Option<&str>) -> Reply {
    match key.and_then(|k| st.query_keys.get(k).copied()) {
        None => return error(401, "unknown API key - check your credentials"),
        Some(false) => return error(403, "API key is missing the Run Queries permission"),
        Some(true) => {}
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), parts.as_slice()) {
        ("POST", ["1", "queries", ds]) => {
            let Ok(spec) = serde_json::from_slice::<Value>(&r.body) else {
                return error(400, "request body is not JSON");
            };
            if let Err(why) = validate_spec(&spec) {
                st.problems.push(format!("query spec: {why}"));
                return error(422, &why);
            }
            let id = format!("q{}", st.queries.len() + 1);
            st.queries
                .insert(id.clone(), (percent_decode(ds), spec.clone()));
            let mut out = spec;
            out["id"] = json!(id);
            Reply::json(200, out.to_string())
        }
        ("POST", ["1", "query_results", ds]) => {
            while st
                .result_times
                .front()
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
            {
                st.result_times.pop_front();
            }
            if st.result_times.len() >= st.query_limit {
                return error(429, "This endpoint allows 10 requests per minute.");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                return error(400, "request body is not JSON");
            };
            let ds = percent_decode(ds);
            let Some((qds, spec)) = body["query_id"]
                .as_str()
                .and_then(|q| st.queries.get(q))
                .cloned()
            else {
                return error(404, "query not found");
            };
            if qds != ds {
                return error(400, "the dataset does not match the query's");
            }
            st.result_times.push_back(Instant::now());
            let results = compute(&st.accepted, &ds, &spec);
            let id = format!("r{}", st.results.len() + 1);
            st.results
                .insert(id.clone(), (Instant::now(), st.query_delay, results));
            Reply::json(
                201,
                json!({"id": id, "complete": false, "query": spec}).to_string(),
            )
        }
        ("GET", ["1", "query_results", _ds, id]) => match st.results.get(*id) {
            None => error(404, "query result not found"),
            Some((at, delay, results)) if at.elapsed() >= *delay => Reply::json(
                200,
                json!({"id": id, "complete": true, "data": {"results": results}}).to_string(),
            ),
            Some(_) => Reply::json(200, json!({"id": id, "complete": false}).to_string()),
        },
        _ => error(404, "not found"),
    }
}

const CALCULATIONS: &[&str] = &[
    "COUNT",
    "CONCURRENCY",
    "SUM",
    "AVG",
    "COUNT_DISTINCT",
    "HEATMAP",
    "MAX",
    "MIN",
    "P001",
    "P01",
    "P05",
    "P10",
    "P20",
    "P25",
    "P50",
    "P75",
    "P80",
    "P90",
    "P95",
    "P99",
    "P999",
    "RATE_AVG",
    "RATE_SUM",
    "RATE_MAX",
];
const FILTER_OPS: &[&str] = &[
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "starts-with",
    "does-not-start-with",
    "ends-with",
    "does-not-end-with",
    "exists",
    "does-not-exist",
    "contains",
    "does-not-contain",
    "in",
    "not-in",
];

/// The documented query specification: known calculation and filter ops, a column where the op
/// needs one, at most one of the three time fields combinations allowed.
fn validate_spec(spec: &Value) -> Result<(), String> {
    for c in spec["calculations"].as_array().into_iter().flatten() {
        let op = c["op"].as_str().unwrap_or("");
        if !CALCULATIONS.contains(&op) {
            return Err(format!("unknown calculation op {op:?}"));
        }
        if !matches!(op, "COUNT" | "CONCURRENCY") && c["column"].as_str().is_none() {
            return Err(format!("{op} needs a column"));
        }
    }
    for f in spec["filters"].as_array().into_iter().flatten() {
        let op = f["op"].as_str().unwrap_or("");
        if !FILTER_OPS.contains(&op) {
            return Err(format!("unknown filter op {op:?}"));
        }
        if f["column"].as_str().is_none() {
            return Err("a filter without a column".into());
        }
        if matches!(op, "in" | "not-in") != f["value"].is_array() {
            return Err(format!(
                "filter {op} takes an array exactly when it is in or not-in"
            ));
        }
    }
    if !matches!(
        spec["filter_combination"].as_str(),
        None | Some("AND") | Some("OR")
    ) {
        return Err("filter_combination is AND or OR".into());
    }
    let set = ["time_range", "start_time", "end_time"]
        .iter()
        .filter(|k| !spec[**k].is_null())
        .count();
    if set == 3 {
        return Err("time_range, start_time and end_time cannot all be set".into());
    }
    Ok(())
}

fn matches_filter(data: &Map<String, Value>, f: &Value) -> bool {
    let col = f["column"].as_str().unwrap_or("");
    let v = data.get(col);
    let want = &f["value"];
    let num = |x: &Value| x.as_f64();
    let cmp = |ord: fn(f64, f64) -> bool| match (v.and_then(num), num(want)) {
        (Some(a), Some(b)) => ord(a, b),
        _ => false,
    };
    let text = |x: Option<&Value>| {
        x.and_then(|x| x.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    match f["op"].as_str().unwrap_or("") {
        "=" => v == Some(want),
        "!=" => v != Some(want),
        ">" => cmp(|a, b| a > b),
        ">=" => cmp(|a, b| a >= b),
        "<" => cmp(|a, b| a < b),
        "<=" => cmp(|a, b| a <= b),
        "exists" => v.is_some(),
        "does-not-exist" => v.is_none(),
        "in" => want
            .as_array()
            .is_some_and(|a| v.is_some_and(|v| a.contains(v))),
        "not-in" => want
            .as_array()
            .is_some_and(|a| !v.is_some_and(|v| a.contains(v))),
        "starts-with" => v.is_some() && text(v).starts_with(&text(Some(want))),
        "does-not-start-with" => !(v.is_some() && text(v).starts_with(&text(Some(want)))),
        "contains" => text(v).contains(&text(Some(want))),
        "does-not-contain" => !text(v).contains(&text(Some(want))),
        _ => false,
    }
}

/// One breakdown row: its key values, (duration, weight) pairs, and the weighted count.
type Group = (Vec<Value>, Vec<(f64, u64)>, u64);

/// Runs a query over the accepted events: time range (rounded up to whole minutes, as the Query
/// Data API rounds), filters, breakdowns, and COUNT or percentile calculations weighted by
/// each event's samplerate.
fn compute(events: &[Event], dataset: &str, spec: &Value) -> Value {
    let range = spec["time_range"].as_u64().unwrap_or(7200).div_ceil(60) * 60;
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::seconds(range as i64);
    let or = spec["filter_combination"].as_str() == Some("OR");
    let filters: Vec<Value> = spec["filters"].as_array().cloned().unwrap_or_default();
    let breakdowns: Vec<String> = spec["breakdowns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect();
    let mut groups: std::collections::BTreeMap<String, Group> = Default::default();
    for e in events {
        if dataset != "__all__" && !e.dataset.eq_ignore_ascii_case(dataset) {
            continue;
        }
        let t = e
            .time
            .as_ref()
            .and_then(|t| t.as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if !t.is_some_and(|t| t >= from && t <= now) {
            continue;
        }
        let pass = |f: &Value| matches_filter(&e.data, f);
        if !filters.is_empty()
            && !(if or {
                filters.iter().any(pass)
            } else {
                filters.iter().all(pass)
            })
        {
            continue;
        }
        let key: Vec<Value> = breakdowns
            .iter()
            .map(|b| e.data.get(b).cloned().unwrap_or(Value::Null))
            .collect();
        let weight = e
            .samplerate
            .as_ref()
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1);
        let g = groups
            .entry(Value::Array(key.clone()).to_string())
            .or_insert_with(|| (key, Vec::new(), 0));
        g.2 += weight;
        if let Some(d) = e.data.get("duration_ms").and_then(Value::as_f64) {
            g.1.push((d, weight));
        }
    }
    let mut out = Vec::new();
    for (_, (key, mut durations, count)) in groups {
        let mut data = Map::new();
        for (b, v) in breakdowns.iter().zip(key) {
            data.insert(b.clone(), v);
        }
        durations.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: u64 = durations.iter().map(|d| d.1).sum();
        for c in spec["calculations"].as_array().into_iter().flatten() {
            let op = c["op"].as_str().unwrap_or("COUNT");
            if op == "COUNT" {
                data.insert("COUNT".into(), json!(count));
            } else if let Some(p) = op.strip_prefix('P') {
                let q: f64 = format!("0.{p}").parse().unwrap_or(0.5);
                // Nearest rank over the samplerate-weighted events.
                let rank = ((q * total as f64).ceil() as u64).max(1);
                let mut seen = 0;
                let v = durations
                    .iter()
                    .find(|d| {
                        seen += d.1;
                        seen >= rank
                    })
                    .map(|d| d.0);
                data.insert(
                    format!("{op}({})", c["column"].as_str().unwrap_or("")),
                    json!(v),
                );
            }
        }
        out.push(json!({ "data": data }));
    }
    Value::Array(out)
}
