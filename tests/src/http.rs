//! Plain HTTP/1.1 for tests, on loopback: reading a message, and the canned
//! servers tests put in front of an HTTP client (an answer made from each
//! request, over TCP or over a stream the test wraps it in, such as TLS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// The content type of the awsJson 1.1 protocol (Kinesis).
pub const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// Reads one HTTP/1.1 message: its head (up to and with the blank line, as text)
/// and its body, de-chunked (by Content-Length, chunked, or, when `to_end`, to the
/// end of the connection). `None` at a clean end before a message.
pub fn read_message(
    r: &mut impl BufRead,
    to_end: bool,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        if line == "\r\n" && head.is_empty() {
            continue;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    if let Some(n) = header(&head, "content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            chunk.truncate(n);
            body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    } else if to_end {
        r.read_to_end(&mut body)?;
    }
    Ok(Some((head, body)))
}

/// The value of header `name` in a message head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A request as a loopback server read it.
#[derive(Clone, Debug)]
pub struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    /// Its head, from the request line to the blank line.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// Its request line (`POST / HTTP/1.1`).
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }

    /// The awsJson operation asked for: `ListShards` of
    /// `X-Amz-Target: Kinesis_20131202.ListShards` (empty without the header).
    pub fn operation(&self) -> &str {
        self.header("x-amz-target")
            .map_or("", |t| t.rsplit('.').next().unwrap_or(t))
    }

    /// Its body, de-chunked.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// What a loopback server sends back for a request: an answer, or the
/// connection closed.
#[derive(Clone, Debug)]
pub struct Response {
    /// `None`: close the connection unanswered.
    bytes: Option<Vec<u8>>,
}

impl Response {
    /// `status` (`200 OK`) with a body of `content_type`.
    pub fn new(status: &str, content_type: &str, body: impl AsRef<[u8]>) -> Self {
        let body = body.as_ref();
        let mut bytes = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Self { bytes: Some(bytes) }
    }

    /// `200 OK` with an awsJson body.
    pub fn amz_json(body: impl AsRef<[u8]>) -> Self {
        Self::new("200 OK", AMZ_JSON, body)
    }

    /// A whole answer, head and body, sent as it is (one another server gave).
    pub fn raw(bytes: Vec<u8>) -> Self {
        Self { bytes: Some(bytes) }
    }

    /// No answer: the connection is closed.
    pub fn hang_up() -> Self {
        Self { bytes: None }
    }
}

/// Answers no Kinesis gives, each about a megabyte long, as
/// `(status, content type, body)`: HTML and text error pages, awsJson errors
/// whose message is a megabyte (a 500 and a 400), a 200 that is not JSON, and a
/// 404 page. What a client makes of them must stay short.
pub fn oversized_answers() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let megabyte = |fill: &str| fill.repeat((1 << 20) / fill.len()).into_bytes();
    let json_error = |kind: &str, fill: &str| {
        format!(
            "{{\"__type\":\"{kind}\",\"message\":\"{}\"}}",
            fill.repeat(1 << 20)
        )
        .into_bytes()
    };
    vec![
        (
            "500 Internal Server Error",
            "text/html",
            megabyte("<p>oops</p>"),
        ),
        (
            "500 Internal Server Error",
            AMZ_JSON,
            json_error("InternalFailure", "m"),
        ),
        ("400 Bad Request", "text/plain", megabyte("bad request ")),
        (
            "400 Bad Request",
            AMZ_JSON,
            json_error("ValidationException", "v"),
        ),
        ("200 OK", AMZ_JSON, megabyte("not json ")),
        ("404 Not Found", "text/html", megabyte("<html>nope</html>")),
    ]
}

/// A loopback HTTP/1.1 server that answers each request with what a function of
/// the test makes of it; connections are kept alive, each served by a thread of
/// its own, and it runs until the process ends.
///
/// ```no_run
/// use kpl_tests::http::{Loopback, Response};
/// let port = Loopback::new(|_| Response::new("500 Internal Server Error", "text/plain", "no")).start();
/// ```
pub struct Loopback {
    answer: Arc<dyn Fn(&Request) -> Response + Send + Sync>,
    max_connections: usize,
}

impl Loopback {
    /// A server answering every request with `answer(request)`.
    pub fn new(answer: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        Self {
            answer: Arc::new(answer),
            max_connections: usize::MAX,
        }
    }

    /// Connections after the first `n` are closed unanswered (a client that opens
    /// one after another cannot start a thread for each).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Starts it on a free loopback port, over plain TCP; returns the port.
    pub fn start(self) -> u16 {
        self.start_with(Some)
    }

    /// Starts it on a free loopback port, each connection first given to `wrap`
    /// (a TLS server session, say; `None` drops it); returns the port.
    pub fn start_with<S>(self, wrap: impl Fn(TcpStream) -> Option<S> + Send + 'static) -> u16
    where
        S: Read + Write + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot listen on loopback: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no address: {e}"))
            .port();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { continue };
                if n >= self.max_connections {
                    continue;
                }
                let Some(stream) = wrap(conn) else { continue };
                let answer = self.answer.clone();
                std::thread::spawn(move || serve(stream, &*answer));
            }
        });
        port
    }
}

/// Answers the requests of one connection until it ends or fails.
fn serve(stream: impl Read + Write, answer: &(dyn Fn(&Request) -> Response + Send + Sync)) {
    let mut reader = BufReader::new(stream);
    while let Ok(Some((head, body))) = read_message(&mut reader, false) {
        let Some(bytes) = answer(&Request { head, body }).bytes else {
            return;
        };
        let conn = reader.get_mut();
        if conn.write_all(&bytes).is_err() || conn.flush().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], to_end: bool) -> Option<(String, Vec<u8>)> {
        read_message(&mut BufReader::new(bytes), to_end).unwrap()
    }

    #[test]
    fn a_message_is_read_by_its_length_its_chunks_or_to_the_end() {
        let (head, body) =
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", true).unwrap();
        assert_eq!(
            (head.lines().next(), &body[..]),
            (Some("HTTP/1.1 200 OK"), &b"abc"[..])
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(read(chunked, false).unwrap().1, b"abcde");
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\n\r\nto the end", true).unwrap().1,
            b"to the end"
        );
        assert_eq!(read(b"POST / HTTP/1.1\r\n\r\n", false).unwrap().1, b"");
        assert!(read(b"", false).is_none());
        assert_eq!(
            header("POST / HTTP/1.1\r\nX-A: 1\r\nx-b:  two \r\n\r\n", "X-B"),
            Some("two")
        );
    }

    /// Asks `port` each of `bodies` on one connection; the answers' bodies.
    fn ask(port: u16, target: &str, bodies: &[&str]) -> Vec<Vec<u8>> {
        let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut reader = BufReader::new(conn);
        bodies
            .iter()
            .map(|body| {
                write!(
                    reader.get_mut(),
                    "POST / HTTP/1.1\r\nX-Amz-Target: {target}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                read_message(&mut reader, false).unwrap().unwrap().1
            })
            .collect()
    }

    #[test]
    fn a_loopback_server_answers_each_request_on_a_kept_connection() {
        let port = Loopback::new(|r| {
            let answer = format!("{} {}", r.operation(), String::from_utf8_lossy(r.body()));
            Response::amz_json(answer)
        })
        .start();
        assert_eq!(
            ask(port, "Kinesis_20131202.ListShards", &["a", "bc"]),
            [&b"ListShards a"[..], b"ListShards bc"]
        );
        assert_eq!(ask(port, "PutRecords", &[""]), [&b"PutRecords "[..]]);
    }

    #[test]
    fn a_server_can_hang_up_instead_of_answering() {
        let port = Loopback::new(|r| match r.body() {
            b"answer" => Response::amz_json("{}"),
            _ => Response::hang_up(),
        })
        .start();
        assert_eq!(ask(port, "X", &["answer"]), [b"{}"]);
        assert_closed_unanswered(port);
    }

    #[test]
    fn connections_beyond_the_limit_are_closed_unanswered() {
        let port = Loopback::new(|_| Response::new("204 No Content", "text/plain", ""))
            .max_connections(1)
            .start();
        assert_eq!(ask(port, "X", &["1"]), [b""]);
        assert_closed_unanswered(port);
    }

    /// Sends `port` a request on a new connection, which is closed unanswered.
    fn assert_closed_unanswered(port: u16) {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nbye")
            .unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
}
