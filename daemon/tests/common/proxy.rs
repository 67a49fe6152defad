//! A TCP forwarding proxy of our own between the daemon and a server, that
//! can stop passing the server's bytes on — a server that froze, a network
//! that stalls — while every connection stays open: the fault a silent
//! storage is, which no real server produces on demand.
//!
//! Client→server bytes always flow. Server→client bytes flow unless the
//! proxy is paused: [`Proxy::pause`] stops them at once, on every
//! connection (new ones too: a reconnect meets the same silence);
//! [`Proxy::pause_after`] lets a number of bytes more through first, so
//! that a reply can be cut off midway. A paused connection holds what it
//! read and reads no more from the server (whose sends then back up, as on
//! a stalled network); [`Proxy::resume`] passes everything on, in order.
//! A side closing closes the other.

use parking_lot::{Condvar, Mutex};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

#[derive(Default)]
struct Gate {
    paused: bool,
    /// Server→client bytes still to pass before pausing (None: no limit).
    budget: Option<usize>,
    /// Server→client bytes passed on, in all.
    passed: u64,
    /// Server→client bytes read and held while paused.
    held: usize,
}

struct Shared {
    gate: Mutex<Gate>,
    cond: Condvar,
}

pub struct Proxy {
    pub port: u16,
    sh: Arc<Shared>,
}

impl Proxy {
    /// A proxy on a free loopback port to `target` (`host:port`).
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind");
        let port = listener.local_addr().unwrap().port();
        let sh = Arc::new(Shared {
            gate: Mutex::new(Gate::default()),
            cond: Condvar::new(),
        });
        let (target, s) = (target.to_string(), sh.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue; // the client sees its connection closed
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || upstream(c2, s2));
                let s = s.clone();
                thread::spawn(move || downstream(server, client, s));
            }
        });
        Proxy { port, sh }
    }

    /// Stops passing the server's bytes on, now.
    pub fn pause(&self) {
        self.sh.gate.lock().paused = true;
    }

    /// Passes `n` more of the server's bytes on, then pauses.
    pub fn pause_after(&self, n: usize) {
        self.sh.gate.lock().budget = Some(n);
    }

    /// Passes everything on again (what was held first).
    pub fn resume(&self) {
        let mut g = self.sh.gate.lock();
        g.paused = false;
        g.budget = None;
        self.sh.cond.notify_all();
    }

    /// Whether the proxy is paused, how many server bytes it holds, and how
    /// many it passed on in all.
    pub fn state(&self) -> (bool, usize, u64) {
        let g = self.sh.gate.lock();
        (g.paused, g.held, g.passed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.resume();
    }
}

/// Client→server, as is.
fn upstream(mut client: TcpStream, mut server: TcpStream) {
    let _ = std::io::copy(&mut client, &mut server);
    let _ = server.shutdown(Shutdown::Write);
    let _ = client.shutdown(Shutdown::Read);
}

/// Server→client, through the gate.
fn downstream(mut server: TcpStream, mut client: TcpStream, sh: Arc<Shared>) {
    let mut buf = vec![0u8; 64 << 10];
    'conn: loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut off = 0;
        while off < n {
            // How much of the rest may pass now (waiting while paused).
            let k = {
                let mut g = sh.gate.lock();
                g.held += n - off;
                while g.paused {
                    sh.cond.wait(&mut g);
                }
                let k = match g.budget {
                    Some(b) => (n - off).min(b),
                    None => n - off,
                };
                if let Some(b) = g.budget.as_mut() {
                    *b -= k;
                    if *b == 0 {
                        g.budget = None;
                        g.paused = true;
                    }
                }
                g.held -= n - off;
                g.passed += k as u64;
                k
            };
            if k > 0 && client.write_all(&buf[off..off + k]).is_err() {
                break 'conn;
            }
            off += k;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
    let _ = server.shutdown(Shutdown::Read);
}
