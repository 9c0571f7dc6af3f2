//! The real `flakeforge` binary on a free loopback port, killed on drop,
//! with its log captured, and a tiny HTTP client to talk to it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_until, TestDir, NIX_CONFIG};

pub struct FlakeforgeServer {
    child: Option<Child>,
    launch: Launch,
    state: TestDir,
    log: PathBuf,
    /// Where it listens, as its log says (ports the system chose included).
    bound: Vec<SocketAddr>,
}

/// How a server is started, past `serve --flake FLAKE`.
pub struct Launch {
    pub args: Vec<String>,
    pub tls: bool,
    /// `--listen` values; port 0 lets the system choose a free port, so two
    /// servers started at once never take the same one. The first is the
    /// one [`FlakeforgeServer::addr`] gives.
    pub listen: Vec<String>,
    /// A command the binary runs under (e.g. `ip netns exec NAME`).
    pub wrapper: Vec<String>,
}

impl Launch {
    /// Plain HTTP (unless `tls`) on a free loopback port, with `args`.
    pub fn new(args: &[&str], tls: bool) -> Launch {
        let mut all: Vec<String> = if tls { Vec::new() } else { vec!["--no-tls".into()] };
        all.extend(args.iter().map(|a| a.to_string()));
        Launch { args: all, tls, listen: vec!["127.0.0.1:0".into()], wrapper: Vec::new() }
    }
}

/// An answer: status, reason phrase, headers (names lowercased) and body.
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first OCI error code of the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_string()
    }

    /// The first OCI error message of the body.
    pub fn error_message(&self) -> String {
        self.json()["errors"][0]["message"].as_str().unwrap_or_default().to_string()
    }
}

impl FlakeforgeServer {
    /// Plain HTTP on 127.0.0.1, serving `flake`, with extra `args`.
    pub fn start(flake: &Path, args: &[&str]) -> FlakeforgeServer {
        Self::launch(flake, Launch::new(args, false), |_| {})
    }

    /// HTTPS with the local CA (plus `args`).
    pub fn start_tls(flake: &Path, args: &[&str]) -> FlakeforgeServer {
        Self::launch(flake, Launch::new(args, true), |_| {})
    }

    /// Plain HTTP, after `prepare` has run on the (not yet created) state directory.
    pub fn start_prepared(flake: &Path, args: &[&str], prepare: impl FnOnce(&Path)) -> FlakeforgeServer {
        Self::launch(flake, Launch::new(args, false), prepare)
    }

    /// Plain HTTP, the binary run under `wrapper` (a command that execs it, as `taskset -c 0`).
    pub fn start_under(wrapper: &[&str], flake: &Path, args: &[&str]) -> FlakeforgeServer {
        let wrapper = wrapper.iter().map(|a| a.to_string()).collect();
        Self::launch(flake, Launch { wrapper, ..Launch::new(args, false) }, |_| {})
    }

    /// Starts as `launch` says, after `prepare` has run on the (not yet
    /// created) state directory; returns once it serves.
    pub fn launch(flake: &Path, mut launch: Launch, prepare: impl FnOnce(&Path)) -> FlakeforgeServer {
        let state = TestDir::new();
        prepare(&state.path().join("state"));
        let log = state.path().join("flakeforge.log");
        let mut args = vec!["serve".to_string(), "--flake".into(), flake.to_str().unwrap().into()];
        // A first build on a loaded machine may take longer than the default
        // 20 s: tests that are not about that deadline wait for the build.
        if !launch.args.iter().any(|arg| arg == "--answer-within") {
            args.extend(["--answer-within".into(), "0".into()]);
        }
        args.append(&mut launch.args);
        launch.args = args;
        let mut server = FlakeforgeServer { child: None, launch, state, log, bound: Vec::new() };
        server.spawn();
        server
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    /// Where `--metrics-listen` (port 0: the system chose) listens, as the
    /// log says; logged before the line the harness waits for.
    pub fn metrics_listener(&self) -> SocketAddr {
        let log = self.log();
        let line =
            log.lines().find(|line| line.contains("] serving /metrics on ")).expect("no /metrics listener logged");
        let (_, rest) = line.split_once("] serving /metrics on ").unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The local CA's certificate (PEM), for clients to trust.
    pub fn ca_pem(&self) -> String {
        fs::read_to_string(self.state_dir().join("tls").join("ca.crt")).expect("an HTTPS server has a local CA")
    }

    /// A directory with `ca.crt`, as `--cert-dir` of skopeo and podman wants it.
    pub fn cert_dir(&self) -> TestDir {
        let dir = TestDir::new();
        fs::write(dir.path().join("ca.crt"), self.ca_pem()).unwrap();
        dir
    }

    /// Starts the process. The first start picks its ports below the
    /// ephemeral range (no outgoing connection can take one of them while
    /// the server is stopped for a restart); later starts keep them. A port
    /// another test's server took meanwhile: a first start picks another, a
    /// restart waits for it a little.
    fn spawn(&mut self) {
        let first = self.bound.is_empty();
        for attempt in 1..=10 {
            let listen: Vec<String> = self.launch.listen.iter().map(|l| with_a_port(l)).collect();
            match self.try_spawn(&listen) {
                Ok(bound) => {
                    self.bound = bound;
                    break;
                }
                Err(log) if log.contains("cannot listen") && attempt < 10 => {
                    if !first {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                Err(log) => panic!("flakeforge exited:\n{log}"),
            }
        }
        self.launch.listen = self.bound.iter().map(ToString::to_string).collect();
        if !self.launch.tls && self.launch.wrapper.is_empty() {
            // Any answer: with access control `/v2/` is a 401.
            let status = self.get("/v2/").status;
            assert!(matches!(status, 200 | 401), "flakeforge does not answer ({status}):\n{}", self.log());
        }
    }

    /// Runs the binary on `listen`; the addresses it serves on, or its log if it exited.
    fn try_spawn(&mut self, listen: &[String]) -> Result<Vec<SocketAddr>, String> {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let log_start = log.metadata().unwrap().len() as usize;
        let binary = env!("CARGO_BIN_EXE_flakeforge");
        let mut command = match self.launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.args(&self.launch.args);
        for address in listen {
            command.arg("--listen").arg(address);
        }
        let child = command
            .arg("--state-dir")
            .arg(self.state_dir())
            .env("RUST_LOG", "info")
            .env("NIX_CONFIG", NIX_CONFIG)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the flakeforge binary starts");
        self.child = Some(child);
        // Its own log line, not a connection: another server may hold a port
        // this one failed to bind.
        let mut outcome = None;
        wait_until(60, "flakeforge to serve", || {
            let log = self.log().get(log_start..).unwrap_or_default().to_string();
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                outcome = Some(Err(log));
                return true;
            }
            outcome = bound_addresses(&log).map(Ok);
            outcome.is_some()
        });
        outcome.expect("set when the wait ends")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same port and state directory, with `more` arguments.
    pub fn restart_with(&mut self, more: &[&str]) {
        self.launch.args.extend(more.iter().map(|a| a.to_string()));
        self.restart();
    }

    /// Stops and starts again on the same port and state directory, with `flag` set to `value`.
    pub fn restart_setting(&mut self, flag: &str, value: &str) {
        let args = &mut self.launch.args;
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
        self.restart();
    }

    /// Stops and starts again on the same port and state directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The first address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.bound[0]
    }

    /// Every address it listens on, in `--listen` order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.bound
    }

    /// `127.0.0.1:PORT`, as image references start.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of `series` (a metric's name, with its labels if any) in
    /// `/metrics`; `None` if it is not there.
    pub fn metric(&self, series: &str) -> Option<u64> {
        let metrics = self.get("/metrics");
        assert_eq!(metrics.status, 200);
        let text = String::from_utf8(metrics.body).unwrap();
        let prefix = format!("{series} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|n| n.trim().parse().unwrap())
    }

    /// How many `nix build` runs the log shows (started and finished).
    pub fn nix_builds(&self) -> usize {
        self.log().lines().filter(|l| l.contains("nix build ")).count()
    }

    /// `GET /-/builds`: the builds listed and what Nix is doing.
    pub fn builds(&self) -> serde_json::Value {
        let response = self.get("/-/builds");
        assert_eq!(response.status, 200);
        response.json()
    }

    /// The listed builds of `image`, newest first.
    pub fn builds_of(&self, image: &str) -> Vec<serde_json::Value> {
        let builds = self.builds()["builds"].as_array().cloned().unwrap_or_default();
        builds.into_iter().filter(|b| b["image"] == image).collect()
    }

    /// `nix` processes the server runs right now (its children named `nix`).
    pub fn nix_children(&self) -> usize {
        let Some(child) = &self.child else { return 0 };
        let parent = child.id().to_string();
        let Ok(entries) = fs::read_dir("/proc") else { return 0 };
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
            .filter(|stat| {
                // `pid (comm) state ppid …`
                let Some((head, rest)) = stat.rsplit_once(')') else { return false };
                let comm = head.split_once('(').map_or("", |(_, comm)| comm);
                let mut fields = rest.split_whitespace();
                let (state, ppid) = (fields.next(), fields.next());
                comm == "nix" && state != Some("Z") && ppid == Some(parent.as_str())
            })
            .count()
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(self.addr(), method, path, headers)
    }
}

/// `address` with a free-looking port for a port 0: a random one below the
/// ephemeral range, which the system hands to outgoing connections and to
/// `bind` on port 0.
fn with_a_port(address: &str) -> String {
    let Some(host) = address.strip_suffix(":0") else { return address.to_string() };
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range.split_whitespace().next().and_then(|low| low.parse().ok()).unwrap_or(32768);
    let (floor, span) = (low.saturating_sub(12_000).max(1025), 12_000.min(low.saturating_sub(1025)).max(1));
    let noise = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let seed = u64::from(noise) ^ (u64::from(std::process::id()) << 32);
    let port = floor + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16 % span;
    format!("{host}:{port}")
}

/// The addresses of the log line `serving FLAKE for SYSTEMS on ADDR, ADDR over ...`.
fn bound_addresses(log: &str) -> Option<Vec<SocketAddr>> {
    let line = log.lines().find(|line| line.contains("] serving ") && line.contains(" over "))?;
    let (_, addresses) = line[..line.find(" over ")?].rsplit_once(" on ")?;
    addresses.split(", ").map(|a| a.parse().ok()).collect()
}

/// One HTTP/1.1 request to `addr` on a connection of its own; the whole answer.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream), method == "HEAD")
}

/// Reads one response: Content-Length, chunked, or to the end.
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> HttpResponse {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let reason = line.trim_end().splitn(3, ' ').nth(2).unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = HttpResponse { status, reason, headers, body: Vec::new() };
    if head_only || status == 204 || status == 304 {
        return response;
    }
    if let Some(length) = response.header("content-length") {
        let mut body = vec![0; length.parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        response.body = body;
    } else if response.header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut response.body).unwrap();
    }
    response
}

impl Drop for FlakeforgeServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- flakeforge log ---\n{}", self.log());
        }
    }
}
