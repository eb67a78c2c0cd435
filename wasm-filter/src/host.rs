//! The proxy's side of [`Properties`]: raw ABI reads that turn every status into `None`.
//!
//! The SDK's `get_property` unwraps (and its hostcall panics on statuses it does not expect);
//! a telemetry filter must not trap the VM because one attribute is odd, so it reads directly.

use crate::properties::Properties;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

const STATUS_OK: u32 = 0;
const REQUEST_HEADERS: u32 = 0;
const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` and `size` must come from a host call that returned OK.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return (size == 0).then(Vec::new);
    }
    // SAFETY: the SDK's allocator handed the host `Vec::with_capacity(size)` for this buffer.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub struct Host;

impl Properties for Host {
    fn get(&self, path: &[&str]) -> Option<Vec<u8>> {
        // The NUL-joined path goes on the stack: a read on the hot path allocates only the
        // answer, which the ABI has the host allocate.
        let mut buf = [0u8; 256];
        let mut len = 0;
        for (i, seg) in path.iter().enumerate() {
            let sep = usize::from(i > 0);
            let end = len + sep + seg.len();
            let slot = buf.get_mut(len + sep..end)?;
            slot.copy_from_slice(seg.as_bytes());
            len = end;
        }
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the pointers are valid for the duration of the call; the host writes both out
        // parameters only on success.
        let status = unsafe { proxy_get_property(buf.as_ptr(), len, &mut data, &mut size) };
        if status != STATUS_OK {
            return None;
        }
        // SAFETY: status OK, so data/size describe a host-allocated buffer (or nothing).
        unsafe { take(data, size) }
    }

    fn request_headers(&self) -> Option<Vec<u8>> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: as in `get`.
        let status = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
        if status != STATUS_OK {
            return None;
        }
        // SAFETY: status OK.
        unsafe { take(data, size) }
    }
}

/// Calls a foreign function the proxy registered (Envoy: `expr_create`, `expr_evaluate`).
/// `Err` carries the proxy's status: NotFound when the proxy has no such function.
pub fn call_foreign(name: &str, args: &[u8]) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `Host::get`.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    };
    if status != STATUS_OK {
        return Err(status);
    }
    // SAFETY: status OK.
    unsafe { take(data, size) }.ok_or(status)
}

/// The `:status` of an HTTP call's answer, if it has a valid one.
pub fn call_response_status() -> Option<u16> {
    let key = ":status";
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `Host::get`.
    let status = unsafe {
        proxy_get_header_map_value(
            HTTP_CALL_RESPONSE_HEADERS,
            key.as_ptr(),
            key.len(),
            &mut data,
            &mut size,
        )
    };
    if status != STATUS_OK {
        return None;
    }
    // SAFETY: status OK.
    let bytes = unsafe { take(data, size) }?;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}
