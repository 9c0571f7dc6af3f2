//! Container clients as the tests use them, each with its state under its
//! own scratch directory: skopeo, podman (with the settings this machine
//! needs), and dockerd and containerd started by hand and stopped by PID;
//! also Debian's docker-registry, the reference registry that stands in for
//! flakeforge when the harness itself is checked.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{http_request, HttpResponse};
use super::{free_port, require_tool, run_capture, run_ok, wait_until, TestDir};

/// Debian's docker CLI: it matches Debian's dockerd (a newer CLI may sit earlier on PATH).
const DOCKER: &str = "/usr/bin/docker";

pub fn skopeo(args: &[&str]) -> String {
    require_tool("skopeo");
    run_ok(Command::new("skopeo").args(args), 300)
}

/// `skopeo copy docker://IMAGE` (`HOST:PORT/NAME`) into a fresh `dir:`
/// copy, with `options` for the source (`--src-tls-verify=false`,
/// `--src-cert-dir DIR`); skopeo checks every digest. The copy.
pub fn skopeo_copy(image: &str, options: &[&str]) -> TestDir {
    let out = TestDir::new();
    let (source, dest) = (format!("docker://{image}"), format!("dir:{}", out.path().display()));
    let args: Vec<&str> = ["copy"].into_iter().chain(options.iter().copied()).chain([&*source, &*dest]).collect();
    skopeo(&args);
    out
}

/// podman with its own storage, runc, no network and ulimits that work here.
pub struct Podman {
    dir: TestDir,
}

impl Podman {
    pub fn new() -> Podman {
        require_tool("podman");
        require_tool("runc");
        let dir = TestDir::new();
        fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\nnetns = \"none\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args), 300)
    }

    /// Runs and returns (success, stdout + stderr).
    pub fn try_run(&self, args: &[&str]) -> (bool, String) {
        run_capture(&mut self.command(args), 300)
    }
}

/// A daemon started by hand, stopped on drop.
struct Daemon {
    child: Child,
    dir: TestDir,
}

impl Daemon {
    /// Starts `program`, logging to a file under `dir`; returns once `ready` holds.
    fn start(program: &str, args: &[&str], dir: TestDir, mut ready: impl FnMut() -> bool) -> Daemon {
        require_tool(program);
        let log = fs::File::create(dir.path().join(format!("{program}.log"))).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut daemon = Daemon { child, dir };
        wait_until(30, &format!("{program} to listen"), || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{program} exited ({status}): {}", daemon.log(program));
            }
            ready()
        });
        daemon
    }

    fn log(&self, program: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{program}.log"))).unwrap_or_default()
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so that the daemon undoes its own mounts and stops its
    /// shims (dockerd killed outright leaves its data root mounted); SIGKILL
    /// if it has not exited within 10 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Dockerd {
    daemon: Daemon,
    socket: PathBuf,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        assert!(Path::new(DOCKER).is_file(), "{DOCKER} is missing: install docker.io");
        let dir = TestDir::new();
        let d = dir.path().to_path_buf();
        let socket = d.join("docker.sock");
        let p = |name: &str| d.join(name).to_str().unwrap().to_string();
        let host = format!("unix://{}", socket.display());
        let args = [
            "--data-root",
            &p("data"),
            "--exec-root",
            &p("exec"),
            "--pidfile",
            &p("pid"),
            "-H",
            &host,
            "--storage-driver",
            "overlay2",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ];
        let daemon = Daemon::start("dockerd", &args, dir, || socket.exists());
        Dockerd { daemon, socket }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(DOCKER);
        command.env("DOCKER_HOST", format!("unix://{}", self.socket.display())).args(args);
        command
    }

    pub fn docker(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args), 300)
    }

    /// Runs and returns (success, stdout + stderr).
    pub fn try_docker(&self, args: &[&str]) -> (bool, String) {
        run_capture(&mut self.command(args), 300)
    }

    pub fn log(&self) -> String {
        self.daemon.log("dockerd")
    }
}

pub struct Containerd {
    _daemon: Daemon,
    socket: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        require_tool("ctr");
        let dir = TestDir::new();
        let d = dir.path().to_path_buf();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n",
                d.join("root").display(),
                d.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let daemon = Daemon::start("containerd", &["--config", config.to_str().unwrap()], dir, || socket.exists());
        Containerd { _daemon: daemon, socket }
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        run_ok(Command::new("ctr").arg("--address").arg(&self.socket).args(args), 300)
    }

    /// Runs and returns (success, stdout + stderr).
    pub fn try_ctr(&self, args: &[&str]) -> (bool, String) {
        run_capture(Command::new("ctr").arg("--address").arg(&self.socket).args(args), 300)
    }

    /// `ctr run --rm IMAGE ID` (a pulled image), and what it printed.
    ///
    /// The output goes to a file the shim writes (`--log-uri file://`), not
    /// through ctr's FIFOs: ctr may return before its own FIFO copy has read
    /// everything (containerd/containerd#770; seen here losing all the
    /// output, and once only the last line), whereas the shim finishes its
    /// copy into the file before `--rm`'s delete returns.
    pub fn run(&self, image: &str, id: &str) -> String {
        let log = self.socket.with_file_name(format!("{id}.out"));
        // The shim appends to the file, and a test may run one id twice.
        let _ = fs::remove_file(&log);
        let uri = format!("file://{}", log.display());
        self.ctr(&["run", "--rm", "--log-uri", &uri, image, id]);
        fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()))
    }
}

/// Debian's docker-registry (CNCF distribution) on a free loopback port, with
/// its storage under its own scratch directory.
pub struct DockerRegistry {
    _daemon: Daemon,
    addr: SocketAddr,
}

/// The address in docker-registry's `listening on 127.0.0.1:PORT` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("listening on 127.0.0.1:")?;
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)))
}

impl DockerRegistry {
    /// The registry picks its own port (`127.0.0.1:0`) and says which in its
    /// log: a port picked for it beforehand could be taken meanwhile (by a
    /// client's connection or another test's daemon), and another listener
    /// on it would pass for this registry until it went away.
    pub fn start() -> DockerRegistry {
        let dir = TestDir::new();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("docker-registry.log");
        let listening = || listening_address(&fs::read_to_string(&log).unwrap_or_default());
        let daemon =
            Daemon::start("docker-registry", &["serve", config.to_str().unwrap()], dir, || listening().is_some());
        let addr = listening().expect("the registry said where it listens");
        DockerRegistry { _daemon: daemon, addr }
    }

    /// `127.0.0.1:PORT`, as image references start.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(self.addr, method, path, headers)
    }
}
