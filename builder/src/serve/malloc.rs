//! glibc's allocator, tuned for serve's fan-out.
//!
//! glibc gives each thread that allocates under contention an arena of its own and keeps what
//! is freed in it for that arena. In serve the loader builds each config on a blocking thread
//! while the runtime's workers fan it out, so the memory a build frees is not the memory the
//! fan-out then allocates: measured on 1000 services and 102 proxies (`cargo xtask bench
//! control-plane`), serve's peak RSS was 913 MiB with the default arenas and 617 MiB with one
//! (`MALLOC_ARENA_MAX=1`), change-to-ACK unchanged within the run-to-run noise.

/// Limits glibc to one malloc arena, unless `MALLOC_ARENA_MAX` says otherwise (glibc reads it
/// itself). Call before the runtime starts its threads. Elsewhere than glibc: nothing.
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    set_arena_max(1);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: std::ffi::c_int) {
    // glibc's `M_ARENA_MAX` (malloc.h).
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX with a positive value is
    // valid at any time (arenas already made stay, none beyond the limit is made after).
    unsafe {
        mallopt(M_ARENA_MAX, arenas);
    }
}
