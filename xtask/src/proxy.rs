//! A fault-injecting HTTP/1.1 proxy on loopback, in front of a Kinesis peer.
//!
//! It forwards each request on a connection of its own to the peer and can, as a
//! scenario asks and changes while it runs:
//! - cap the uplink: request bytes of every connection share one link of so many
//!   bytes per second (a narrow uplink);
//! - hold answers: the peer stores, and its answers wait until a moment (a brownout);
//! - reset connections: drop a connection before forwarding a request (nothing
//!   stored) or after (stored, answer lost);
//! - answer 500s: a burst of `InternalFailure` answers without forwarding.

use kpl_runtime::SplitMix64;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What the proxy does now; change it through [`Proxy::set`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults {
    /// Uplink bytes per second shared by every connection.
    pub(crate) uplink_bytes_per_second: Option<u64>,
    /// Answers are held until this moment.
    pub(crate) hold_until: Option<Instant>,
    /// Probability that a request's connection is reset (half before forwarding,
    /// half after).
    pub(crate) reset_rate: f64,
    /// Until this moment every request is answered with HTTP 500.
    pub(crate) errors_until: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    faults: Faults,
    /// When the capped uplink is free again.
    link_free_at: Option<Instant>,
    rng: SplitMix64,
}

/// Counters of what the proxy did.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) requests: AtomicU64,
    pub(crate) resets: AtomicU64,
    /// Resets after the request was forwarded (the peer may have stored it).
    pub(crate) resets_after_forwarding: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) held: AtomicU64,
    /// Request bytes (heads and bodies) forwarded to the peer.
    pub(crate) uplink_bytes: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
pub(crate) struct Proxy {
    pub(crate) endpoint: String,
    shared: Arc<Mutex<Shared>>,
    pub(crate) counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub(crate) fn start(upstream: &str, seed: u64) -> Result<Proxy> {
        let upstream = upstream
            .strip_prefix("http://")
            .context("the proxy forwards to http:// peers")?
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(Shared {
            rng: SplitMix64::new(seed),
            ..Shared::default()
        }));
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, st) = (shared.clone(), counts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (s, c, st, up) = (s.clone(), c.clone(), st.clone(), upstream.clone());
                        std::thread::spawn(move || {
                            let _ = serve(client, &up, &s, &c, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Proxy {
            endpoint,
            shared,
            counts,
            stop,
        })
    }

    /// Replaces what the proxy does from now on.
    pub(crate) fn set(&self, faults: Faults) {
        lock(&self.shared).faults = faults;
    }
}

/// Draws a uniform number in [0, 1).
fn draw(shared: &Mutex<Shared>) -> f64 {
    lock(shared).rng.unit()
}

/// One HTTP/1.1 message: its head (up to and with the blank line) and its body as
/// sent (chunked bodies kept encoded).
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
    close: bool,
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one message; `None` at a clean end of the connection.
fn read_message(r: &mut BufReader<TcpStream>, response: bool) -> Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a message head");
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            if head == b"\r\n" {
                head.clear();
                continue;
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let close = header(&text, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut body = Vec::new();
    if let Some(len) = header(&text, "content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if header(&text, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            body.extend_from_slice(&line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .context("bad chunk size")?;
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else if response && !text.starts_with("HTTP/1.1 204") && !text.starts_with("HTTP/1.1 1") {
        r.read_to_end(&mut body)?;
        return Ok(Some(Message {
            head,
            body,
            close: true,
        }));
    }
    Ok(Some(Message { head, body, close }))
}

/// Sends `bytes` over the capped uplink, if any, in slices that share it.
fn send_paced(to: &mut TcpStream, bytes: &[u8], shared: &Mutex<Shared>) -> Result<()> {
    for slice in bytes.chunks(16 * 1024) {
        let wait_until = {
            let mut s = lock(shared);
            match s.faults.uplink_bytes_per_second {
                Some(rate) => {
                    let now = Instant::now();
                    let start = s.link_free_at.map_or(now, |t| t.max(now));
                    let done =
                        start + Duration::from_secs_f64(slice.len() as f64 / rate.max(1) as f64);
                    s.link_free_at = Some(done);
                    Some(done)
                }
                None => None,
            }
        };
        if let Some(t) = wait_until {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        }
        to.write_all(slice)?;
    }
    Ok(())
}

fn serve(
    client: TcpStream,
    upstream: &str,
    shared: &Mutex<Shared>,
    counts: &Counts,
    stop: &AtomicBool,
) -> Result<()> {
    client.set_nonblocking(false)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut peer: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut request) = read_message(&mut reader, false)? else {
            return Ok(());
        };
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&request.head).into_owned();
        if header(&text, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            // Answered here; the peer gets the request without it.
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            request.head = text
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("expect:"))
                .collect::<Vec<_>>()
                .join("\r\n")
                .into_bytes();
        }
        let faults = lock(shared).faults.clone();
        let now = Instant::now();
        if faults.errors_until.is_some_and(|t| now < t) {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"__type":"InternalFailure","message":"injected by the fault proxy"}"#;
            write!(
                client,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        let reset = faults.reset_rate > 0.0 && draw(shared) < faults.reset_rate;
        let reset_before = reset && draw(shared) < 0.5;
        if reset_before {
            counts.resets.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        if peer.is_none() {
            let s = TcpStream::connect(upstream)?;
            s.set_nodelay(true)?;
            let r = BufReader::new(s.try_clone()?);
            peer = Some((s, r));
        }
        let (up, up_reader) = peer.as_mut().expect("connected");
        counts.uplink_bytes.fetch_add(
            (request.head.len() + request.body.len()) as u64,
            Ordering::Relaxed,
        );
        up.write_all(&request.head)?;
        send_paced(up, &request.body, shared)?;
        let Some(response) = read_message(up_reader, true)? else {
            bail!("the peer closed the connection");
        };
        if reset {
            counts.resets.fetch_add(1, Ordering::Relaxed);
            counts
                .resets_after_forwarding
                .fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        // A hold may start or be extended while we wait.
        let mut held = false;
        loop {
            let until = lock(shared).faults.hold_until;
            match until {
                Some(t) if Instant::now() < t => {
                    held = true;
                    std::thread::sleep((t - Instant::now()).min(Duration::from_millis(50)));
                }
                _ => break,
            }
        }
        if held {
            counts.held.fetch_add(1, Ordering::Relaxed);
        }
        client.write_all(&response.head)?;
        client.write_all(&response.body)?;
        if response.close || request.close {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}
