//! Running one `nix` invocation: a slot from the [`super::scheduler`] first,
//! then argv only, its own process group, a timeout that kills the whole
//! group, stdout captured, stderr rendered ([`super::log`]) into the log and
//! handed to whoever watches the work as it comes.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::log::{Event as LogEvent, Renderer};
use super::scheduler::{Lane, Work};
use super::{Nix, NixError};
use crate::metrics::{self, InvocationLabels};

/// More stdout than this is not JSON we want to parse (a runaway `--apply`).
const STDOUT_LIMIT: usize = 256 << 20;
/// How much of the end of stderr is kept for the warning log: a chatty build
/// can write gigabytes.
const STDERR_KEPT: usize = 1 << 20;
/// A longer line of stderr is cut into pieces of this size.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// The end of stderr the client sees.
const TAIL_BYTES: usize = 4096;
const TAIL_LINES: usize = 30;
/// On timeout nix first gets SIGTERM: its builders run in sessions of their
/// own, out of reach of a group kill, and only nix itself can stop them.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes may stay open once the group is dead; a process that
/// escaped the group could hold them forever. Generous: on a loaded machine
/// the threads reading them may take a while to finish.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// One `nix` command line, before the features flag and after the program.
pub struct Invocation {
    args: Vec<OsString>,
    level: log::Level,
}

impl Invocation {
    /// `level` is the level of the one line logged when it finishes.
    pub fn new<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>, level: log::Level) -> Self {
        Invocation { args: Vec::new(), level }.args(args)
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(self, args: impl IntoIterator<Item = S>) -> Self {
        args.into_iter().fold(self, Invocation::arg)
    }

    /// The arguments on one line (an `--apply` function's lines joined), for logs.
    fn command_line(&self) -> String {
        let args = self.args.iter().map(|arg| arg.to_string_lossy().split_whitespace().collect::<Vec<_>>().join(" "));
        args.collect::<Vec<_>>().join(" ")
    }

    /// Waits for a process slot, then runs it to the end or to
    /// `nix.timeout`: stdout if nix exits with 0.
    pub fn run(self, nix: &Nix) -> Result<Vec<u8>, NixError> {
        static INVOCATIONS: AtomicU64 = AtomicU64::new(0);
        let invocation = INVOCATIONS.fetch_add(1, Ordering::Relaxed);
        let subcommand = self.args.first().and_then(|arg| arg.to_str()).unwrap_or_default();
        let lane = Lane::of(subcommand);
        let _permit = nix.scheduler.acquire(lane, &nix.work, invocation)?;
        if let Some(observer) = nix.work.observer() {
            observer.started(invocation, lane, &format!("nix {}", self.command_line()));
        }
        let started = Instant::now();
        let mut child = Command::new(&nix.program)
            .arg("--extra-experimental-features")
            .arg("nix-command flakes")
            .args(["--log-format", "internal-json"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|error| {
                count(lane, "error");
                NixError::Spawn(Arc::new(error))
            })?;
        // process_group(0) makes nix the leader of a group of its own.
        let pgid = child.id() as libc::pid_t;

        let (events, received) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_event(&events, move || Event::Stdout(read_head(stdout, STDOUT_LIMIT)));
        let work = nix.work.clone();
        spawn_event(&events, move || Event::Stderr(read_log(stderr, &work, invocation)));
        spawn_event(&events, move || wait_without_reaping(pgid));
        drop(events);

        let mut collected = Collected::default();
        let timed_out = !collected.wait_for_exit(&received, started + nix.timeout);
        if timed_out {
            signal_group(pgid, libc::SIGTERM);
            collected.wait_for_exit(&received, Instant::now() + TERM_GRACE);
        }
        // nix is a zombie now (or is about to be killed), so the group id is
        // still ours: this sweeps whatever nix left running in it.
        signal_group(pgid, libc::SIGKILL);
        let status = child.wait();
        collected.wait_for_pipes(&received, Instant::now() + DRAIN_GRACE);

        let finished = Finished { invocation: &self, elapsed: started.elapsed(), collected };
        let result = if timed_out {
            finished.log("timed out");
            let secs = nix.timeout.as_secs_f64().ceil() as u64;
            Err(NixError::Timeout { secs, log_tail: finished.log_tail(), error: finished.error() })
        } else {
            match status {
                Ok(status) if status.success() => finished.into_stdout(),
                Ok(status) => {
                    finished.log(&status.to_string());
                    Err(NixError::Failed { log_tail: finished.log_tail(), error: finished.error() })
                }
                Err(error) => Err(NixError::Spawn(Arc::new(error))),
            }
        };
        count(
            lane,
            match &result {
                Ok(_) => "succeeded",
                Err(NixError::Failed { .. }) => "failed",
                Err(NixError::Timeout { .. }) => "timeout",
                Err(_) => "error",
            },
        );
        result
    }
}

/// Counts an invocation that ran (or could not) in the metrics.
fn count(lane: Lane, outcome: &'static str) {
    let labels = InvocationLabels { lane: lane.as_str(), outcome };
    metrics::global().nix.invocations.get_or_create(&labels).inc();
}

enum Event {
    Stdout(io::Result<Option<Vec<u8>>>),
    Stderr(Log),
    Exited,
}

/// What an invocation said on stderr, rendered: the end of it, and its error.
#[derive(Default)]
struct Log {
    text: String,
    error: Option<String>,
}

fn spawn_event(events: &Sender<Event>, produce: impl FnOnce() -> Event + Send + 'static) {
    let events = events.clone();
    // The receiver may be gone after a timeout; the event is of no use then.
    thread::spawn(move || events.send(produce()).ok());
}

/// What the threads have reported so far.
#[derive(Default)]
struct Collected {
    exited: bool,
    /// `Ok(None)` when nix wrote more than [`STDOUT_LIMIT`].
    stdout: Option<io::Result<Option<Vec<u8>>>>,
    stderr: Option<Log>,
}

impl Collected {
    /// False if the deadline came first.
    fn wait_for_exit(&mut self, received: &Receiver<Event>, deadline: Instant) -> bool {
        self.receive_until(received, deadline, |collected| collected.exited)
    }

    fn wait_for_pipes(&mut self, received: &Receiver<Event>, deadline: Instant) -> bool {
        self.receive_until(received, deadline, |c| c.stdout.is_some() && c.stderr.is_some())
    }

    fn receive_until(&mut self, received: &Receiver<Event>, deadline: Instant, done: fn(&Self) -> bool) -> bool {
        while !done(self) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(wait) {
                Ok(Event::Stdout(stdout)) => self.stdout = Some(stdout),
                Ok(Event::Stderr(stderr)) => self.stderr = Some(stderr),
                Ok(Event::Exited) => self.exited = true,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }
}

/// An invocation that has ended, one way or another.
struct Finished<'a> {
    invocation: &'a Invocation,
    elapsed: Duration,
    collected: Collected,
}

impl Finished<'_> {
    fn stderr(&self) -> &str {
        self.collected.stderr.as_ref().map_or("", |log| &log.text)
    }

    fn log_tail(&self) -> String {
        log_tail(self.stderr())
    }

    fn error(&self) -> Option<String> {
        self.collected.stderr.as_ref().and_then(|log| log.error.clone())
    }

    fn command_line(&self) -> String {
        self.invocation.command_line()
    }

    /// The one line of a failure, then the whole of what nix said.
    fn log(&self, outcome: &str) {
        log::log!(self.invocation.level, "nix {}: {outcome} after {:.1?}", self.command_line(), self.elapsed);
        log::warn!("nix {} {outcome}; its log:\n{}", self.command_line(), self.stderr());
    }

    fn into_stdout(self) -> Result<Vec<u8>, NixError> {
        log::log!(self.invocation.level, "nix {}: done in {:.1?}", self.command_line(), self.elapsed);
        match self.collected.stdout {
            Some(Ok(Some(stdout))) => Ok(stdout),
            Some(Ok(None)) => Err(NixError::Output(format!("more than {STDOUT_LIMIT} bytes"))),
            Some(Err(error)) => Err(NixError::Output(format!("reading it: {error}"))),
            None => Err(NixError::Output("its stdout stayed open after it exited".into())),
        }
    }
}

/// The last [`TAIL_LINES`] lines of `log`, at most [`TAIL_BYTES`] bytes.
pub fn log_tail(log: &str) -> String {
    let log = log.trim_end();
    let line_start = log.rmatch_indices('\n').nth(TAIL_LINES - 1).map_or(0, |(at, _)| at + 1);
    let mut byte_start = log.len().saturating_sub(TAIL_BYTES).max(line_start);
    while !log.is_char_boundary(byte_start) {
        byte_start += 1;
    }
    log[byte_start..].to_owned()
}

/// All of `pipe`, or `None` past `limit` (still read to the end, so that the
/// writer is not blocked).
fn read_head(mut pipe: impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut kept = Vec::new();
    let read = pipe.by_ref().take(limit as u64 + 1).read_to_end(&mut kept)?;
    if read <= limit {
        return Ok(Some(kept));
    }
    io::copy(&mut pipe, &mut io::sink())?;
    Ok(None)
}

/// Renders `pipe` line by line, passing each event to the work's observer
/// as it comes; keeps the last [`STDERR_KEPT`] bytes (roughly: up to twice
/// that) of the rendered text, and Nix's error.
fn read_log(pipe: impl Read, work: &Arc<Work>, invocation: u64) -> Log {
    let mut reader = BufReader::new(pipe);
    let mut renderer = Renderer::default();
    let mut log = Log::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_LINE_BYTES as u64).read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&line);
        let event = renderer.line(text.trim_end_matches(['\n', '\r']));
        if let LogEvent::Line(rendered) = &event {
            log.text.push_str(rendered);
            log.text.push('\n');
            if log.text.len() > 2 * STDERR_KEPT {
                let mut cut = log.text.len() - STDERR_KEPT;
                while !log.text.is_char_boundary(cut) {
                    cut += 1;
                }
                log.text.drain(..cut);
            }
        }
        if let Some(observer) = work.observer() {
            observer.event(invocation, &event);
        }
    }
    log.error = renderer.error().map(str::to_owned);
    log
}

/// Blocks until process `pid` has exited, leaving it a zombie: while it is
/// one its pid, and so the group id, cannot be reused.
fn wait_without_reaping(pid: libc::pid_t) -> Event {
    loop {
        // SAFETY: waitid only writes into the siginfo_t we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let result = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if result == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Event::Exited;
        }
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory effects; ESRCH (the group is gone) is fine.
    unsafe { libc::kill(-pgid, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let log: String = (1..=40).map(|n| format!("line {n}\n")).collect();
        let tail = log_tail(&log);
        assert!(tail.starts_with("line 11\n"), "{tail}");
        assert!(tail.ends_with("line 40"), "{tail}");
    }

    #[test]
    fn log_tail_keeps_the_last_bytes_of_long_lines() {
        let log = format!("short\n{}é\n", "x".repeat(5000));
        let tail = log_tail(&log);
        assert!(tail.len() <= TAIL_BYTES);
        assert!(tail.ends_with("xé"));
    }

    #[test]
    fn read_head_gives_up_past_the_limit() {
        assert_eq!(read_head(&b"12345"[..], 5).unwrap(), Some(b"12345".to_vec()));
        assert_eq!(read_head(&b"123456"[..], 5).unwrap(), None);
    }

    #[test]
    fn read_log_renders_lines_and_keeps_the_error() {
        let stderr = "plain\n@nix {\"action\":\"msg\",\"level\":0,\"msg\":\"error: it broke\"}\n";
        let log = read_log(stderr.as_bytes(), &Arc::new(Work::background()), 0);
        assert_eq!(log.text, "plain\nerror: it broke\n");
        assert_eq!(log.error.as_deref(), Some("error: it broke"));
        let long = "x".repeat(3 * STDERR_KEPT);
        let log = read_log(long.as_bytes(), &Arc::new(Work::background()), 0);
        assert!(log.text.len() <= 2 * STDERR_KEPT && log.text.ends_with("xx\n"));
    }
}
