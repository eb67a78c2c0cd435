//! The `env.proxy_*` host functions of ABI 0.2.1, with Envoy's semantics where they matter.

use wasmtime::Linker;

use super::memory::{give, read, read_string, status_of, write_u32, write_u64, Ctx};
use super::{buffer, decode_pairs, encode_pairs, status, HostState, HttpCall};

type R = wasmtime::Result<i32>;

fn header_map(state: &mut HostState, map_type: i32) -> Option<&mut super::Pairs> {
    state.header_maps.get_mut(usize::try_from(map_type).ok()?)
}

fn buffer_bytes(state: &HostState, buffer_type: i32) -> Option<&[u8]> {
    match buffer_type {
        buffer::PLUGIN_CONFIGURATION => Some(&state.plugin_config),
        buffer::VM_CONFIGURATION => Some(&state.vm_config),
        buffer::HTTP_CALL_RESPONSE_BODY => Some(&state.call_response_body),
        _ => None,
    }
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    super::wasi::link(linker)?;
    logging(linker)?;
    buffers(linker)?;
    headers(linker)?;
    properties(linker)?;
    calls(linker)?;
    shared(linker)?;
    metrics(linker)?;
    streams(linker)?;
    Ok(())
}

fn logging(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> i32 {
            status_of((|| {
                let message = String::from_utf8_lossy(&read(&mut c, ptr, len)?).into_owned();
                c.data_mut().logs.push(super::LogLine {
                    level: level as u32,
                    message,
                });
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Ctx<'_>, ret: i32| -> i32 {
            status_of(write_u32(&mut c, ret, 0).map(|()| status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| -> i32 {
            let now = c.data().now_ns;
            status_of(write_u64(&mut c, ret, now).map(|()| status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, period: i32| -> i32 {
            c.data_mut().tick_period_ms = period as u32;
            status::OK
        },
    )?;
    Ok(())
}

fn buffers(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, ty: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(bytes) = buffer_bytes(c.data(), ty) else {
                return Ok(status::NOT_FOUND);
            };
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            let slice = bytes.get(start..).unwrap_or_default();
            let slice = slice
                .get(..max.min(slice.len()))
                .unwrap_or_default()
                .to_vec();
            if slice.is_empty() {
                return Ok(status::NOT_FOUND);
            }
            give(&mut c, &slice, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Ctx<'_>, ty: i32, ret_size: i32, ret_flags: i32| -> i32 {
            let Some(len) = buffer_bytes(c.data(), ty).map(<[u8]>::len) else {
                return status::NOT_FOUND;
            };
            status_of((|| {
                write_u32(&mut c, ret_size, len as u32)?;
                write_u32(&mut c, ret_flags, 0)?;
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, ty: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            status_of((|| {
                let data = read(&mut c, ptr, len)?;
                let state = c.data_mut();
                let target = match ty {
                    buffer::HTTP_CALL_RESPONSE_BODY => &mut state.call_response_body,
                    _ => return Ok(status::BAD_ARGUMENT),
                };
                let start = (start as u32 as usize).min(target.len());
                let end = start.saturating_add(size as u32 as usize).min(target.len());
                target.splice(start..end, data);
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}

fn headers(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, ty: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(pairs) = header_map(c.data_mut(), ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let bytes = encode_pairs(pairs);
            give(&mut c, &bytes, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, ty: i32, ptr: i32, len: i32| -> i32 {
            status_of((|| {
                let pairs = decode_pairs(&read(&mut c, ptr, len)?).ok_or(status::BAD_ARGUMENT)?;
                *header_map(c.data_mut(), ty).ok_or(status::BAD_ARGUMENT)? = pairs;
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: Ctx<'_>, ty: i32, ret: i32| -> i32 {
            status_of((|| {
                let pairs = header_map(c.data_mut(), ty).ok_or(status::BAD_ARGUMENT)?;
                let size = encode_pairs(pairs).len() as u32;
                write_u32(&mut c, ret, size)?;
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, ty: i32, kp: i32, ks: i32, ret_ptr: i32, ret_size: i32| -> R {
            let key = match read(&mut c, kp, ks) {
                Ok(k) => k.to_ascii_lowercase(),
                Err(s) => return Ok(s),
            };
            let Some(pairs) = header_map(c.data_mut(), ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            match pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                Some((_, v)) => {
                    let v = v.clone();
                    give(&mut c, &v, ret_ptr, ret_size)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        l.func_wrap(
            "env",
            name,
            move |mut c: Ctx<'_>, ty: i32, kp: i32, ks: i32, vp: i32, vs: i32| -> i32 {
                status_of((|| {
                    let key = read(&mut c, kp, ks)?.to_ascii_lowercase();
                    let value = read(&mut c, vp, vs)?;
                    let pairs = header_map(c.data_mut(), ty).ok_or(status::BAD_ARGUMENT)?;
                    if replace {
                        pairs.retain(|(k, _)| *k != key);
                    }
                    pairs.push((key, value));
                    Ok(status::OK)
                })())
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, ty: i32, kp: i32, ks: i32| -> i32 {
            status_of((|| {
                let key = read(&mut c, kp, ks)?.to_ascii_lowercase();
                header_map(c.data_mut(), ty)
                    .ok_or(status::BAD_ARGUMENT)?
                    .retain(|(k, _)| *k != key);
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}

fn properties(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: i32, ps: i32, ret_ptr: i32, ret_size: i32| -> R {
            let path = match read(&mut c, pp, ps) {
                Ok(p) => p,
                Err(s) => return Ok(s),
            };
            match c.data_mut().property(&path) {
                Some(v) => give(&mut c, &v, ret_ptr, ret_size),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, pp: i32, ps: i32, vp: i32, vs: i32| -> i32 {
            status_of((|| {
                let path = read(&mut c, pp, ps)?;
                let value = read(&mut c, vp, vs)?;
                c.data_mut().request_properties.insert(path, value);
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}

/// Envoy's status for an expression that failed to compile or evaluate.
const INTERNAL_FAILURE: i32 = 10;

fn foreign(state: &mut HostState, name: &str, args: &[u8]) -> Result<Vec<u8>, i32> {
    if state.without_expressions {
        return Err(status::NOT_FOUND);
    }
    let token = || -> Result<usize, i32> {
        let t: [u8; 4] = args.try_into().map_err(|_| status::BAD_ARGUMENT)?;
        Ok((u32::from_le_bytes(t) as usize).wrapping_sub(1))
    };
    match name {
        "expr_create" => {
            let text = std::str::from_utf8(args).map_err(|_| status::BAD_ARGUMENT)?;
            let elements = super::cel::parse(text).ok_or(INTERNAL_FAILURE)?;
            state.expressions.push(Some(elements));
            Ok((state.expressions.len() as u32).to_le_bytes().to_vec())
        }
        "expr_evaluate" => {
            let elements = state
                .expressions
                .get(token()?)
                .cloned()
                .flatten()
                .ok_or(status::NOT_FOUND)?;
            let guarded: Vec<bool> = elements
                .iter()
                .map(|e| e.guards.iter().all(|g| state.exists(g)))
                .collect();
            Ok(super::cel::evaluate(&elements, &guarded, |path| {
                state.property(path.join("\0").as_bytes())
            }))
        }
        "expr_delete" => {
            let slot = state
                .expressions
                .get_mut(token()?)
                .ok_or(status::NOT_FOUND)?;
            *slot = None;
            Ok(Vec::new())
        }
        _ => Err(status::NOT_FOUND),
    }
}

fn calls(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>, np: i32, ns: i32, ap: i32, asz: i32, ret_ptr: i32, ret_size: i32| -> R {
            let (name, args) = match (read_string(&mut c, np, ns), read(&mut c, ap, asz)) {
                (Ok(n), Ok(a)) => (n, a),
                (Err(s), _) | (_, Err(s)) => return Ok(s),
            };
            match foreign(c.data_mut(), &name, &args) {
                Ok(v) => give(&mut c, &v, ret_ptr, ret_size),
                Err(s) => Ok(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         us: i32,
         hp: i32,
         hs: i32,
         bp: i32,
         bs: i32,
         tp: i32,
         ts: i32,
         timeout_ms: i32,
         ret_token: i32|
         -> i32 {
            status_of((|| {
                let cluster = read_string(&mut c, up, us)?;
                let headers = decode_pairs(&read(&mut c, hp, hs)?).ok_or(status::BAD_ARGUMENT)?;
                let body = read(&mut c, bp, bs)?;
                let _trailers = decode_pairs(&read(&mut c, tp, ts)?).ok_or(status::BAD_ARGUMENT)?;
                let headers: Vec<(String, String)> = headers
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(&k).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect();
                // Envoy refuses a call to an unknown cluster or without the pseudo-headers.
                let known = c
                    .data()
                    .clusters
                    .as_ref()
                    .is_none_or(|cs| cs.contains(&cluster));
                let has = |h: &str| headers.iter().any(|(k, _)| k == h);
                if !known || !has(":method") || !has(":path") || !has(":authority") {
                    return Ok(status::BAD_ARGUMENT);
                }
                let state = c.data_mut();
                let token = state.next_token;
                state.next_token += 1;
                let timeout = if timeout_ms > 0 {
                    timeout_ms as u32
                } else {
                    5_000
                };
                state.pending_calls.push(HttpCall {
                    token,
                    context_id: state.effective_context,
                    cluster,
                    headers,
                    body,
                    timeout_ms: timeout,
                    deadline_ns: state.now_ns + u64::from(timeout) * 1_000_000,
                });
                write_u32(&mut c, ret_token, token)?;
                Ok(status::OK)
            })())
        },
    )?;
    // gRPC callouts: the filter makes none; answered as unimplemented, never a trap.
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: Ctx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32| { status::UNIMPLEMENTED },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            status::UNIMPLEMENTED
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| status::NOT_FOUND,
    )?;
    l.func_wrap("env", "proxy_grpc_cancel", |_: Ctx<'_>, _: i32| {
        status::NOT_FOUND
    })?;
    l.func_wrap("env", "proxy_grpc_close", |_: Ctx<'_>, _: i32| {
        status::NOT_FOUND
    })?;
    Ok(())
}

fn shared(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, kp: i32, ks: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> R {
            let key = match read(&mut c, kp, ks) {
                Ok(k) => k,
                Err(s) => return Ok(s),
            };
            let Some((value, cas)) = c.data().shared_data.get(&key).cloned() else {
                return Ok(status::NOT_FOUND);
            };
            if let Err(s) = write_u32(&mut c, ret_cas, cas) {
                return Ok(s);
            }
            give(&mut c, &value, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: i32, ks: i32, vp: i32, vs: i32, cas: i32| -> i32 {
            status_of((|| {
                let key = read(&mut c, kp, ks)?;
                let value = read(&mut c, vp, vs)?;
                let entry = c
                    .data_mut()
                    .shared_data
                    .entry(key)
                    .or_insert((Vec::new(), 0));
                if cas != 0 && entry.1 != cas as u32 {
                    return Ok(status::CAS_MISMATCH);
                }
                *entry = (value, entry.1.wrapping_add(1).max(1));
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, np: i32, ns: i32, ret: i32| -> i32 {
            status_of((|| {
                let name = read(&mut c, np, ns)?;
                let queues = &mut c.data_mut().queues;
                let id = match queues.iter().position(|(n, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        queues.push((name, Default::default()));
                        queues.len() - 1
                    }
                };
                write_u32(&mut c, ret, id as u32 + 1)?;
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, _vp: i32, _vs: i32, np: i32, ns: i32, ret: i32| -> i32 {
            status_of((|| {
                let name = read(&mut c, np, ns)?;
                let id = c
                    .data()
                    .queues
                    .iter()
                    .position(|(n, _)| *n == name)
                    .ok_or(status::NOT_FOUND)?;
                write_u32(&mut c, ret, id as u32 + 1)?;
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, vp: i32, vs: i32| -> i32 {
            status_of((|| {
                let value = read(&mut c, vp, vs)?;
                let q = c
                    .data_mut()
                    .queues
                    .get_mut((id as usize).wrapping_sub(1))
                    .ok_or(status::NOT_FOUND)?;
                q.1.push_back(value);
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(q) = c.data_mut().queues.get_mut((id as usize).wrapping_sub(1)) else {
                return Ok(status::NOT_FOUND);
            };
            match q.1.pop_front() {
                Some(v) => give(&mut c, &v, ret_ptr, ret_size),
                None => Ok(status::EMPTY),
            }
        },
    )?;
    Ok(())
}

fn metrics(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, ty: i32, np: i32, ns: i32, ret: i32| -> i32 {
            status_of((|| {
                if !(0..=2).contains(&ty) {
                    return Ok(status::BAD_ARGUMENT);
                }
                let name = read(&mut c, np, ns)?;
                let metrics = &mut c.data_mut().metrics;
                metrics.push((ty, name, 0));
                let id = metrics.len() as u32;
                write_u32(&mut c, ret, id)?;
                Ok(status::OK)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx<'_>, id: i32, delta: i64| -> i32 {
            match c.data_mut().metrics.get_mut((id as usize).wrapping_sub(1)) {
                Some((0, _, _)) if delta < 0 => status::BAD_ARGUMENT,
                Some((_, _, v)) => {
                    *v = v.saturating_add(delta);
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx<'_>, id: i32, value: i64| -> i32 {
            match c.data_mut().metrics.get_mut((id as usize).wrapping_sub(1)) {
                Some((_, _, v)) => {
                    *v = value;
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, ret: i32| -> i32 {
            let Some(&(_, _, v)) = c.data().metrics.get((id as usize).wrapping_sub(1)) else {
                return status::NOT_FOUND;
            };
            status_of(write_u64(&mut c, ret, v as u64).map(|()| status::OK))
        },
    )?;
    Ok(())
}

fn streams(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_done", |_: Ctx<'_>| status::OK)?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, ctx: i32| -> i32 {
            c.data_mut().effective_context = ctx as u32;
            status::OK
        },
    )?;
    l.func_wrap("env", "proxy_continue_stream", |_: Ctx<'_>, _: i32| {
        status::OK
    })?;
    l.func_wrap("env", "proxy_close_stream", |_: Ctx<'_>, _: i32| status::OK)?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Ctx<'_>, ret_code: i32, ret_ptr: i32, ret_size: i32| -> R {
            if let Err(s) = write_u32(&mut c, ret_code, 0) {
                return Ok(s);
            }
            give(&mut c, b"", ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         code: i32,
         _dp: i32,
         _ds: i32,
         bp: i32,
         bs: i32,
         _hp: i32,
         _hs: i32,
         _grpc: i32|
         -> i32 {
            status_of((|| {
                let body = read(&mut c, bp, bs)?;
                c.data_mut().local_responses.push((code as u32, body));
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}
