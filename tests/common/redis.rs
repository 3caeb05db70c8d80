//! A real `redis-server` on a free loopback port in a temporary directory, stopped
//! when dropped. A missing redis-server fails the test: CI installs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server and waits until it accepts connections.
    pub fn start() -> RedisServer {
        let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .expect("redis-server not found: install it with `apt-get install redis-server`");
        let port = super::ports::port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            url: format!("redis://127.0.0.1:{port}/0"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until the location store at `url` knows an instance for `user`:
/// the event an instance's presence write stands for.
pub async fn wait_located(url: &str, user: &str) {
    use callbridge::call::location::{LocationStore, RedisStore};
    let store = RedisStore::connect(url).await.expect("connect to redis");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if store
            .lookup(user, now_ms)
            .await
            .is_ok_and(|found| !found.is_empty())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no instance announced {user} in redis within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
