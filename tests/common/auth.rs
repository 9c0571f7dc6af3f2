//! For the access control tests: htpasswd files made by Apache's own
//! `htpasswd -B`, HTTP Basic credentials, and an HTTPS client that trusts
//! the server's local CA and can speak from another loopback address.

use std::fs;
use std::io::{BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::server::{read_response, FlakeforgeServer, HttpResponse};
use super::tls_client::client_trusting;
use super::{require_tool, run_ok, TestDir};

/// An htpasswd file of bcrypt entries, in a scratch directory of its own.
pub struct Htpasswd {
    dir: TestDir,
    path: PathBuf,
}

impl Htpasswd {
    pub fn new(users: &[(&str, &str)]) -> Htpasswd {
        let dir = TestDir::new();
        let path = dir.path().join("htpasswd");
        let htpasswd = Htpasswd { dir, path };
        htpasswd.replace(users);
        htpasswd
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as an argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Writes a new file with these users and renames it over the old one,
    /// as secret managers do.
    pub fn replace(&self, users: &[(&str, &str)]) {
        self.replace_with(users, "-B");
    }

    /// As [`Htpasswd::replace`], with `htpasswd`'s hash flag (`-B` bcrypt, `-m` MD5).
    pub fn replace_with(&self, users: &[(&str, &str)], hash: &str) {
        require_tool("htpasswd");
        let new = self.dir.path().join("htpasswd.new");
        fs::write(&new, "").unwrap();
        for (i, (user, password)) in users.iter().enumerate() {
            let mut command = Command::new("htpasswd");
            command.args([hash, "-b"]);
            if i == 0 {
                command.arg("-c");
            }
            run_ok(command.arg(&new).args([user, password]), 30);
        }
        fs::rename(&new, &self.path).unwrap();
    }
}

/// The `Authorization` value for `user` and `password`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// HTTPS requests to a flakeforge with its local CA, one connection each.
pub struct Https {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    /// The loopback address to connect from.
    source: Option<IpAddr>,
}

impl Https {
    pub fn new(server: &FlakeforgeServer) -> Https {
        Https { addr: server.addr(), config: client_trusting(&server.ca_pem()), source: None }
    }

    /// The same client, connecting from `source` (another loopback address).
    pub fn from(&self, source: &str) -> Https {
        Https { addr: self.addr, config: self.config.clone(), source: Some(source.parse().unwrap()) }
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let tcp = self.connect();
        tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let name = ServerName::try_from(self.addr.ip().to_string()).unwrap();
        let conn = ClientConnection::new(self.config.clone(), name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        read_response(&mut BufReader::new(stream), method == "HEAD")
    }

    /// `GET path` as `user` with `password`, or anonymously.
    pub fn get(&self, path: &str, login: Option<(&str, &str)>) -> HttpResponse {
        self.send("GET", path, login)
    }

    pub fn send(&self, method: &str, path: &str, login: Option<(&str, &str)>) -> HttpResponse {
        match login {
            Some((user, password)) => self.request(method, path, &[("Authorization", &basic(user, password))]),
            None => self.request(method, path, &[]),
        }
    }

    fn connect(&self) -> TcpStream {
        let Some(source) = self.source else { return TcpStream::connect(self.addr).unwrap() };
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
        socket.connect(&self.addr.into()).unwrap();
        socket.into()
    }
}
