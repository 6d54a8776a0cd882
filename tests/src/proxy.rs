//! A loopback HTTP/1.1 proxy, for `kpl put` in front of a Kinesis peer or as the
//! proxy a client is told to use.
//!
//! Each client connection gets connections of its own to where its requests go:
//! - a request in origin form (`POST / HTTP/1.1`) goes to the upstream the proxy was
//!   started with (a reverse proxy in front of a peer);
//! - a request in absolute form (`POST http://host:port/ HTTP/1.1`) goes to the
//!   host it names (an HTTP proxy), without its `Proxy-Authorization`;
//! - `CONNECT host:port` opens a tunnel there (or where [`Faults::tunnel_to`] says).
//!
//! Messages are forwarded whole, re-framed with a `Content-Length`. What went
//! through is counted and recorded ([`Counts`]), and the proxy can, as a test asks
//! and changes while it runs ([`Proxy::set`]):
//! - cap the uplink: request bytes of every connection share one link of so many
//!   bytes per second (a narrow uplink);
//! - hold answers: the peer stores, and its answers wait until a moment (a brownout);
//! - reset connections: drop a connection before forwarding a request (nothing
//!   stored) or after (stored, answer lost);
//! - answer 500s: a burst of `InternalFailure` answers without forwarding.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kpl_codec::SplitMix64;

use crate::Error;
use crate::http::{header, read_message};

/// What the proxy does now; change it through [`Proxy::set`].
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Uplink bytes per second shared by every connection.
    pub uplink_bytes_per_second: Option<u64>,
    /// Answers are held until this moment.
    pub hold_until: Option<Instant>,
    /// Probability that a request's connection is reset (half before forwarding,
    /// half after).
    pub reset_rate: f64,
    /// Until this moment every request is answered with HTTP 500.
    pub errors_until: Option<Instant>,
    /// Where CONNECT tunnels go instead of their target (`host:port`).
    pub tunnel_to: Option<String>,
}

#[derive(Default)]
struct Shared {
    faults: Faults,
    /// When the capped uplink is free again.
    link_free_at: Option<Instant>,
    rng: SplitMix64,
}

/// Counters and records of what went through the proxy.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests read from clients (CONNECTs included).
    pub requests: AtomicU64,
    /// Connections reset.
    pub resets: AtomicU64,
    /// Resets after the request was forwarded (the peer may have stored it).
    pub resets_after_forwarding: AtomicU64,
    /// Requests answered 500 by the proxy.
    pub errors: AtomicU64,
    /// Answers held.
    pub held: AtomicU64,
    /// Request bytes (heads and bodies) forwarded.
    pub uplink_bytes: AtomicU64,
    /// CONNECT tunnels opened.
    pub tunnels: AtomicU64,
    /// The request line of every request, as the client sent it.
    pub request_lines: Mutex<Vec<String>>,
    /// Every `Proxy-Authorization` value sent.
    pub proxy_authorizations: Mutex<Vec<String>>,
}

impl Counts {
    /// A counter's value now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The request lines so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.request_lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `Proxy-Authorization` values so far.
    pub fn proxy_authorizations(&self) -> Vec<String> {
        self.proxy_authorizations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// What went through.
    pub counts: Arc<Counts>,
    shared: Arc<Mutex<Shared>>,
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
    /// Starts a proxy on a free loopback port; requests in origin form go to
    /// `upstream` (`http://host:port`). `seed` drives the resets.
    pub fn start(upstream: &str, seed: u64) -> Result<Proxy, Error> {
        let upstream = upstream
            .strip_prefix("http://")
            .ok_or_else(|| Error::new("the proxy forwards to http:// peers"))?
            .trim_end_matches('/')
            .to_owned();
        let io = |e| Error::caused("cannot listen on loopback", e);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let endpoint = format!("http://{}", listener.local_addr().map_err(io)?);
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

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default()
    }

    /// Replaces what the proxy does from now on.
    pub fn set(&self, faults: Faults) {
        lock(&self.shared).faults = faults;
    }

    /// What the proxy does now.
    pub fn faults(&self) -> Faults {
        lock(&self.shared).faults.clone()
    }
}

/// Draws a uniform number in [0, 1).
fn draw(shared: &Mutex<Shared>) -> f64 {
    lock(shared).rng.unit()
}

/// Header lines (or a status line and headers) without the framing, connection,
/// proxy and expectation headers, each ended by CRLF.
fn without_hop_headers<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for line in lines {
        let lower = line.to_ascii_lowercase();
        let hop = [
            "content-length:",
            "transfer-encoding:",
            "connection:",
            "proxy-authorization:",
            "proxy-connection:",
            "expect:",
        ]
        .iter()
        .any(|h| lower.starts_with(h));
        if !line.is_empty() && !hop {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// `first` and the headers of `head` after its first line, framed for a body of
/// `length` bytes.
fn reframed_head(first: &str, head: &str, length: usize) -> String {
    let mut out = format!("{first}\r\n");
    out.push_str(&without_hop_headers(head.lines().skip(1)));
    out.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    out
}

/// Sends `bytes` over the capped uplink, if any, in slices that share it.
fn send_paced(to: &mut TcpStream, bytes: &[u8], shared: &Mutex<Shared>) -> std::io::Result<()> {
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

/// Copies a CONNECT tunnel both ways until either side ends.
fn tunnel(mut reader: BufReader<TcpStream>, to: &str) -> std::io::Result<()> {
    let upstream = TcpStream::connect(to)?;
    let mut client = reader.get_ref().try_clone()?;
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // Whatever the reader buffered is the client's first tunnel bytes.
    let mut up = upstream.try_clone()?;
    up.write_all(reader.buffer())?;
    let mut upstream_reader = upstream;
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_reader, &mut client);
        let _ = client.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(reader.get_mut(), &mut up);
    let _ = up.shutdown(Shutdown::Write);
    let _ = down.join();
    Ok(())
}

fn serve(
    client: TcpStream,
    upstream: &str,
    shared: &Mutex<Shared>,
    counts: &Counts,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    // The connection to where the last request went: (authority, stream, reader).
    let mut peer: Option<(String, TcpStream, BufReader<TcpStream>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some((head, body)) = read_message(&mut reader, false)? else {
            return Ok(());
        };
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        lock_vec(&counts.request_lines).push(request_line.clone());
        if let Some(auth) = header(&head, "proxy-authorization") {
            lock_vec(&counts.proxy_authorizations).push(auth.to_owned());
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if method == "CONNECT" {
            counts.tunnels.fetch_add(1, Ordering::Relaxed);
            let to = lock(shared)
                .faults
                .tunnel_to
                .clone()
                .unwrap_or_else(|| target.to_owned());
            return tunnel(reader, &to);
        }
        if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            // Answered here; the peer gets the request without it.
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
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
        // Absolute form (http://host:port/path) goes where it says, in origin form.
        let (authority, first) = match target.strip_prefix("http://") {
            Some(rest) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let path = if path.is_empty() { "/" } else { path };
                (authority.to_owned(), format!("{method} {path} HTTP/1.1"))
            }
            None => (upstream.to_owned(), request_line.clone()),
        };
        if peer.as_ref().is_none_or(|(a, _, _)| *a != authority) {
            let s = TcpStream::connect(&authority)?;
            s.set_nodelay(true)?;
            let r = BufReader::new(s.try_clone()?);
            peer = Some((authority, s, r));
        }
        let Some((_, up, up_reader)) = peer.as_mut() else {
            return Ok(());
        };
        let forwarded = reframed_head(&first, &head, body.len());
        counts
            .uplink_bytes
            .fetch_add((forwarded.len() + body.len()) as u64, Ordering::Relaxed);
        up.write_all(forwarded.as_bytes())?;
        send_paced(up, &body, shared)?;
        let Some((answer_head, answer)) = read_message(up_reader, true)? else {
            return Err(std::io::Error::other("the peer closed the connection"));
        };
        let peer_closes = header(&answer_head, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (header(&answer_head, "content-length").is_none()
                && header(&answer_head, "transfer-encoding").is_none());
        if peer_closes {
            peer = None;
        }
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
        let status = answer_head.lines().next().unwrap_or_default();
        client.write_all(reframed_head(status, &answer_head, answer.len()).as_bytes())?;
        client.write_all(&answer)?;
        if header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}

fn lock_vec(m: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends one request (`head` as read, its first line replaced by `first`, and
/// `body`) to `authority` on a connection of its own, and returns the answer
/// re-framed with a `Content-Length` (so the caller's connection can stay open).
pub fn forward_once(
    first: &str,
    head: &str,
    body: &[u8],
    authority: &str,
) -> std::io::Result<Vec<u8>> {
    let mut upstream = TcpStream::connect(authority)?;
    let request = reframed_head(first, head, body.len()).replacen(
        "\r\n\r\n",
        "\r\nConnection: close\r\n\r\n",
        1,
    );
    upstream.write_all(request.as_bytes())?;
    upstream.write_all(body)?;
    let (answer_head, answer) = read_message(&mut BufReader::new(upstream), true)?
        .ok_or_else(|| std::io::Error::other("no answer"))?;
    let status = answer_head.lines().next().unwrap_or_default();
    let mut out = reframed_head(status, &answer_head, answer.len()).into_bytes();
    out.extend_from_slice(&answer);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Loopback, Response};
    use std::io::Read;

    /// An upstream that answers every request with its request line.
    fn echo() -> String {
        let port =
            Loopback::new(|r| Response::new("200 OK", "text/plain", r.request_line())).start();
        format!("http://127.0.0.1:{port}")
    }

    fn ask(proxy: &Proxy, request: &str) -> (String, Vec<u8>) {
        let mut conn = TcpStream::connect(proxy.endpoint.trim_start_matches("http://")).unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        read_message(&mut BufReader::new(conn), true)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn requests_go_upstream_or_where_they_say_and_are_recorded() {
        let upstream = echo();
        let other = echo();
        let proxy = Proxy::start(&upstream, 1).unwrap();
        let (_, body) = ask(
            &proxy,
            "POST /a HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        );
        assert_eq!(body, b"POST /a HTTP/1.1");
        let absolute = format!(
            "POST {other}/b HTTP/1.1\r\nProxy-Authorization: Basic eA==\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (_, body) = ask(&proxy, &absolute);
        assert_eq!(body, b"POST /b HTTP/1.1", "origin form, to the host named");
        assert_eq!(proxy.counts.request_lines().len(), 2);
        assert_eq!(proxy.counts.proxy_authorizations(), ["Basic eA=="]);
    }

    #[test]
    fn a_burst_of_errors_is_answered_by_the_proxy() {
        let proxy = Proxy::start(&echo(), 1).unwrap();
        proxy.set(Faults {
            errors_until: Some(Instant::now() + Duration::from_secs(60)),
            ..Faults::default()
        });
        let (head, body) = ask(&proxy, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("InternalFailure"));
        assert_eq!(Counts::get(&proxy.counts.errors), 1);
    }

    #[test]
    fn connect_opens_a_tunnel() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = target.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = target.accept().unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        });
        let proxy = Proxy::start(&echo(), 1).unwrap();
        let mut conn = TcpStream::connect(proxy.endpoint.trim_start_matches("http://")).unwrap();
        write!(conn, "CONNECT {addr} HTTP/1.1\r\n\r\nping").unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"HTTP/1.1 200 Connection established\r\n\r\nping");
        assert_eq!(Counts::get(&proxy.counts.tunnels), 1);
    }
}
