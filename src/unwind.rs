//! libgcc's unwinder, loaded only if a backtrace is ever taken.
//!
//! std calls ten `_Unwind_*` functions of `libgcc_s.so.1`: `_Unwind_Backtrace` and
//! `_Unwind_GetIP(Info)` to take a backtrace, the rest only while a panic unwinds. The
//! release binary aborts on panic (`panic = "abort"`), so nothing ever unwinds, and a
//! backtrace is taken only when a panic is reported with `RUST_BACKTRACE` set. Still,
//! because std names them, the dynamic loader would map and relocate libgcc_s at every
//! start: about 80 KiB of resident memory (BENCHMARKS.md, "libgcc_s.so is no longer
//! loaded").
//!
//! Defined here (in that build only), the linker resolves them in the binary and, linking
//! `--as-needed`, leaves libgcc_s out. Each forwards to libgcc_s's own function, which the
//! first call loads with `dlopen`, as glibc does for thread cancellation. If it cannot be
//! loaded, a backtrace comes out empty, and the functions that only unwinding reaches
//! abort the process, which a panic does in this build anyway. Not in static builds
//! (`crt-static`), which link libgcc's unwinder into the binary.
//!
//! The functions are defined in every build, so the unit tests can take a backtrace
//! through them; only the release build exports them under libgcc's names.

#![allow(non_snake_case)]
// Exported (and so used) only in the release build; the tests call them in the others.
#![cfg_attr(not(all(panic = "abort", not(target_feature = "crt-static"))), allow(dead_code))]

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

/// `_Unwind_Reason_Code` (libgcc's unwind.h).
pub type Reason = c_int;
/// `_URC_END_OF_STACK`: what an empty backtrace ends with.
const END_OF_STACK: Reason = 5;

/// libgcc's own function `name`, or `None` if libgcc_s.so.1 cannot be loaded.
fn libgcc(name: &CStr) -> Option<*mut c_void> {
    static HANDLE: OnceLock<usize> = OnceLock::new();
    let handle = *HANDLE.get_or_init(|| {
        // SAFETY: a constant library name; RTLD_LOCAL keeps its symbols out of the global
        // scope, so they never preempt the definitions below.
        unsafe { libc::dlopen(c"libgcc_s.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) as usize }
    });
    if handle == 0 {
        return None;
    }
    // SAFETY: a handle dlopen returned, never closed; a constant symbol name.
    let f = unsafe { libc::dlsym(handle as *mut c_void, name.as_ptr()) };
    (!f.is_null()).then_some(f)
}

/// libgcc's `name` as a function pointer of type `F`; aborts if it is missing. Only for the
/// functions that are called with a context or exception libgcc itself handed out, so
/// libgcc is loaded already.
///
/// # Safety
/// `F` must be the C signature of libgcc's `name`.
unsafe fn forward<F: Copy>(name: &CStr) -> F {
    let Some(f) = libgcc(name) else {
        std::process::abort();
    };
    // SAFETY: the caller names the function's true signature, and a function pointer has
    // the size of a data pointer on every target with a dynamic loader.
    unsafe { std::mem::transmute_copy(&f) }
}

pub type TraceFn = extern "C" fn(context: *mut c_void, arg: *mut c_void) -> Reason;

/// Calls `trace` once per stack frame of the caller (libgcc's `_Unwind_Backtrace`).
///
/// # Safety
/// `trace` must be safe to call with libgcc's context and `arg`.
#[cfg_attr(all(panic = "abort", not(target_feature = "crt-static")), no_mangle)]
pub unsafe extern "C" fn _Unwind_Backtrace(trace: TraceFn, arg: *mut c_void) -> Reason {
    match libgcc(c"_Unwind_Backtrace") {
        // SAFETY: libgcc's _Unwind_Backtrace has exactly this signature.
        Some(f) => unsafe {
            let f: unsafe extern "C" fn(TraceFn, *mut c_void) -> Reason = std::mem::transmute(f);
            f(trace, arg)
        },
        None => END_OF_STACK,
    }
}

/// Defines `name` with the given C signature as a call to libgcc's function of that name.
macro_rules! forwarded {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        /// Forwards to libgcc's function of the same name (see the module's documentation).
        ///
        /// # Safety
        /// As libgcc's: the arguments must come from libgcc's unwinder.
        #[cfg_attr(all(panic = "abort", not(target_feature = "crt-static")), no_mangle)]
        pub unsafe extern "C-unwind" fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the signature is libgcc's (unwind.h); the caller's duty covers the rest.
            unsafe {
                let f: unsafe extern "C-unwind" fn($($ty),*) $(-> $ret)? = forward(
                    // SAFETY: a literal with one NUL, at the end.
                    CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()),
                );
                f($($arg),*)
            }
        }
    )*};
}

forwarded! {
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
    fn _Unwind_GetIPInfo(context: *mut c_void, ip_before_insn: *mut c_int) -> usize;
    fn _Unwind_GetLanguageSpecificData(context: *mut c_void) -> *mut c_void;
    fn _Unwind_GetRegionStart(context: *mut c_void) -> usize;
    fn _Unwind_GetTextRelBase(context: *mut c_void) -> usize;
    fn _Unwind_GetDataRelBase(context: *mut c_void) -> usize;
    fn _Unwind_SetGR(context: *mut c_void, index: c_int, value: usize);
    fn _Unwind_SetIP(context: *mut c_void, value: usize);
    fn _Unwind_Resume(exception: *mut c_void) -> !;
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn count(context: *mut c_void, arg: *mut c_void) -> Reason {
        // SAFETY: `arg` is the Vec below; `context` is the one libgcc passes.
        let ips = unsafe { &mut *arg.cast::<Vec<usize>>() };
        let mut before = 0;
        ips.push(unsafe { _Unwind_GetIPInfo(context, &mut before) });
        0 // _URC_NO_REASON: go on
    }

    #[test]
    fn a_backtrace_through_the_forwarders_sees_the_callers() {
        let mut ips: Vec<usize> = Vec::new();
        // SAFETY: `count` matches TraceFn and gets the Vec it expects.
        let reason = unsafe { _Unwind_Backtrace(count, (&mut ips as *mut Vec<usize>).cast()) };
        assert_eq!(reason, END_OF_STACK);
        // This test, the test harness's frames and the thread's start: well over three.
        assert!(ips.len() > 3, "{ips:?}");
        let here = a_backtrace_through_the_forwarders_sees_the_callers as *const () as usize;
        assert!(
            ips.iter().any(|&ip| ip > here && ip < here + 4096),
            "{here:#x} {ips:x?}"
        );
    }
}
