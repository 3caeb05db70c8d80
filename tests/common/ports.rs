//! The one port allocator of the tests: ports on 127.0.0.1 for peers that must be told
//! a port before they bind it (SIPp's `-p`/`-mp`, dnsmasq, redis-server, PostgreSQL,
//! a listener restarted on the same port).
//!
//! Binding port 0 and closing the socket ("free port") races: the kernel may hand the
//! same ephemeral port to the next socket of any process before the peer binds it. So
//! ports come from a range below the kernel's ephemeral range (never handed out for
//! port 0) and above the RTP ranges the tests configure, in blocks of [`BLOCK`] ports,
//! each reserved for the life of this process by an exclusive lock on a file under
//! the temporary directory. Concurrent test binaries (and nextest's process per test)
//! therefore never get the same block, and a block is reusable once its holder exits
//! (the kernel drops the lock with the process). A block is handed out only when every
//! port in it binds for UDP and TCP, so a leftover process elsewhere is skipped too.
//!
//! Sockets the test itself binds and keeps (a listener, a UDP peer) should keep using
//! port 0: only a port that someone else binds later needs this allocator.

#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports per reserved block (SIPp's media uses `-mp`, `-mp + 2`, and their RTCP).
pub const BLOCK: u16 = 8;
/// First port of the allocator's range.
const FIRST: u16 = 10_000;
/// One past the last port of the range (the kernel's ephemeral range starts at 32768
/// by default; the tests' RTP ranges are 40000-52999).
const END: u16 = 20_000;

/// Lock files of the blocks this process holds (held until it exits).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
/// Next block index to try, per process (starts at a per-process offset).
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// One port on 127.0.0.1 that nobody else in the test run will be given, free for
/// UDP and TCP.
pub fn port() -> u16 {
    block(1)
}

/// The first of `count` consecutive ports (at most [`BLOCK`]) on 127.0.0.1, reserved
/// for this process, each free for UDP and TCP.
pub fn block(count: u16) -> u16 {
    assert!(
        (1..=BLOCK).contains(&count),
        "ports::block: 1 to {BLOCK} ports"
    );
    check_below_ephemeral();
    let blocks = u32::from((END - FIRST) / BLOCK);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % blocks,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let dir = lock_dir();
    for _ in 0..blocks {
        let index = NEXT.fetch_add(1, Ordering::Relaxed) % blocks;
        let first = FIRST + u16::try_from(index).expect("block index") * BLOCK;
        let Ok(file) = File::create(dir.join(format!("{first}.lock"))) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another test process holds this block
        }
        if (first..first + BLOCK).all(bindable) {
            HELD.lock().expect("ports lock").push(file);
            return first;
        }
    }
    panic!(
        "ports: no free block of {BLOCK} ports in 127.0.0.1:{FIRST}-{END} \
         (are old test processes still running?)"
    );
}

/// Whether `port` binds on 127.0.0.1 for both UDP and TCP (the probes close at once;
/// nothing else takes a port of this range in between, see the module docs).
fn bindable(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The directory of the block lock files, shared by every test process of the user.
fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("callbridge-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock directory");
    dir
}

/// Panics when the kernel's ephemeral range overlaps ours (ports of this range could
/// then be taken by any socket bound to port 0).
fn check_below_ephemeral() {
    let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let low = range
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u32>().ok());
    if let Some(low) = low {
        assert!(
            low >= u32::from(END),
            "the kernel's ephemeral ports start at {low}, inside the tests' range \
             {FIRST}-{END}: raise net.ipv4.ip_local_port_range"
        );
    }
}
