//! Fair connection slots under abuse, with two client addresses: the server
//! runs in a network namespace the test creates, a normal client pulls from
//! inside it (127.0.0.1) while 600 hostile connections come from outside
//! over a veth pair (10.x.y.1). Idle keep-alive connections, heads dripped a
//! byte at a time, and reconnects when closed: the normal client's pulls
//! must all succeed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{require_tool, run_ok, run_with_timeout, FlakeforgeServer, Launch, TestDir, TestFlake};

/// A network namespace joined to this one by a veth pair, deleted on drop.
struct Netns {
    name: String,
    /// This side's address, and the namespace's.
    outside: String,
    inside: String,
}

impl Netns {
    fn new() -> Netns {
        require_tool("ip");
        let id = std::process::id();
        let name = format!("ffconn{id}");
        let (host_if, ns_if) = (format!("ffc{id}h"), format!("ffc{id}n"));
        let subnet = format!("10.{}.{}", 100 + id % 100, (id / 100) % 250);
        let (outside, inside) = (format!("{subnet}.1"), format!("{subnet}.2"));
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(args), 30);
        let _ = run_with_timeout(Command::new("ip").args(["netns", "del", &name]), 30);
        ip(&["netns", "add", &name]);
        let netns = Netns { name: name.clone(), outside: outside.clone(), inside: inside.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{outside}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{inside}/30"), "dev", &ns_if]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        netns
    }

    /// `ip netns exec NAME`, to run a command inside.
    fn exec(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name].map(String::from).to_vec()
    }
}

impl Drop for Netns {
    /// Deleting the namespace deletes the veth pair with it.
    fn drop(&mut self) {
        let _ = run_with_timeout(Command::new("ip").args(["netns", "del", &self.name]), 30);
    }
}

/// What the hostile connections went through.
#[derive(Default)]
struct Attack {
    stop: AtomicBool,
    connected: AtomicUsize,
    served: AtomicUsize,
    turned_away: AtomicUsize,
    closed_idle: AtomicUsize,
    /// How long each dripped head held its connection before the server ended it.
    drip_holds: Mutex<Vec<Duration>>,
}

const HEAD: &[u8] = b"GET /v2/ HTTP/1.1\r\nHost: a-client-that-never-finishes-its-head\r\n\r\n";
/// Between reconnects, so the storm of closed and turned-away connections
/// leaves the two cores something for the normal client.
const BACKOFF: Duration = Duration::from_millis(500);

impl Attack {
    fn connect(&self, target: SocketAddr) -> Option<TcpStream> {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        self.connected.fetch_add(1, Ordering::Relaxed);
        Some(stream)
    }

    /// Sends one request, then sits on the connection until it is closed.
    fn idle(&self, target: SocketAddr) {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(mut stream) = self.connect(target) else {
                thread::sleep(BACKOFF);
                continue;
            };
            let mut answer = [0u8; 512];
            let first =
                stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").and_then(|()| stream.read(&mut answer));
            match first {
                Ok(n) if answer[..n].starts_with(b"HTTP/1.1 200") => {
                    self.served.fetch_add(1, Ordering::Relaxed);
                    while !self.stop.load(Ordering::Relaxed) {
                        match stream.read(&mut answer) {
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            _ => {
                                self.closed_idle.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                Ok(n) if answer[..n].starts_with(b"HTTP/1.1 503") => {
                    self.turned_away.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            thread::sleep(BACKOFF);
        }
    }

    /// Sends a head a byte a second, reconnecting whenever the server ends it.
    fn drip(&self, target: SocketAddr) {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(mut stream) = self.connect(target) else {
                thread::sleep(BACKOFF);
                continue;
            };
            let started = Instant::now();
            let mut answer = [0u8; 512];
            for byte in HEAD.iter().cycle() {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                // Waiting for the next byte's turn, or for the server to answer or close.
                match stream.read(&mut answer) {
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Ok(n) if answer[..n].starts_with(b"HTTP/1.1 503") => {
                        self.turned_away.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ => {
                        self.drip_holds.lock().unwrap().push(started.elapsed());
                        break;
                    }
                }
            }
            thread::sleep(BACKOFF);
        }
    }
}

/// Pulls `hello` `count` times from inside the namespace, while `idle` and
/// `drip` hostile connections run against the other address; how many
/// pulls succeeded, and how many hostile idle connections were closed.
fn pulls_under_attack(
    server: &FlakeforgeServer,
    netns: &Netns,
    idle: usize,
    drip: usize,
    count: usize,
) -> (usize, usize) {
    let target = server.addrs()[1];
    let attack = Attack::default();
    let succeeded = thread::scope(|scope| {
        for i in 0..idle + drip {
            let attack = &attack;
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(scope, move || if i < idle { attack.idle(target) } else { attack.drip(target) })
                .unwrap();
        }
        // Let the attack fill what it can first.
        thread::sleep(Duration::from_secs(5));
        let mut succeeded = 0;
        for attempt in 0..count {
            let out = TestDir::new();
            let mut pull = Command::new("ip");
            pull.args(["netns", "exec", &netns.name, "skopeo", "copy", "--src-tls-verify=false"])
                .arg(format!("docker://{}/hello", server.addr()))
                .arg(format!("dir:{}", out.path().display()));
            let output = run_with_timeout(&mut pull, 120);
            if output.status.success() {
                succeeded += 1;
            } else {
                eprintln!("pull {attempt} failed: {}", String::from_utf8_lossy(&output.stderr));
            }
        }
        attack.stop.store(true, Ordering::Relaxed);
        succeeded
    });
    let holds = attack.drip_holds.into_inner().unwrap();
    let longest = holds.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{idle} idle + {drip} dripping from {}: pulls {succeeded}/{count}; attacker connections {}, served {}, turned away {}, \
         idle ones closed {}, dripped heads ended {} (longest held {longest:.1?})",
        netns.outside,
        attack.connected.into_inner(),
        attack.served.into_inner(),
        attack.turned_away.into_inner(),
        attack.closed_idle.load(Ordering::Relaxed),
        holds.len(),
    );
    if drip > 0 {
        assert!(!holds.is_empty(), "no dripped head was ended");
        // A byte a second is far below the minimum rate: ended after the grace, long before --head-timeout.
        assert!(longest < Duration::from_secs(30), "a dripped head held its connection {longest:?}");
    }
    (succeeded, attack.closed_idle.into_inner())
}

#[test]
fn a_normal_client_keeps_pulling_while_another_address_holds_600_connections() {
    require_tool("skopeo");
    let netns = Netns::new();
    let flake = TestFlake::new();
    let launch = |args: &[&str]| Launch {
        listen: vec!["127.0.0.1:0".into(), format!("{}:0", netns.inside)],
        wrapper: netns.exec(),
        ..Launch::new(args, false)
    };
    // Default slots (512 in all, 128 per address); a head timeout long enough
    // that only the minimum rate can explain dripped heads ending early.
    let mut server = FlakeforgeServer::launch(flake.path(), launch(&["--head-timeout", "60"]), |_| {});
    let warm = common::server::http_request(server.addrs()[1], "GET", "/v2/hello/manifests/latest", &[]);
    assert_eq!(warm.status, 200);
    assert_eq!(pulls_under_attack(&server, &netns, 300, 300, 8).0, 8);

    // No cap per address, fewer slots than the 600 idle connections: idle
    // ones are closed to make room. (With far fewer slots, a machine too
    // loaded to answer could find every slot busy mid-request: then a 503 is
    // right, and not what this checks.)
    drop(server);
    server = FlakeforgeServer::launch(
        flake.path(),
        launch(&["--max-connections", "256", "--max-connections-per-ip", "100000"]),
        |_| {},
    );
    let warm = common::server::http_request(server.addrs()[1], "GET", "/v2/hello/manifests/latest", &[]);
    assert_eq!(warm.status, 200);
    let (pulled, closed) = pulls_under_attack(&server, &netns, 600, 0, 8);
    assert_eq!(pulled, 8);
    assert!(closed > 0, "no idle connection was closed to make room");
}
