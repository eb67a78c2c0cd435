//! One proxy-wasm VM of the real filter, driven the way Envoy drives a worker's VM.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _, Result};
use wasmtime::{Engine, Instance, Linker, Module, Store};

use crate::host::{self, map, CallAnswer, HostState, HttpCall, LogLine};

const ROOT_ID: i32 = 1;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// The filter module, compiled once per test process.
fn filter_module() -> Result<&'static Module> {
    static MODULE: OnceLock<Module> = OnceLock::new();
    if let Some(m) = MODULE.get() {
        return Ok(m);
    }
    let m = Module::from_file(engine(), crate::filter_wasm())?;
    Ok(MODULE.get_or_init(|| m))
}

/// One VM: the module instance and all host state, in one wasmtime `Store`.
pub struct Vm {
    store: Store<HostState>,
    instance: Instance,
    next_context: i32,
    next_tick_ns: Option<u64>,
}

impl Vm {
    /// A VM of the real filter `.wasm`, at virtual time 2026-01-01T00:00:00Z.
    pub fn new() -> Result<Self> {
        Self::from_module(filter_module()?)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_module(&Module::from_file(engine(), path)?)
    }

    fn from_module(module: &Module) -> Result<Self> {
        let mut linker = Linker::new(engine());
        host::link(&mut linker)?;
        let mut store = Store::new(engine(), HostState::new(1_767_225_600_000_000_000));
        store.call_hook(|mut c, hook| {
            if matches!(hook, wasmtime::CallHook::CallingHost) {
                c.data_mut().host_calls += 1;
            }
            Ok(())
        });
        let instance = linker
            .instantiate(&mut store, module)
            .context("instantiating the filter")?;
        Ok(Self {
            store,
            instance,
            next_context: ROOT_ID + 1,
            next_tick_ns: None,
        })
    }

    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<R> {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .with_context(|| format!("export {name}"))?;
        f.call(&mut self.store, params)
            .with_context(|| format!("calling {name}"))
    }

    fn enter(&mut self, context: i32) {
        self.store.data_mut().effective_context = context as u32;
    }

    /// Sets a VM-wide attribute (node metadata and the like).
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.store
            .data_mut()
            .properties
            .insert(path.join("\0").into_bytes(), value.into());
    }

    pub fn set_node_metadata(&mut self, key: &[&str], value: &str) {
        let path: Vec<&str> = ["xds", "node", "metadata"]
            .iter()
            .chain(key)
            .copied()
            .collect();
        self.set_property(&path, value);
    }

    /// Runs `_initialize`, creates the root context, then `on_vm_start` and `on_configure`
    /// with `plugin_config`. Returns what `on_configure` returned.
    pub fn start(&mut self, plugin_config: &str) -> Result<bool> {
        self.store.data_mut().plugin_config = plugin_config.as_bytes().to_vec();
        self.call::<(), ()>("_initialize", ())?;
        self.enter(ROOT_ID);
        self.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_ID, 0))?;
        let vm_config = self.state().vm_config.len() as i32;
        let started = self.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_ID, vm_config))?;
        if started == 0 {
            return Ok(false);
        }
        let size = plugin_config.len() as i32;
        let configured = self.call::<(i32, i32), i32>("proxy_on_configure", (ROOT_ID, size))? != 0;
        let period = u64::from(self.state().tick_period_ms) * 1_000_000;
        self.next_tick_ns = (period > 0).then(|| self.state().now_ns + period);
        Ok(configured)
    }

    /// Runs one request through every HTTP callback, from headers to `on_log` and delete,
    /// with `properties` visible for its duration. Returns the header callbacks' actions
    /// (0 = Continue).
    pub fn request(
        &mut self,
        properties: &[(Vec<String>, Vec<u8>)],
        headers: &[(&str, &str)],
    ) -> Result<(i32, i32)> {
        let state = self.store.data_mut();
        state.request_properties = properties
            .iter()
            .map(|(p, v)| (p.join("\0").into_bytes(), v.clone()))
            .collect();
        state.header_maps[map::REQUEST_HEADERS] = headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let id = self.next_context;
        self.next_context += 1;
        self.enter(id);
        let result = (|| {
            self.call::<(i32, i32), ()>("proxy_on_context_create", (id, ROOT_ID))?;
            let req = self.call::<(i32, i32, i32), i32>(
                "proxy_on_request_headers",
                (id, headers.len() as i32, 1),
            )?;
            let resp =
                self.call::<(i32, i32, i32), i32>("proxy_on_response_headers", (id, 0, 1))?;
            self.call::<i32, i32>("proxy_on_done", id)?;
            self.call::<i32, ()>("proxy_on_log", id)?;
            self.call::<i32, ()>("proxy_on_delete", id)?;
            Ok((req, resp))
        })();
        let state = self.store.data_mut();
        state.request_properties.clear();
        state.header_maps[map::REQUEST_HEADERS].clear();
        // A call made by a request context dies with it, as in Envoy.
        state.pending_calls.retain(|c| c.context_id != id as u32);
        result
    }

    /// Moves the virtual clock forward, firing every tick that falls due and timing out calls
    /// whose deadline passes, in time order.
    pub fn advance_ms(&mut self, ms: u64) -> Result<()> {
        let target = self.state().now_ns + ms * 1_000_000;
        loop {
            let next_deadline = self
                .state()
                .pending_calls
                .iter()
                .map(|c| c.deadline_ns)
                .min();
            let next = [self.next_tick_ns, next_deadline]
                .into_iter()
                .flatten()
                .filter(|t| *t <= target)
                .min();
            let Some(at) = next else { break };
            self.store.data_mut().now_ns = at;
            if let Some(call) = self
                .state()
                .pending_calls
                .iter()
                .find(|c| c.deadline_ns == at)
                .cloned()
            {
                self.answer(call.token, CallAnswer::Timeout)?;
                continue;
            }
            self.tick()?;
        }
        self.store.data_mut().now_ns = target;
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        self.enter(ROOT_ID);
        self.call::<i32, ()>("proxy_on_tick", ROOT_ID)?;
        let period = u64::from(self.state().tick_period_ms) * 1_000_000;
        self.next_tick_ns = (period > 0).then(|| self.state().now_ns + period);
        Ok(())
    }

    /// Calls made and not yet answered.
    pub fn pending_calls(&self) -> &[HttpCall] {
        &self.state().pending_calls
    }

    /// Answers the call `token` as the test says, in the context that made it.
    pub fn answer(&mut self, token: u32, answer: CallAnswer) -> Result<()> {
        let state = self.store.data_mut();
        let pos = state
            .pending_calls
            .iter()
            .position(|c| c.token == token)
            .ok_or_else(|| anyhow!("no pending call {token}"))?;
        let call = state.pending_calls.remove(pos);
        let num_headers = match answer {
            CallAnswer::Status(code) => {
                state.header_maps[map::HTTP_CALL_RESPONSE_HEADERS] =
                    vec![(b":status".to_vec(), code.to_string().into_bytes())];
                1
            }
            CallAnswer::Failure | CallAnswer::Timeout => {
                state.header_maps[map::HTTP_CALL_RESPONSE_HEADERS].clear();
                0
            }
        };
        state.call_response_body.clear();
        self.enter(call.context_id as i32);
        self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (call.context_id as i32, token as i32, num_headers, 0, 0),
        )?;
        self.store.data_mut().header_maps[map::HTTP_CALL_RESPONSE_HEADERS].clear();
        Ok(())
    }

    /// Answers every pending call the same way; returns the calls answered.
    pub fn answer_all(&mut self, answer: CallAnswer) -> Result<Vec<HttpCall>> {
        let calls = self.state().pending_calls.clone();
        for c in &calls {
            self.answer(c.token, answer.clone())?;
        }
        Ok(calls)
    }

    pub fn logs(&self) -> &[LogLine] {
        &self.state().logs
    }

    pub fn now_ns(&self) -> u64 {
        self.state().now_ns
    }
}
