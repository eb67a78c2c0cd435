//! Reading and writing guest memory, and handing the guest buffers it will own.

use wasmtime::{Caller, Extern, Memory};

use super::{status, HostState};

pub(crate) type Ctx<'a> = Caller<'a, HostState>;

fn memory(caller: &mut Ctx<'_>) -> Option<Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// Copies `len` bytes at `ptr` out of guest memory; `Err(status)` when out of bounds.
pub(crate) fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let mem = memory(caller).ok_or(status::INVALID_MEMORY_ACCESS)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&*caller)
        .get(ptr..ptr.checked_add(len).ok_or(status::INVALID_MEMORY_ACCESS)?)
        .map(<[u8]>::to_vec)
        .ok_or(status::INVALID_MEMORY_ACCESS)
}

pub(crate) fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<String, i32> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| status::BAD_ARGUMENT)
}

pub(crate) fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let mem = memory(caller).ok_or(status::INVALID_MEMORY_ACCESS)?;
    let ptr = ptr as u32 as usize;
    let end = ptr
        .checked_add(bytes.len())
        .ok_or(status::INVALID_MEMORY_ACCESS)?;
    mem.data_mut(&mut *caller)
        .get_mut(ptr..end)
        .ok_or(status::INVALID_MEMORY_ACCESS)?
        .copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(caller: &mut Ctx<'_>, ptr: i32, v: u32) -> Result<(), i32> {
    write(caller, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Ctx<'_>, ptr: i32, v: u64) -> Result<(), i32> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Allocates `bytes.len()` in the guest with `proxy_on_memory_allocate`, copies `bytes` there
/// and stores the pointer and size in the out-parameters, as the ABI's `return_*` arguments.
pub(crate) fn give(
    caller: &mut Ctx<'_>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> wasmtime::Result<i32> {
    let alloc = caller
        .get_export("proxy_on_memory_allocate")
        .or_else(|| caller.get_export("malloc"))
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg("module exports no proxy_on_memory_allocate"))?
        .typed::<i32, i32>(&*caller)?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        alloc.call(&mut *caller, bytes.len() as i32)?
    };
    let result = (|| {
        if !bytes.is_empty() {
            write(caller, ptr, bytes)?;
        }
        write_u32(caller, ret_ptr, ptr as u32)?;
        write_u32(caller, ret_size, bytes.len() as u32)
    })();
    Ok(match result {
        Ok(()) => status::OK,
        Err(s) => s,
    })
}

/// Turns a host function body's `Result<i32, i32>` (status either way) into its return value.
pub(crate) fn status_of(r: Result<i32, i32>) -> i32 {
    r.unwrap_or_else(|s| s)
}
