//! A remote-write receiver for fault tests: it records every attempt (headers, status, the
//! decoded series), answers from a script (a status with headers, or hanging up) and, when
//! not told otherwise, forwards to a real receiver (Prometheus, VictoriaMetrics) and answers
//! with its status.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waggle::api::ingest::WriteRequest;

use crate::capture::{Received, Reply, Server};

/// What the receiver does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pass it on to the upstream receiver (204 without one).
    Forward,
    /// Answer this status with these headers.
    Answer(u16, Vec<(String, String)>),
    /// Close the connection without answering: the receiver is down.
    HangUp,
}

/// One request as received, and how it was answered (0: hung up).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub headers: Vec<(String, String)>,
    pub status: u16,
    pub request: WriteRequest,
}

impl Attempt {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn samples(&self) -> usize {
        self.request
            .timeseries
            .iter()
            .map(|t| t.samples.len())
            .sum()
    }
}

struct State {
    /// Answers for the next requests, before `mode` applies.
    script: VecDeque<Action>,
    mode: Action,
    attempts: Vec<Attempt>,
}

pub struct Receiver {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts it; `upstream` is a write URL to forward to.
    pub fn start(upstream: Option<String>) -> Self {
        let state = Arc::new(Mutex::new(State {
            script: VecDeque::new(),
            mode: Action::Forward,
            attempts: Vec::new(),
        }));
        let s = state.clone();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let server = Server::start(move |r: &Received| handle(&s, &http, upstream.as_deref(), r))
            .expect("receiver");
        Self { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.server.addr())
    }

    /// What every request gets from now on (after any scripted answers).
    pub fn set(&self, mode: Action) {
        if let Ok(mut s) = self.state.lock() {
            s.mode = mode;
        }
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, actions: impl IntoIterator<Item = Action>) {
        if let Ok(mut s) = self.state.lock() {
            s.script.extend(actions);
        }
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.state
            .lock()
            .map(|s| s.attempts.clone())
            .unwrap_or_default()
    }

    /// Samples of delivered requests (2xx), per series (labels as text) in arrival order.
    pub fn delivered(&self) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
        let mut out: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
        for a in self
            .attempts()
            .iter()
            .filter(|a| (200..300).contains(&a.status))
        {
            for ts in &a.request.timeseries {
                let key = ts
                    .labels
                    .iter()
                    .map(|l| format!("{}={:?}", l.name, l.value))
                    .collect::<Vec<_>>()
                    .join(",");
                out.entry(key)
                    .or_default()
                    .extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
            }
        }
        out
    }
}

fn handle(
    state: &Mutex<State>,
    http: &reqwest::blocking::Client,
    upstream: Option<&str>,
    r: &Received,
) -> Reply {
    let request = snap::raw::Decoder::new()
        .decompress_vec(&r.body)
        .ok()
        .and_then(|raw| prost::Message::decode(raw.as_slice()).ok())
        .unwrap_or_default();
    let action = {
        let mut s = state.lock().expect("lock");
        let mode = s.mode.clone();
        s.script.pop_front().unwrap_or(mode)
    };
    let (status, reply) = match action {
        Action::HangUp => (0, Reply::hang_up()),
        Action::Answer(status, headers) => (
            status,
            Reply {
                headers,
                body: format!("scripted {status}").into_bytes(),
                ..Reply::status(status)
            },
        ),
        Action::Forward => match upstream {
            None => (204, Reply::status(204)),
            Some(url) => {
                let mut req = http.post(url).body(r.body.clone());
                for (k, v) in &r.headers {
                    if !matches!(k.as_str(), "host" | "content-length" | "connection") {
                        req = req.header(k.as_str(), v.as_str());
                    }
                }
                match req.send() {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
                        (
                            status,
                            Reply {
                                body,
                                ..Reply::status(status)
                            },
                        )
                    }
                    Err(_) => (502, Reply::status(502)),
                }
            }
        },
    };
    if let Ok(mut s) = state.lock() {
        s.attempts.push(Attempt {
            at: Instant::now(),
            headers: r.headers.clone(),
            status,
            request,
        });
    }
    reply
}
