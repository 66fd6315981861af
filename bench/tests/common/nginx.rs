//! nginx terminating TLS in front of nodes, configured as the project deploys it: the
//! configuration `scripts/cluster.sh render-nginx` renders from deploy/nginx.conf, with
//! `ssl` and a certificate added to its listen line. A test that needs it fails (never
//! skips) when nginx is missing.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// One nginx, stopped (and its directory removed) when dropped.
pub struct Nginx {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// nginx on a free port, TLS with `cert_pem` (the chain) and `key_pem`, proxying to
    /// the node ports.
    pub fn start_tls(cert_pem: &str, key_pem: &str, node_ports: &[u16]) -> Nginx {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("loadgen-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create nginx's directory");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, cert_pem).expect("write the certificate");
        std::fs::write(&key, key_pem).expect("write the key");
        let conf = dir.join("nginx.conf");
        render(&conf, port, node_ports);
        let text = std::fs::read_to_string(&conf).expect("read the rendered nginx.conf");
        let listen = format!("listen 127.0.0.1:{port} ");
        assert!(text.contains(&listen), "render-nginx wrote no `{listen}` line:\n{text}");
        let tls = format!("{listen}ssl ",);
        let text = text.replacen(&listen, &tls, 1).replacen(
            "location / {",
            &format!(
                "ssl_certificate {};\n        ssl_certificate_key {};\n\n        location / {{",
                cert.display(),
                key.display()
            ),
            1,
        );
        std::fs::write(&conf, text).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.join("nginx"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nginx ({e}): install it (Debian: apt-get install nginx-light; scripts/test.sh does)"
                )
            });
        let nginx = Nginx { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port} within 10 s; see {}",
                nginx.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `scripts/cluster.sh render-nginx OUT PORT NODE_PORT...`.
fn render(out: &Path, port: u16, node_ports: &[u16]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("render-nginx")
        .arg(out)
        .arg(port.to_string())
        .args(node_ports.iter().map(u16::to_string))
        .status()
        .expect("run scripts/cluster.sh render-nginx");
    assert!(status.success(), "scripts/cluster.sh render-nginx failed");
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown, its workers with it.
        // SAFETY: a plain signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
