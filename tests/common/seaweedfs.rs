//! SeaweedFS, the real S3-compatible store (`weed server -s3`, installed
//! by scripts/install-deps.sh into a venv), on loopback ports with its
//! data under a scratch directory; stopped by PID on drop. It can be
//! stopped and started again on the same ports and data (an outage).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::server::http_request;
use super::{wait_until, TestDir};

pub const ACCESS_KEY: &str = "flakeforge-test";
pub const SECRET_KEY: &str = "flakeforge-test-secret";
const SIGNED_FOR: Duration = Duration::from_secs(60);

fn credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY)
}

/// Where install-deps.sh puts the `weed` binary.
pub const WEED: &str = "/opt/flakeforge-test/seaweedfs/bin/weed";

pub struct SeaweedFs {
    child: Option<Child>,
    dir: TestDir,
    /// master, volume, filer, s3: each also uses its port + 10000 for gRPC.
    ports: [u16; 4],
    bucket_name: String,
}

impl SeaweedFs {
    /// Starts it and creates `bucket`; returns once S3 answers.
    pub fn start(bucket: &str) -> SeaweedFs {
        assert!(
            std::path::Path::new(WEED).is_file(),
            "{WEED} is not installed: run scripts/install-deps.sh (tests never skip a missing tool)"
        );
        let dir = TestDir::new();
        fs::create_dir_all(dir.path().join("data")).unwrap();
        // One identity: without any, SeaweedFS lets anonymous requests do
        // anything and checks no signature.
        let identities = serde_json::json!({ "identities": [{
            "name": "flakeforge",
            "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        fs::write(dir.path().join("s3.json"), identities.to_string()).unwrap();
        let mut store = SeaweedFs { child: None, dir, ports: free_ports(), bucket_name: String::new() };
        store.spawn();
        let created =
            ureq::put(store.bucket(bucket).create_bucket(&credentials()).sign(SIGNED_FOR).as_str()).send_empty();
        assert_eq!(created.map(|r| r.status().as_u16()).ok(), Some(200), "creating the bucket");
        store.bucket_name = bucket.to_string();
        store.wait_writable();
        store
    }

    /// Waits until an object can be written and read back: the S3 gateway
    /// answers before its volume servers are ready.
    fn wait_writable(&self) {
        let bucket = self.bucket(&self.bucket_name);
        let credentials = credentials();
        wait_until(120, "SeaweedFS to store and give back an object", || {
            let put = bucket.put_object(Some(&credentials), "flakeforge-test-ready").sign(SIGNED_FOR);
            let stored = ureq::put(put.as_str()).send("ready").is_ok_and(|r| r.status() == 200);
            let get = bucket.get_object(Some(&credentials), "flakeforge-test-ready").sign(SIGNED_FOR);
            stored && ureq::get(get.as_str()).call().is_ok_and(|r| r.status() == 200)
        });
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(self.endpoint().parse().unwrap(), UrlStyle::Path, name.to_string(), "us-east-1").unwrap()
    }

    /// A credentials file for `--s3-credentials`, in `dir`.
    pub fn credentials_file(&self, dir: &TestDir) -> PathBuf {
        let file = dir.path().join("credentials");
        fs::write(
            &file,
            format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
        )
        .unwrap();
        file
    }

    fn spawn(&mut self) {
        let [master, volume, filer, s3] = self.ports;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(WEED)
            .arg("server")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            // Its Iceberg and Lance listeners have fixed ports: off, so stores run side by side.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            // By default it turns read-only below 1% of the disk free (2.5 GB
            // of a 250 GB disk): the tests store a few MB.
            .args(["-volume.minFreeSpace=256MiB", "-master.volumeSizeLimitMB=256"])
            .arg(format!("-s3.config={}", self.dir.path().join("s3.json").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("weed starts");
        self.child = Some(child);
        let addr = self.s3_addr();
        wait_until(120, "SeaweedFS's S3 gateway to answer", || {
            // Anonymous: refused, but an answer.
            std::net::TcpStream::connect(addr).is_ok() && http_request(addr, "GET", "/", &[]).status == 403
        });
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn s3_addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.ports[3]).into()
    }

    /// `http://127.0.0.1:PORT`, for `--s3-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3_addr())
    }

    /// The keys under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let bucket = self.bucket(bucket);
        let credentials = credentials();
        let mut action = ListObjectsV2::new(&bucket, Some(&credentials));
        action.with_prefix(prefix);
        let text = ureq::get(action.sign(SIGNED_FOR).as_str()).call().unwrap().body_mut().read_to_string().unwrap();
        ListObjectsV2::parse_response(&text).unwrap().contents.into_iter().map(|object| object.key).collect()
    }

    /// The keys of the multipart uploads begun in `bucket` and neither
    /// completed nor aborted (ListMultipartUploads; rusty-s3 has no action
    /// for it, so a listing's URL asks for `?uploads` instead).
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let bucket = self.bucket(bucket);
        let credentials = credentials();
        let mut action = ListObjectsV2::new(&bucket, Some(&credentials));
        let query = action.query_mut();
        query.remove("list-type");
        query.remove("encoding-type");
        query.insert("uploads", "");
        let text = ureq::get(action.sign(SIGNED_FOR).as_str()).call().unwrap().body_mut().read_to_string().unwrap();
        assert!(text.contains("<ListMultipartUploadsResult"), "not a list of uploads: {text}");
        text.split("<Key>").skip(1).map(|rest| rest.split("</Key>").next().unwrap().to_string()).collect()
    }

    /// The ETags HEAD and GET give for `key` in `bucket`.
    pub fn etags(&self, bucket: &str, key: &str) -> (String, String) {
        let (bucket, credentials) = (self.bucket(bucket), credentials());
        let head = ureq::head(bucket.head_object(Some(&credentials), key).sign(SIGNED_FOR).as_str()).call().unwrap();
        let get = ureq::get(bucket.get_object(Some(&credentials), key).sign(SIGNED_FOR).as_str())
            .header("Range", "bytes=0-0")
            .call()
            .unwrap();
        let etag = |r: &ureq::http::Response<ureq::Body>| r.headers()["etag"].to_str().unwrap().to_string();
        (etag(&head), etag(&get))
    }

    /// Removes `key` from `bucket` (as a lifecycle rule would).
    pub fn delete(&self, bucket: &str, key: &str) {
        let url = self.bucket(bucket).delete_object(Some(&credentials()), key).sign(SIGNED_FOR);
        assert_eq!(ureq::delete(url.as_str()).call().unwrap().status(), 204, "deleting {key}");
    }

    /// Stops it by PID (the data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data; returns once it stores objects.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_writable();
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Four ports below the ephemeral range whose gRPC twins (+10000) are free too.
fn free_ports() -> [u16; 4] {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let noise = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut seed = u64::from(noise) ^ (u64::from(std::process::id()) << 32);
    let mut ports = [0u16; 4];
    let mut found = 0;
    while found < 4 {
        seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        // 12000..22000, so port + 10000 stays below 32768.
        let port = 12_000 + (seed >> 48) as u16 % 10_000;
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports[found] = port;
            found += 1;
        }
    }
    ports
}
