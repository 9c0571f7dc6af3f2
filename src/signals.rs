//! Signals as counters: a handler that only counts (anything more is not
//! async-signal-safe), and threads that compare the count with the one they
//! saw last.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One counter per signal number.
static COUNTS: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];

extern "C" fn count(signal: libc::c_int) {
    if let Some(counter) = COUNTS.get(signal as usize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes `signal` counted instead of doing what it does by default (SIGUSR1
/// ends the process); the counter of it. SA_RESTART spares most blocking
/// calls an EINTR.
pub fn counter(signal: libc::c_int) -> &'static AtomicU64 {
    static INSTALLED: Mutex<Vec<libc::c_int>> = Mutex::new(Vec::new());
    let counter = &COUNTS[signal as usize];
    let mut installed = INSTALLED.lock().unwrap();
    if !installed.contains(&signal) {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                log::warn!("cannot handle signal {signal}: {}", std::io::Error::last_os_error());
            }
        }
        installed.push(signal);
    }
    counter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_counted() {
        let usr2 = counter(libc::SIGUSR2);
        let before = usr2.load(Ordering::Relaxed);
        // SAFETY: raising a signal we handle.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert_eq!(usr2.load(Ordering::Relaxed), before + 1);
    }
}
