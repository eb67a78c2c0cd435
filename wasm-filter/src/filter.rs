//! The proxy-wasm contexts: a thin adapter from Envoy's callbacks to [`Outbox`] and [`record`].

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use waggle_wire::MeshKind;

use crate::attributes::{self, Answer, Attr, Lazy};
use crate::config::Config;
use crate::host::{self, Host};
use crate::identity;
use crate::outbox::{Outbox, Outcome, Transport};
use crate::record::Options;
use crate::recorder::Recorder;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// How a request's attributes are read.
enum Reader {
    /// One `expr_evaluate` per request of an expression compiled at configuration time.
    Expression { token: u32, attrs: Vec<Attr> },
    /// One `proxy_get_property` per attribute: proxies without Envoy's CEL foreign functions.
    Properties,
}

/// What the request contexts share with their root: one per worker VM.
struct Shared {
    recorder: Recorder,
    reader: Reader,
    /// Set once an evaluation failed, so the fallback is logged once.
    evaluation_failed: bool,
    /// The proxy's clock at the last tick (at most one tick old). Requests take it instead of
    /// asking: a clock call costs up to about 2 µs in Envoy 1.40's V8, and what a request needs
    /// it for (when a batch opened, cache ages) does not need better than a tick.
    clock_ns: u64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Reader::Expression { token, .. } = self.reader {
            let _ = host::call_foreign("expr_delete", &token.to_le_bytes());
        }
    }
}

/// Compiles the expression listing `attrs`, or says why the proxy cannot.
fn reader(attrs: Vec<Attr>) -> Reader {
    let expression = attributes::expression(&attrs);
    match host::call_foreign("expr_create", expression.as_bytes()) {
        Ok(token) => match <[u8; 4]>::try_from(token.as_slice()) {
            Ok(t) => {
                info!("waggle reads each request's attributes with one expression evaluation");
                Reader::Expression {
                    token: u32::from_le_bytes(t),
                    attrs,
                }
            }
            Err(_) => {
                warn!("waggle: expr_create answered {} bytes, not a token; reading attributes one at a time", token.len());
                Reader::Properties
            }
        },
        Err(status) => {
            info!("waggle: this proxy cannot evaluate expressions (expr_create: status {status}); reading attributes one at a time");
            Reader::Properties
        }
    }
}

/// Outgoing call settings, fixed at configuration time.
struct Ingest {
    cluster: String,
    path: String,
    authority: String,
    authorization: Option<String>,
    timeout: Duration,
}

#[derive(Default)]
struct Root {
    /// `None` until configured, and after an invalid configuration: traffic then passes untouched.
    recorder: Option<Rc<RefCell<Shared>>>,
    ingest: Option<Ingest>,
    logged_refusals: Vec<u16>,
    failing: bool,
}

fn now_ns(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A per-VM id from WASI randomness, so the backend can tell worker VMs apart.
fn vm_id(seed: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(seed);
    h.finish()
}

struct Caller<'a> {
    root: &'a Root,
    ingest: &'a Ingest,
}

impl Transport for Caller<'_> {
    fn send(&mut self, body: &[u8]) -> Option<u32> {
        let i = self.ingest;
        let mut headers = vec![
            (":method", "POST"),
            (":path", i.path.as_str()),
            (":authority", i.authority.as_str()),
            ("content-type", waggle_wire::CONTENT_TYPE),
        ];
        if let Some(a) = &i.authorization {
            headers.push(("authorization", a.as_str()));
        }
        self.root
            .dispatch_http_call(&i.cluster, headers, Some(body), vec![], i.timeout)
            .ok()
    }
}

impl Root {
    fn configure(&mut self) -> Result<(), String> {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let parsed = Config::parse(&bytes).map_err(|e| e.to_string())?;
        for w in &parsed.warnings {
            warn!("waggle plugin configuration: {w}");
        }
        let config = parsed.config;
        let token = match (&config.token, &config.token_env) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                format!("invalid waggle plugin configuration: token_env: the VM environment has no variable {var:?} (set it with the WasmPlugin's vmConfig.env)")
            })?),
            (None, None) => None,
        };
        let local = identity::local(&Host);
        let now = now_ns(self);
        let options = Options {
            capture_path: config.capture_path,
            max_path_len: config.max_path_len,
        };
        let outbox = Outbox::new(&config, local.clone(), vm_id(now));
        self.ingest = Some(Ingest {
            cluster: config.cluster.clone(),
            path: config.path.clone(),
            authority: config.authority().to_owned(),
            authorization: token.map(|t| format!("Bearer {t}")),
            timeout: Duration::from_millis(config.timeout_ms),
        });
        info!(
            "waggle recording as {}.{}; batches to {} every {} ms or {} events",
            local.workload.workload,
            local.workload.namespace,
            config.cluster,
            config.flush_interval_ms,
            config.max_batch_events
        );
        // Drop the previous configuration's expression before compiling this one's.
        self.recorder = None;
        let attrs = attributes::wanted(options.capture_path).collect();
        let reader = if config.expression {
            reader(attrs)
        } else {
            info!("waggle reads request attributes one at a time (expression: false)");
            Reader::Properties
        };
        self.recorder = Some(Rc::new(RefCell::new(Shared {
            recorder: Recorder::new(outbox, local, options),
            reader,
            evaluation_failed: false,
            clock_ns: now_ns(self),
        })));
        self.set_tick_period(Duration::from_millis(config.tick_ms()));
        Ok(())
    }

    fn pump(&mut self) {
        let now = now_ns(self);
        let now_ms = now / 1_000_000;
        let Some(Ok(mut r)) = self.recorder.as_ref().map(|r| r.try_borrow_mut()) else {
            return;
        };
        r.clock_ns = now;
        let Some(ingest) = &self.ingest else {
            return;
        };
        r.recorder
            .outbox
            .pump(now_ms, &mut Caller { root: self, ingest });
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let status = if num_headers == 0 {
            None
        } else {
            host::call_response_status()
        };
        let outcome = Outcome::from_status(status);
        match outcome {
            Outcome::Refused(s) if !self.logged_refusals.contains(&s) => {
                self.logged_refusals.push(s);
                error!("waggle backend refused a batch with HTTP {s}; its events are dropped and counted (logged once per status)");
            }
            Outcome::Failed if !self.failing => {
                self.failing = true;
                warn!("waggle backend call failed ({status:?}); retrying with backoff");
            }
            Outcome::Accepted if self.failing => {
                self.failing = false;
                info!("waggle backend reachable again");
            }
            _ => {}
        }
        let now_ms = now_ns(self) / 1_000_000;
        if let Some(recorder) = &self.recorder {
            if let Ok(mut r) = recorder.try_borrow_mut() {
                r.recorder.outbox.on_response(token, outcome, now_ms);
            }
        }
        self.pump();
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        if let Err(e) = self.configure() {
            self.recorder = None;
            error!("{e}; waggle is passing traffic through without recording");
        }
        // Always accept: a bad configuration must never make requests fail.
        true
    }

    fn on_tick(&mut self) {
        self.pump();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let kuma = self.recorder.as_ref().is_some_and(|r| {
            r.try_borrow()
                .is_ok_and(|s| s.recorder.local.mesh == MeshKind::Kuma)
        });
        Some(Box::new(Request {
            recorder: self.recorder.clone(),
            kuma,
            tags_header: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    recorder: Option<Rc<RefCell<Shared>>>,
    /// A Kuma sidecar: the caller's tags header is kept before the router removes it.
    kuma: bool,
    tags_header: Option<String>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // One host call per request, on Kuma sidecars only: Kuma's inbound route removes
        // `x-kuma-tags` before the request is logged, and it is the caller's only identity.
        if self.kuma {
            self.tags_header = self.get_http_request_header("x-kuma-tags");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let Ok(mut shared) = recorder.try_borrow_mut() else {
            return;
        };
        let Shared {
            recorder,
            reader,
            evaluation_failed,
            clock_ns,
        } = &mut *shared;
        let now = *clock_ns;
        if let Reader::Expression { token, attrs } = reader {
            let answer = host::call_foreign("expr_evaluate", &token.to_le_bytes());
            if let Some(a) = answer.as_deref().ok().and_then(|b| Answer::parse(b, attrs)) {
                recorder.record(&a, &Host, now, self.tags_header.as_deref());
                return;
            }
            if !*evaluation_failed {
                *evaluation_failed = true;
                warn!("waggle: evaluating the attribute expression failed ({:?}); this request's attributes are read one at a time (logged once)", answer.err());
            }
        }
        recorder.record(&Lazy::new(&Host), &Host, now, self.tags_header.as_deref());
    }
}
