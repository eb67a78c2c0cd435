//! A probe filter: each request makes `n` host calls of one kind from `on_log`, and nothing else.
//!
//! `waggle-bench --only hostcall` runs one Envoy per kind beside an empty one, so what one
//! host call costs in Envoy's V8 is measured, not guessed. Configuration: `kind:n[:expression]`
//! with kind one of `none`, `clock`, `property`, `absent`, `headers`, `expression`.

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

#[derive(Clone, Copy)]
enum Kind {
    None,
    Clock,
    Property,
    Absent,
    Headers,
    Expression(u32),
}

thread_local! {
    static PROBE: Cell<(Kind, u32)> = const { Cell::new((Kind::None, 0)) };
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let mut parts = config.splitn(3, ':');
        let (kind, n) = (parts.next().unwrap_or(""), parts.next().unwrap_or("0"));
        let kind = match kind {
            "clock" => Kind::Clock,
            "property" => Kind::Property,
            "absent" => Kind::Absent,
            "headers" => Kind::Headers,
            "expression" => {
                let source = parts.next().unwrap_or("[response.code]");
                let token =
                    hostcalls::call_foreign_function("expr_create", Some(source.as_bytes()))
                        .ok()
                        .flatten()
                        .and_then(|t| Some(u32::from_le_bytes(t.get(..4)?.try_into().ok()?)));
                match token {
                    Some(t) => Kind::Expression(t),
                    None => {
                        log::error!("cost probe: expr_create failed for {source}");
                        return false;
                    }
                }
            }
            _ => Kind::None,
        };
        PROBE.with(|p| p.set((kind, n.parse().unwrap_or(0))));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe;

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_log(&mut self) {
        let (kind, n) = PROBE.with(Cell::get);
        let mut bytes = 0usize;
        for _ in 0..n {
            bytes += match kind {
                Kind::None => 0,
                Kind::Clock => hostcalls::get_current_time().map_or(0, |_| 1),
                Kind::Property => len(hostcalls::get_property(vec!["response", "code"])),
                Kind::Absent => len(hostcalls::get_property(vec![
                    "request", "headers", "x-absent",
                ])),
                Kind::Headers => {
                    hostcalls::get_map(MapType::HttpRequestHeaders).map_or(0, |m| m.len())
                }
                Kind::Expression(t) => len(hostcalls::call_foreign_function(
                    "expr_evaluate",
                    Some(&t.to_le_bytes()),
                )),
            };
        }
        std::hint::black_box(bytes);
    }
}

fn len(r: Result<Option<Vec<u8>>, proxy_wasm::types::Status>) -> usize {
    r.ok().flatten().map_or(0, |v| v.len())
}
