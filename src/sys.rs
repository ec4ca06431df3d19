//! The few platform calls the standard library does not offer, each behind a safe
//! function. They exist because the benchmark measured what they save (see the constants
//! and `spawn` in `app.rs`): glibc's malloc tunables keep a thousand-thread process from
//! holding one heap per thread and from mapping a fresh block for every scrape body, and
//! releasing an idle worker's stack pages saves about 24 MiB per thousand tokens.
//!
//! This is the only module of the crate allowed to use `unsafe`; the crate root denies it
//! everywhere else. Every block says why it is sound.

/// Sets glibc malloc's arena count and mmap threshold; elsewhere there is nothing to set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_malloc(arenas: i32, mmap_threshold: i32) {
    // SAFETY: mallopt only sets tunables of glibc's allocator; any value is valid (a
    // refused one is ignored, and the allocator keeps its default).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
    }
}

/// Sets glibc malloc's arena count and mmap threshold; elsewhere there is nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_malloc(arenas: i32, mmap_threshold: i32) {
    let _ = (arenas, mmap_threshold);
}

#[cfg(target_os = "linux")]
pub use linux_stack::ThreadStack;

#[cfg(target_os = "linux")]
mod linux_stack {
    use std::marker::PhantomData;

    /// The usable stack of the current thread. Neither `Send` nor `Sync`: releasing
    /// another thread's stack would zero its live frames, so only the thread that made
    /// it may use it.
    pub struct ThreadStack {
        /// Lowest usable address (above the guard page).
        low: usize,
        /// Ties the value to its thread (raw pointers are neither `Send` nor `Sync`).
        _this_thread: PhantomData<*const ()>,
    }

    /// Kept below the current frame: the madvise call's own frame and the red zone (128
    /// bytes on x86-64) need far less.
    const MARGIN: usize = 1024;

    impl ThreadStack {
        /// The calling thread's stack, or `None` if the platform will not say where it is.
        pub fn current() -> Option<ThreadStack> {
            // SAFETY: the attribute object is initialised by pthread_getattr_np before
            // it is read, and destroyed once; the out-pointers are valid locals.
            unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                    return None;
                }
                let mut addr: *mut libc::c_void = std::ptr::null_mut();
                let mut size: libc::size_t = 0;
                let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
                libc::pthread_attr_destroy(&mut attr);
                ok.then_some(ThreadStack {
                    low: addr as usize,
                    _this_thread: PhantomData,
                })
            }
        }

        /// Drops the pages between the bottom of the stack and a margin below the
        /// current frame; they come back zeroed if a deeper call needs them again.
        #[inline(never)]
        pub fn release_unused(&self) {
            let here = 0u8;
            let sp = std::hint::black_box(&here) as *const u8 as usize;
            let page = 4096;
            let end = sp.saturating_sub(MARGIN) & !(page - 1);
            let start = (self.low + page - 1) & !(page - 1);
            if end > start {
                // SAFETY: `self` never leaves the thread it describes (not `Send`), so
                // [start, end) lies in this thread's own stack, below every live frame (the stack grows down from above `sp`); the kernel zero-fills the
                // pages again on the next touch. MADV_DONTNEED changes no mapping.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }
}

/// Where the stack cannot be found, there is nothing to release.
#[cfg(not(target_os = "linux"))]
pub struct ThreadStack;

#[cfg(not(target_os = "linux"))]
impl ThreadStack {
    /// Always `None`: no platform call to find the stack here.
    pub fn current() -> Option<ThreadStack> {
        None
    }
    /// Never called: `current` gives no stack.
    pub fn release_unused(&self) {}
}
