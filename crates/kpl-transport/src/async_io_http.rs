//! An HTTP client for the AWS SDK on async-io: hyper 1 HTTP/1.1 connections over
//! async-io TCP, TLS by rustls (ring), a bounded pool of idle connections, connect
//! timeouts. It needs no runtime of its own: every future it makes is driven by
//! whoever polls the request (smol, async-std, `futures::executor`, tokio too).
//!
//! A connection is driven by the request using it: the response's body is read to
//! its end before the response is handed to the SDK (Kinesis answers are small),
//! so nothing has to be spawned. An idle connection is checked before reuse (a
//! connection the server closed while it sat in the pool is dropped, never
//! written to).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_net::TcpStream;
use aws_smithy_async::rt::sleep::{AsyncSleep, Sleep};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use http_body_util::BodyExt;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tracing::debug;

use crate::BuildError;
use crate::proxy::{ProxySetting, Trust, basic_credentials, bypassed, env_first};

/// Idle connections older than this are closed rather than reused (servers and load
/// balancers close idle connections after a minute or so).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `AsyncSleep` of async-io's timers, for the SDK's timeouts.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AsyncIoSleep;

impl AsyncSleep for AsyncIoSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::new(async move {
            async_io::Timer::after(duration).await;
        })
    }
}

/// The HTTP client: connection settings and the pool shared by every connector the
/// SDK asks for.
#[derive(Clone)]
pub(crate) struct AsyncIoHttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    tls: Arc<rustls::ClientConfig>,
    max_idle: usize,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    proxies: Proxies,
}

/// A proxy to go through: where, and the `Proxy-Authorization` value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    host: String,
    port: u16,
    authorization: Option<String>,
}

/// The proxies of each scheme, and the hosts reached directly.
#[derive(Clone, Debug, Default)]
struct Proxies {
    http: Option<Route>,
    https: Option<Route>,
    no_proxy: Option<String>,
}

impl Proxies {
    fn from_setting(setting: &ProxySetting) -> Result<Self, String> {
        match setting {
            ProxySetting::Disabled => Ok(Self::default()),
            ProxySetting::Fixed(proxy) => {
                let route = route(proxy.url(), proxy.auth())?;
                Ok(Self {
                    http: Some(route.clone()),
                    https: Some(route),
                    no_proxy: proxy.no_proxy_rules().map(str::to_owned),
                })
            }
            ProxySetting::FromEnvironment => {
                let read = |names: &[&str]| -> Result<Option<Route>, String> {
                    env_first(names).map(|url| route(&url, None)).transpose()
                };
                Ok(Self {
                    https: read(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])?,
                    http: read(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])?,
                    no_proxy: env_first(&["NO_PROXY", "no_proxy"]),
                })
            }
        }
    }

    fn for_origin(&self, origin: &Origin) -> Option<&Route> {
        if self
            .no_proxy
            .as_deref()
            .is_some_and(|rules| bypassed(&origin.host, rules))
        {
            return None;
        }
        if origin.https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }
    }
}

/// A proxy URL (`http://[user:password@]host[:port]`) as a route.
fn route(url: &str, auth: Option<(&str, &str)>) -> Result<Route, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "proxy {url:?}: only http:// proxies are supported, not {scheme}://"
            ));
        }
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("proxy {url:?}: the port is not a number"))?,
        ),
        _ => (hostport, 80),
    };
    if host.is_empty() {
        return Err(format!("proxy {url:?}: no host"));
    }
    let authorization = auth
        .map(|(u, p)| basic_credentials(u, p))
        .or_else(|| {
            userinfo.map(|u| {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                basic_credentials(user, password)
            })
        })
        .map(|c| format!("Basic {c}"));
    Ok(Route {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        authorization,
    })
}

impl fmt::Debug for AsyncIoHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncIoHttpClient")
            .field("max_idle", &self.inner.max_idle)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

struct Conn {
    sender: SendRequest<SdkBody>,
    connection: Connection<Io, SdkBody>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl AsyncIoHttpClient {
    /// A client keeping up to `max_idle` idle connections per origin, going through
    /// the proxies `proxy` says, trusting the system's root certificates and those
    /// of `trust` (or, if `trust` says so, any certificate).
    pub(crate) fn new(
        max_idle: usize,
        proxy: &ProxySetting,
        trust: &Trust,
    ) -> Result<Self, BuildError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::http_client("TLS settings", e))?;
        let mut tls = if trust.verify {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A certificate the system has that rustls cannot read is skipped, as
                // the SDK's own client does.
                let _ = roots.add(cert);
            }
            for pem in &trust.extra_pem {
                let mut any = false;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| {
                        BuildError::http_client("a CA certificate (not valid PEM)", e)
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| BuildError::http_client("a CA certificate (refused)", e))?;
                    any = true;
                }
                if !any {
                    return Err(BuildError::http_client_setting(
                        "a CA file holds no PEM certificate",
                    ));
                }
            }
            if roots.is_empty() {
                debug!(errors = ?found.errors, "no root certificate loaded");
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            inner: Arc::new(Inner {
                tls: Arc::new(tls),
                max_idle: max_idle.max(1),
                idle: Mutex::new(HashMap::new()),
                proxies: Proxies::from_setting(proxy).map_err(BuildError::http_client_setting)?,
            }),
        })
    }

    /// Idle connections in the pool (all origins).
    #[cfg(test)]
    pub(crate) fn idle_connections(&self) -> usize {
        self.inner
            .idle
            .lock()
            .map_or(0, |m| m.values().map(Vec::len).sum())
    }
}

impl HttpClient for AsyncIoHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector {
            inner: self.inner.clone(),
            connect_timeout: settings.connect_timeout(),
            read_timeout: settings.read_timeout(),
        })
    }
}

#[derive(Clone)]
struct Connector {
    inner: Arc<Inner>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move { this.send(request).await })
    }
}

impl Connector {
    async fn send(self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let mut request = request
            .try_into_http1x()
            .map_err(|e| ConnectorError::user(e.into()))?;
        let origin = origin(request.uri()).map_err(|e| ConnectorError::user(e.into()))?;
        // HTTP/1.1 wants the path in the request line and the host in a header.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<http::Uri>()
            .map_err(|e| ConnectorError::user(e.into()))?;
        if !request.headers().contains_key(http::header::HOST) {
            let default_port = if origin.https { 443 } else { 80 };
            let host = if origin.port == default_port {
                origin.host.clone()
            } else {
                format!("{}:{}", origin.host, origin.port)
            };
            let value =
                http::HeaderValue::from_str(&host).map_err(|e| ConnectorError::user(e.into()))?;
            request.headers_mut().insert(http::header::HOST, value);
        }
        let via = self.inner.proxies.for_origin(&origin).cloned();
        match (&via, origin.https) {
            // Through a proxy, plain HTTP keeps the absolute form and says who we are.
            (Some(route), false) => {
                if let Some(auth) = &route.authorization {
                    let value = http::HeaderValue::from_str(auth)
                        .map_err(|e| ConnectorError::user(e.into()))?;
                    request
                        .headers_mut()
                        .insert(http::header::PROXY_AUTHORIZATION, value);
                }
            }
            _ => *request.uri_mut() = path,
        }

        let mut conn = match self.take_idle(&origin) {
            Some(conn) => conn,
            None => self.connect(&origin, via.as_ref()).await?,
        };
        let exchange = async {
            let response = drive(&mut conn.connection, conn.sender.send_request(request))
                .await
                .map_err(hyper_error)?;
            let (parts, body) = response.into_parts();
            let body = drive(&mut conn.connection, body.collect())
                .await
                .map_err(hyper_error)?
                .to_bytes();
            Ok::<_, ConnectorError>(http::Response::from_parts(parts, body))
        };
        let response = match self.read_timeout {
            Some(limit) => with_timeout(limit, exchange)
                .await
                .unwrap_or_else(|| Err(ConnectorError::timeout("read timed out".into())))?,
            None => exchange.await?,
        };
        let reusable = !response
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if reusable {
            self.put_idle(origin, conn);
        }
        let response = response.map(SdkBody::from);
        HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
    }

    /// An idle connection to `origin` still open, if there is one.
    fn take_idle(&self, origin: &Origin) -> Option<Conn> {
        let mut idle = self.inner.idle.lock().ok()?;
        let list = idle.get_mut(origin)?;
        while let Some(mut entry) = list.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && still_open(&mut entry.conn) {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put_idle(&self, origin: Origin, mut conn: Conn) {
        if !still_open(&mut conn) {
            return;
        }
        if let Ok(mut idle) = self.inner.idle.lock() {
            let list = idle.entry(origin).or_default();
            if list.len() < self.inner.max_idle {
                list.push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        }
    }

    async fn connect(&self, origin: &Origin, via: Option<&Route>) -> Result<Conn, ConnectorError> {
        let connect = async {
            let (host, port) = match via {
                Some(route) => (route.host.as_str(), route.port),
                None => (origin.host.as_str(), origin.port),
            };
            let addrs = async_net::resolve((host, port)).await.map_err(|e| {
                ConnectorError::io(
                    io::Error::new(e.kind(), format!("could not resolve {host}: {e}")).into(),
                )
            })?;
            let mut tcp = connect_any(&addrs).await.map_err(|e| {
                let what = if via.is_some() { "the proxy " } else { "" };
                ConnectorError::io(
                    io::Error::new(
                        e.kind(),
                        format!("could not connect to {what}{host}:{port}: {e}"),
                    )
                    .into(),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            if let (Some(route), true) = (via, origin.https) {
                tunnel(&mut tcp, origin, route).await?;
            }
            let io = if origin.https {
                let name = ServerName::try_from(origin.host.clone())
                    .map_err(|e| ConnectorError::user(e.into()))?;
                let tls = TlsConnector::from(self.inner.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        ConnectorError::io(
                            io::Error::new(e.kind(), format!("TLS handshake failed: {e}")).into(),
                        )
                    })?;
                Io::Tls(Box::new(tls))
            } else {
                Io::Plain(tcp)
            };
            let (sender, connection) = http1::handshake(io).await.map_err(|e| {
                ConnectorError::io(io::Error::other(format!("HTTP connect failed: {e}")).into())
            })?;
            debug!(host = %origin.host, port = origin.port, tls = origin.https, "connected");
            Ok(Conn { sender, connection })
        };
        match self.connect_timeout {
            Some(limit) => with_timeout(limit, connect).await.unwrap_or_else(|| {
                Err(ConnectorError::timeout(
                    format!(
                        "could not connect to {}:{} within {limit:?}",
                        origin.host, origin.port
                    )
                    .into(),
                ))
            }),
            None => connect.await,
        }
    }
}

/// Opens a `CONNECT` tunnel to `origin` through the proxy `tcp` is connected to.
async fn tunnel(tcp: &mut TcpStream, origin: &Origin, route: &Route) -> Result<(), ConnectorError> {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    let target = if origin.host.contains(':') {
        format!("[{}]:{}", origin.host, origin.port)
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &route.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let failed = |e: io::Error| {
        ConnectorError::io(
            io::Error::new(
                e.kind(),
                format!(
                    "could not connect through the proxy {}:{}: {e}",
                    route.host, route.port
                ),
            )
            .into(),
        )
    };
    tcp.write_all(head.as_bytes()).await.map_err(failed)?;
    // The proxy's answer, up to its blank line (nothing of the tunnel follows
    // before we speak).
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.map_err(failed)? == 0 || answer.len() > 16 * 1024 {
            return Err(failed(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection before answering CONNECT",
            )));
        }
        answer.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(failed(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("the proxy refused CONNECT {target}: {status_line}"),
        )));
    }
    Ok(())
}

/// The scheme, host and port of a request's URI.
fn origin(uri: &http::Uri) -> Result<Origin, String> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("unsupported URL scheme {other:?} in {uri}")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {uri}"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Origin { https, host, port })
}

async fn connect_any(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect(*addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn hyper_error(e: hyper::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else {
        // The request may have been written, and stored: a passing fault of the
        // connection, as the SDK's own client calls it (never an I/O error that
        // could read as "never connected").
        ConnectorError::other(
            e.into(),
            Some(aws_smithy_runtime_api::client::retries::ErrorKind::TransientError),
        )
    }
}

/// Whether a pooled connection is still usable: polling it once reads a close the
/// server sent while it was idle.
fn still_open(conn: &mut Conn) -> bool {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    if Pin::new(&mut conn.connection).poll(&mut cx).is_ready() {
        return false;
    }
    !conn.sender.is_closed() && matches!(conn.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
}

/// Polls `work` to its end while driving the connection it runs on. A connection
/// that ends first (closed or failed) fails the work with its error.
async fn drive<T>(
    connection: &mut Connection<Io, SdkBody>,
    work: impl Future<Output = Result<T, hyper::Error>>,
) -> Result<T, hyper::Error> {
    let mut work = std::pin::pin!(work);
    let mut ended = false;
    futures::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if !ended {
            match Pin::new(&mut *connection).poll(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // Closed cleanly: the work's own future reports what is missing.
                Poll::Ready(Ok(())) => ended = true,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// `future`'s output, or `None` after `limit`.
async fn with_timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let future = std::pin::pin!(future);
    let timer = async_io::Timer::after(limit);
    match futures::future::select(future, timer).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    }
}

/// Accepts any certificate: `VerifyCertificate = false`, for test endpoints only
/// (the transport warns when it is built with it). Signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Read into initialised memory, then copy (no unsafe code for the cursor's
        // uninitialised part).
        let mut chunk = [0u8; 16 * 1024];
        let want = buf.remaining().min(chunk.len());
        let n = match self.get_mut() {
            Io::Plain(s) => std::task::ready!(Pin::new(s).poll_read(cx, &mut chunk[..want]))?,
            Io::Tls(s) => {
                std::task::ready!(Pin::new(s.as_mut()).poll_read(cx, &mut chunk[..want]))?
            }
        };
        buf.put_slice(&chunk[..n]);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_close(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A loopback HTTP/1.1 server answering `ok` to every request; after each
    /// answer it closes the connection when `close_after_answer` (without saying
    /// so: the client finds out while the connection idles). Counts connections.
    fn server(close_after_answer: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        writer
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .unwrap();
                        if close_after_answer {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn connector(client: &AsyncIoHttpClient) -> Connector {
        Connector {
            inner: client.inner.clone(),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(5)),
        }
    }

    fn get(port: u16) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from("{}"));
        request
            .set_uri(format!("http://127.0.0.1:{port}/path?q=1"))
            .unwrap();
        request
    }

    #[test]
    fn a_kept_alive_connection_is_reused() {
        let (port, accepted) = server(false);
        let client = AsyncIoHttpClient::new(4, &ProxySetting::Disabled, &Trust::default()).unwrap();
        futures::executor::block_on(async {
            for _ in 0..3 {
                let response = connector(&client).send(get(port)).await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
                assert_eq!(response.body().bytes(), Some(&b"ok"[..]));
            }
        });
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three"
        );
        assert_eq!(client.idle_connections(), 1);
    }

    #[test]
    fn a_connection_closed_while_idle_is_not_written_to() {
        let (port, accepted) = server(true);
        let client = AsyncIoHttpClient::new(4, &ProxySetting::Disabled, &Trust::default()).unwrap();
        futures::executor::block_on(async {
            for _ in 0..3 {
                let response = connector(&client).send(get(port)).await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
                // Let the server's close arrive before the next request.
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = AsyncIoHttpClient::new(4, &ProxySetting::Disabled, &Trust::default()).unwrap();
        let err = futures::executor::block_on(connector(&client).send(get(port))).unwrap_err();
        assert!(err.is_io(), "{err:?}");
        let text = format!("{:?}", err);
        assert!(text.contains("could not connect"), "{text}");
    }

    /// A proxy that answers by itself: records each request's head, answers `ok`
    /// to plain requests and `connect_answer` to CONNECT.
    fn answering_proxy(connect_answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    let mut head = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let connect = head.starts_with("CONNECT");
                    seen.lock().unwrap().push(head);
                    if connect {
                        writer.write_all(connect_answer.as_bytes()).unwrap();
                    } else {
                        writer
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .unwrap();
                    }
                });
            }
        });
        (port, heads)
    }

    #[test]
    fn plain_http_through_a_proxy_keeps_the_absolute_form_and_authenticates() {
        let (port, heads) = answering_proxy("");
        let proxy = crate::Proxy::new(format!("http://127.0.0.1:{port}")).basic_auth("u", "p");
        let client =
            AsyncIoHttpClient::new(4, &ProxySetting::Fixed(proxy), &Trust::default()).unwrap();
        let mut request = HttpRequest::new(SdkBody::from("{}"));
        request
            .set_uri("http://kinesis.test:4567/path?q=1")
            .unwrap();
        let response = futures::executor::block_on(connector(&client).send(request)).unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let heads = heads.lock().unwrap();
        assert!(
            heads[0].starts_with("GET http://kinesis.test:4567/path?q=1 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        let lower = heads[0].to_ascii_lowercase();
        assert!(
            lower.contains("proxy-authorization: basic dtpw"),
            "{}",
            heads[0]
        );
        assert!(lower.contains("host: kinesis.test:4567"), "{}", heads[0]);
    }

    #[test]
    fn https_through_a_proxy_asks_for_a_tunnel_and_reports_a_refusal() {
        let (port, heads) = answering_proxy("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        let proxy = crate::Proxy::new(format!("127.0.0.1:{port}"));
        let client =
            AsyncIoHttpClient::new(4, &ProxySetting::Fixed(proxy), &Trust::default()).unwrap();
        let mut request = HttpRequest::new(SdkBody::from("{}"));
        request.set_uri("https://kinesis.test/").unwrap();
        let err = futures::executor::block_on(connector(&client).send(request)).unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("refused CONNECT kinesis.test:443"), "{text}");
        assert!(
            heads.lock().unwrap()[0].starts_with("CONNECT kinesis.test:443 HTTP/1.1\r\n"),
            "{:?}",
            heads.lock().unwrap()
        );
    }

    #[test]
    fn no_proxy_hosts_are_reached_directly() {
        let (origin_port, accepted) = server(false);
        let proxy = crate::Proxy::new("http://127.0.0.1:9").no_proxy("localhost,127.0.0.1");
        let client =
            AsyncIoHttpClient::new(4, &ProxySetting::Fixed(proxy), &Trust::default()).unwrap();
        let response = futures::executor::block_on(connector(&client).send(get(origin_port)));
        assert_eq!(response.unwrap().status().as_u16(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn proxy_urls_parse() {
        let r = route("http://user:pa:ss@proxy.internal:3128/", None).unwrap();
        assert_eq!((r.host.as_str(), r.port), ("proxy.internal", 3128));
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Basic {}", basic_credentials("user", "pa:ss")).as_str())
        );
        assert_eq!(route("proxy.internal", None).unwrap().port, 80);
        assert!(route("https://proxy.internal:443", None).is_err());
        assert!(route("http://proxy:notaport", None).is_err());
    }
}
