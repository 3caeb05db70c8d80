//! A real Kamailio (Debian package `kamailio`) as a carrier's registrar and proxy,
//! running `tests/kamailio/kamailio.cfg` (the stock 5.6 routing, see its header) in
//! the foreground (`-DD -E`) on 127.0.0.1 with a port from [`super::ports`], in a
//! private temporary directory that holds its db_text tables (subscribers with
//! plain-text passwords, DID aliases) and its log. It runs as the current user and
//! in its own process group, which is terminated on drop, so a failing test leaves
//! no process behind. Ready once it answers an OPTIONS ping (bounded wait).
//!
//! ```ignore
//! let kam = Kamailio::start(KamailioOptions {
//!     defines: vec!["WITH_AUTH"],
//!     subscribers: vec![("acct".into(), "s3cret".into())],
//!     ..KamailioOptions::default()
//! });
//! // ... a trunk at kam.addr ...
//! ```

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stock-style configuration of the tests.
pub fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/kamailio.cfg")
}

/// The Kamailio binary: `$KAMAILIO` if set, else `/usr/sbin/kamailio`. Panics when
/// missing: CI installs the `kamailio` package (scripts/deps.sh).
pub fn binary() -> PathBuf {
    let bin = std::env::var_os("KAMAILIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/kamailio"));
    assert!(
        bin.is_file(),
        "Kamailio not found at {} (from $KAMAILIO, else /usr/sbin/kamailio): \
         install it with `apt-get install kamailio` (scripts/deps.sh does)",
        bin.display()
    );
    bin
}

/// What the carrier knows.
#[derive(Debug, Clone, Default)]
pub struct KamailioOptions {
    /// Preprocessor defines of the cfg (`WITH_AUTH`, `WITH_ALIASDB`, `WITH_PSTN`).
    pub defines: Vec<&'static str>,
    /// Accounts (`subscriber` table): username and plain-text password.
    pub subscribers: Vec<(String, String)>,
    /// DIDs routed to accounts (`dbaliases` table): DID and account username.
    pub aliases: Vec<(String, String)>,
    /// The PSTN gateway that `WITH_PSTN` sends international numbers to.
    pub pstn_gw: Option<SocketAddr>,
    /// Another configuration file than the tests' carrier (e.g. the dispatcher of
    /// `deploy/kamailio/kamailio.cfg`).
    pub config: Option<PathBuf>,
    /// More `-A` defines, written as Kamailio takes them (`NAME=value`, strings
    /// quoted).
    pub raw_defines: Vec<String>,
}

/// A running Kamailio.
pub struct Kamailio {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// The main process (leader of its own process group).
    child: Option<Child>,
    /// Private directory: db_text tables and `kamailio.log`.
    dir: PathBuf,
}

/// A db_text value: `:` and `\` escaped.
fn db_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

impl Kamailio {
    /// Writes the tables, starts Kamailio and waits until it answers OPTIONS.
    pub fn start(options: KamailioOptions) -> Kamailio {
        let dir = tempfile::Builder::new()
            .prefix("callbridge-kamailio-")
            .tempdir()
            .expect("Kamailio temp dir")
            .keep();
        let port = super::ports::port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let domain = addr.ip().to_string();
        let db = dir.join("db");
        std::fs::create_dir_all(&db).expect("db dir");
        let write = |name: &str, text: String| {
            std::fs::write(db.join(name), text).expect("write db_text table");
        };
        write(
            "version",
            "id(int,auto) table_name(string) table_version(int) \n\
             0:subscriber:7\n0:dbaliases:1\n"
                .into(),
        );
        let mut subscriber =
            "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) \n"
                .to_string();
        for (i, (user, password)) in options.subscribers.iter().enumerate() {
            subscriber.push_str(&format!(
                "{}:{}:{}:{}:::\n",
                i + 1,
                db_value(user),
                db_value(&domain),
                db_value(password)
            ));
        }
        write("subscriber", subscriber);
        let mut aliases =
            "id(int,auto) alias_username(string) alias_domain(string) username(string) domain(string) \n"
                .to_string();
        for (i, (did, user)) in options.aliases.iter().enumerate() {
            aliases.push_str(&format!(
                "{}:{}:{}:{}:{}\n",
                i + 1,
                db_value(did),
                db_value(&domain),
                db_value(user),
                db_value(&addr.to_string())
            ));
        }
        write("dbaliases", aliases);

        let mut cmd = Command::new(binary());
        cmd.arg("-f")
            .arg(options.config.clone().unwrap_or_else(config_path))
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .args(["-l", &format!("udp:{addr}")])
            .arg("-Y")
            .arg(&dir)
            .arg("-w")
            .arg(&dir)
            .arg("-A")
            .arg(format!("DBURL=\"text://{}\"", db.display()));
        for define in &options.defines {
            cmd.args(["-A", define]);
        }
        for define in &options.raw_defines {
            cmd.arg("-A").arg(define);
        }
        if let Some(gw) = options.pstn_gw {
            cmd.arg("-A").arg(format!("PSTN_GW=\"{gw}\""));
        }
        let log = std::fs::File::create(dir.join("kamailio.log")).expect("log file");
        let child = cmd
            .current_dir(&dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn kamailio");
        let mut kamailio = Kamailio {
            addr,
            child: Some(child),
            dir,
        };
        kamailio.wait_ready();
        kamailio
    }

    /// Blocks until Kamailio answers an OPTIONS ping with 200 (its `REQINIT` keepalive
    /// reply), or panics with its log after 20 s or when it exits.
    fn wait_ready(&mut self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let local = socket.local_addr().expect("probe address");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("Kamailio exited early ({status}):\n{}", self.log());
            }
            n += 1;
            let ping = format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready{n};rport\r\n\
                 From: <sip:probe@{local}>;tag=probe{n}\r\nTo: <sip:{addr}>\r\nCall-ID: ready-{n}@{local}\r\n\
                 CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                addr = self.addr
            );
            let _ = socket.send_to(ping.as_bytes(), self.addr);
            let mut buf = [0u8; 4096];
            if let Ok((len, _)) = socket.recv_from(&mut buf)
                && buf[..len].starts_with(b"SIP/2.0 200")
            {
                return;
            }
        }
        panic!(
            "Kamailio did not answer OPTIONS on {} within 20 s:\n{}",
            self.addr,
            self.log()
        );
    }

    /// Registers `contact` (e.g. a SIPp UAS) as the location of `user`, as a phone
    /// on the carrier's network would (a third-party REGISTER, so only without
    /// `WITH_AUTH`); panics unless Kamailio answers 200 within 10 s.
    pub fn register(&self, user: &str, contact: SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind REGISTER socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        let local = socket.local_addr().expect("local address");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            let register = format!(
                "REGISTER sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKreg{user};rport\r\n\
                 From: <sip:{user}@{addr}>;tag=reg\r\nTo: <sip:{user}@{addr}>\r\nCall-ID: reg-{user}@{local}\r\n\
                 CSeq: 1 REGISTER\r\nContact: <sip:{user}@{contact}>\r\nExpires: 600\r\n\
                 Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                addr = self.addr
            );
            let _ = socket.send_to(register.as_bytes(), self.addr);
            let mut buf = [0u8; 4096];
            if let Ok((len, _)) = socket.recv_from(&mut buf) {
                last = String::from_utf8_lossy(&buf[..len]).into_owned();
                if last.starts_with("SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("Kamailio did not register {user}: {last}\n{}", self.log());
    }

    /// Everything Kamailio logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    /// Sends `signal` to Kamailio's process group.
    fn signal_group(&self, signal: &str) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg("--")
                .arg(format!("-{}", child.id()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM lets the main process stop its children; SIGKILL the group if
        // it is still there after 5 s.
        self.signal_group("TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut exited = false;
        if let Some(child) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !exited {
            self.signal_group("KILL");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("Kamailio files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
