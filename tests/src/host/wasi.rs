//! The small WASI preview 1 subset a proxy-wasm module may import, as Envoy provides it:
//! stdout/stderr writes, clocks, randomness, the VM environment, and no arguments.

use wasmtime::Linker;

use super::memory::{read, write, write_u32, write_u64, Ctx};
use super::HostState;

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

fn errno(r: Result<i32, i32>) -> i32 {
    // Memory faults in WASI calls are EFAULT, whatever the proxy status was.
    match r {
        Ok(v) => v,
        Err(_) => ERRNO_FAULT,
    }
}

pub(crate) fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    l.func_wrap(
        W,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, ret: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return ERRNO_BADF;
            }
            errno((|| {
                let mut total = 0u32;
                for i in 0..n {
                    let iov = read(&mut c, iovs + i * 8, 8)?;
                    let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    let bytes = read(&mut c, ptr, len)?;
                    total += bytes.len() as u32;
                    c.data_mut().stdio.extend_from_slice(&bytes);
                }
                write_u32(&mut c, ret, total)?;
                Ok(ERRNO_SUCCESS)
            })())
        },
    )?;
    l.func_wrap(
        W,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _precision: i64, ret: i32| -> i32 {
            if !(0..=3).contains(&id) {
                return ERRNO_INVAL;
            }
            let now = c.data().now_ns;
            errno(write_u64(&mut c, ret, now).map(|()| ERRNO_SUCCESS))
        },
    )?;
    l.func_wrap(
        W,
        "random_get",
        |mut c: Ctx<'_>, buf: i32, len: i32| -> i32 {
            let bytes: Vec<u8> = (0..len).map(|_| c.data_mut().next_random() as u8).collect();
            errno(write(&mut c, buf, &bytes).map(|()| ERRNO_SUCCESS))
        },
    )?;
    l.func_wrap(
        W,
        "environ_sizes_get",
        |mut c: Ctx<'_>, ret_count: i32, ret_size: i32| -> i32 {
            let env = &c.data().env;
            let count = env.len() as u32;
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            errno((|| {
                write_u32(&mut c, ret_count, count)?;
                write_u32(&mut c, ret_size, size as u32)?;
                Ok(ERRNO_SUCCESS)
            })())
        },
    )?;
    l.func_wrap(
        W,
        "environ_get",
        |mut c: Ctx<'_>, ptrs: i32, buf: i32| -> i32 {
            let entries: Vec<Vec<u8>> = c
                .data()
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}\0").into_bytes())
                .collect();
            errno((|| {
                let mut at = buf;
                for (i, e) in entries.iter().enumerate() {
                    write_u32(&mut c, ptrs + (i as i32) * 4, at as u32)?;
                    write(&mut c, at, e)?;
                    at += e.len() as i32;
                }
                Ok(ERRNO_SUCCESS)
            })())
        },
    )?;
    l.func_wrap(
        W,
        "args_sizes_get",
        |mut c: Ctx<'_>, ret_count: i32, ret_size: i32| -> i32 {
            errno((|| {
                write_u32(&mut c, ret_count, 0)?;
                write_u32(&mut c, ret_size, 0)?;
                Ok(ERRNO_SUCCESS)
            })())
        },
    )?;
    l.func_wrap(W, "args_get", |_: Ctx<'_>, _: i32, _: i32| ERRNO_SUCCESS)?;
    l.func_wrap(W, "sched_yield", |_: Ctx<'_>| ERRNO_SUCCESS)?;
    l.func_wrap(
        W,
        "proc_exit",
        |_: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the module called proc_exit({code})"
            )))
        },
    )?;
    Ok(())
}
