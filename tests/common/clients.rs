//! Container clients as the tests use them, each with its state under its
//! own scratch directory: skopeo, podman (with the settings this machine
//! needs), and dockerd and containerd started by hand and stopped by PID.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{require_tool, run_capture, run_ok, wait_until, TestDir};

/// Debian's docker CLI: it matches Debian's dockerd (a newer CLI may sit earlier on PATH).
const DOCKER: &str = "/usr/bin/docker";

pub fn skopeo(args: &[&str]) -> String {
    require_tool("skopeo");
    run_ok(Command::new("skopeo").args(args), 300)
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

/// A daemon started by hand, killed on drop.
struct Daemon {
    child: Child,
    dir: TestDir,
}

impl Daemon {
    fn start(program: &str, args: &[&str], dir: TestDir, socket: &Path) -> Daemon {
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
            socket.exists()
        });
        daemon
    }

    fn log(&self, program: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{program}.log"))).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
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
        let daemon = Daemon::start("dockerd", &args, dir, &socket);
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
        let daemon = Daemon::start("containerd", &["--config", config.to_str().unwrap()], dir, &socket);
        Containerd { _daemon: daemon, socket }
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        run_ok(Command::new("ctr").arg("--address").arg(&self.socket).args(args), 300)
    }
}
