//! HTTP proxies and TLS trust for the AWS transport: settings of our own, so that
//! no SDK type is part of this crate's API.

// Parts are used by one HTTP client or the other only.
#![cfg_attr(not(all(feature = "tokio", feature = "async-io")), allow(dead_code))]

use std::fmt;

/// An HTTP proxy for the transport's requests: `CONNECT` tunnels for `https://`
/// endpoints, absolute-form requests for `http://` ones.
///
/// ```
/// use kpl_transport::Proxy;
///
/// let proxy = Proxy::new("http://proxy.internal:3128")
///     .basic_auth("user", "secret")
///     .no_proxy("localhost,.internal");
/// assert_eq!(proxy.url(), "http://proxy.internal:3128");
/// // The password never appears in debug output.
/// assert!(!format!("{proxy:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    url: String,
    auth: Option<(String, String)>,
    no_proxy: Option<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.url)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Proxy {
    /// A proxy at `url` (`http://host:port`; the scheme may be left out).
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let url = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        Self {
            url,
            auth: None,
            no_proxy: None,
        }
    }

    /// Basic authentication to the proxy (never logged).
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Hosts reached directly: a comma-separated list of names, `.suffix`es, and
    /// `*` for every host (as `NO_PROXY`).
    pub fn no_proxy(mut self, rules: impl Into<String>) -> Self {
        self.no_proxy = Some(rules.into());
        self
    }

    /// The proxy's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    pub(crate) fn no_proxy_rules(&self) -> Option<&str> {
        self.no_proxy.as_deref()
    }
}

/// Where the transport's proxy settings come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum ProxySetting {
    /// `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or their lower-case forms).
    #[default]
    FromEnvironment,
    /// Always this proxy.
    Fixed(Proxy),
    /// Never a proxy.
    Disabled,
}

/// How the transport checks the endpoint's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Trust {
    /// Extra trusted roots, PEM, beside the system's.
    pub(crate) extra_pem: Vec<Vec<u8>>,
    /// Whether certificates are checked at all.
    pub(crate) verify: bool,
}

impl Default for Trust {
    fn default() -> Self {
        Self {
            extra_pem: Vec::new(),
            verify: true,
        }
    }
}

/// Whether `host` is reached directly under `NO_PROXY`-style `rules`.
pub(crate) fn bypassed(host: &str, rules: &str) -> bool {
    let host = host.to_ascii_lowercase();
    rules
        .split(',')
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| !r.is_empty())
        .any(|rule| {
            if rule == "*" {
                return true;
            }
            let rule = rule.split(':').next().unwrap_or_default();
            let suffix = rule.trim_start_matches('.');
            host == suffix || host.ends_with(&format!(".{suffix}"))
        })
}

/// The first of these environment variables that is set and not empty.
pub(crate) fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.trim().is_empty())
}

/// Base64 of `user:password`, for `Proxy-Authorization: Basic`.
pub(crate) fn basic_credentials(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_rules_match_names_and_suffixes() {
        assert!(bypassed("localhost", "localhost,127.0.0.1"));
        assert!(bypassed("kinesis.internal", ".internal"));
        assert!(bypassed("a.b.internal", "internal"));
        assert!(!bypassed("notinternal", ".internal"));
        assert!(bypassed("anything", " * "));
        assert!(bypassed("127.0.0.1", "127.0.0.1:4567"));
        assert!(!bypassed("kinesis.us-east-1.amazonaws.com", "localhost"));
    }

    #[test]
    fn basic_credentials_are_base64() {
        // RFC 7617's example.
        assert_eq!(
            basic_credentials("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_credentials("a", ""), "YTo=");
        assert_eq!(basic_credentials("ab", "c"), "YWI6Yw==");
    }
}
