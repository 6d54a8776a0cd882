//! A CloudWatch stand-in on loopback: an HTTP server that answers PutMetricData as
//! the service does in the protocol aws-sdk-cloudwatch speaks (awsQuery: a
//! form-encoded request, gzipped when large; an XML answer), and keeps what it
//! was sent.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use crate::http::{Loopback, Request as HttpRequest, Response};

/// One data point as it arrived.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    /// `MetricName`.
    pub name: String,
    /// `Unit`.
    pub unit: String,
    /// `Dimensions`, `(Name, Value)` in the order sent.
    pub dimensions: Vec<(String, String)>,
    /// `Timestamp`, as sent.
    pub timestamp: String,
    /// `StatisticValues.SampleCount`.
    pub sample_count: f64,
    /// `StatisticValues.Sum`.
    pub sum: f64,
    /// `StatisticValues.Minimum`.
    pub min: f64,
    /// `StatisticValues.Maximum`.
    pub max: f64,
}

impl Datum {
    /// The value of dimension `name`.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One PutMetricData request that was answered with success.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `Namespace`.
    pub namespace: String,
    /// `MetricData`, in order.
    pub data: Vec<Datum>,
    /// Whether the body came gzipped.
    pub gzipped: bool,
    /// Whether it was signed (an `Authorization` header with SigV4).
    pub signed: bool,
    /// The body's length, unzipped.
    pub body_len: usize,
}

#[derive(Default)]
struct State {
    stored: Vec<Request>,
    /// How the next requests are answered: an error (status, code), or `None`
    /// for as the service would; first first, then as the service would.
    script: VecDeque<Option<(u16, String)>>,
    /// Requests seen, answered or not.
    seen: usize,
}

/// The stand-in; it runs until the process ends.
#[derive(Clone)]
pub struct CloudWatchStandIn {
    url: String,
    state: Arc<Mutex<State>>,
}

impl CloudWatchStandIn {
    /// Starts one on a free loopback port.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let port = Loopback::new(move |r| answer(r, &shared)).start();
        let url = format!("http://127.0.0.1:{port}");
        Self { url, state }
    }

    /// Its endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next request not yet answered with HTTP `status` and error
    /// `code` (queued after those already asked for).
    pub fn fail_next(&self, status: u16, code: &str) {
        self.lock()
            .script
            .push_back(Some((status, code.to_owned())));
    }

    /// Answers the next request not yet scripted as the service would (so that
    /// a failure queued after it falls on the one after).
    pub fn pass_next(&self) {
        self.lock().script.push_back(None);
    }

    /// The requests stored so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().stored.clone()
    }

    /// Every data point stored so far.
    pub fn data(&self) -> Vec<Datum> {
        self.requests().into_iter().flat_map(|r| r.data).collect()
    }

    /// Requests seen, failed ones included.
    pub fn seen(&self) -> usize {
        self.lock().seen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer to `request`, as the service would give it or as the test asked.
fn answer(request: &HttpRequest, state: &Mutex<State>) -> Response {
    let body = request.body();
    let gzipped = request
        .header("content-encoding")
        .is_some_and(|v| v.contains("gzip"));
    let body = if gzipped {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .is_err()
        {
            return error(400, "InvalidParameterValue", "the body is not gzip");
        }
        out
    } else {
        body.to_vec()
    };
    let form = parse_form(&String::from_utf8_lossy(&body));
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.seen += 1;
    if form.get("Action").map(String::as_str) != Some("PutMetricData") {
        return error(400, "InvalidAction", "only PutMetricData is served here");
    }
    if let Some((status, code)) = state.script.pop_front().flatten() {
        return error(status, &code, "failed as the test asked");
    }
    let Some(namespace) = form.get("Namespace").cloned() else {
        return error(400, "MissingParameter", "no Namespace");
    };
    let data = match data(&form) {
        Ok(data) => data,
        Err(why) => return error(400, "InvalidParameterValue", &why),
    };
    if data.is_empty() || data.len() > 1000 {
        return error(
            400,
            "InvalidParameterValue",
            "1 to 1000 data points per request",
        );
    }
    state.stored.push(Request {
        namespace,
        data,
        gzipped,
        signed: request
            .header("authorization")
            .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256")),
        body_len: body.len(),
    });
    let xml = "<PutMetricDataResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
               <ResponseMetadata><RequestId>stand-in</RequestId></ResponseMetadata>\
               </PutMetricDataResponse>";
    http(200, xml)
}

fn data(form: &BTreeMap<String, String>) -> Result<Vec<Datum>, String> {
    let mut out = Vec::new();
    for i in 1.. {
        let key = |k: &str| format!("MetricData.member.{i}.{k}");
        let Some(name) = form.get(&key("MetricName")) else {
            break;
        };
        let number = |k: &str| -> Result<f64, String> {
            let k = key(&format!("StatisticValues.{k}"));
            form.get(&k)
                .ok_or_else(|| format!("no {k}"))?
                .parse()
                .map_err(|_| format!("{k} is not a number"))
        };
        let mut dimensions = Vec::new();
        for j in 1.. {
            let Some(n) = form.get(&key(&format!("Dimensions.member.{j}.Name"))) else {
                break;
            };
            let v = form
                .get(&key(&format!("Dimensions.member.{j}.Value")))
                .ok_or_else(|| format!("dimension {n} has no value"))?;
            if v.is_empty() {
                return Err(format!("dimension {n} has an empty value"));
            }
            dimensions.push((n.clone(), v.clone()));
        }
        out.push(Datum {
            name: name.clone(),
            unit: form.get(&key("Unit")).cloned().unwrap_or_default(),
            dimensions,
            timestamp: form.get(&key("Timestamp")).cloned().unwrap_or_default(),
            sample_count: number("SampleCount")?,
            sum: number("Sum")?,
            min: number("Minimum")?,
            max: number("Maximum")?,
        });
    }
    Ok(out)
}

fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let xml = format!(
        "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
         <Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>stand-in</RequestId></ErrorResponse>"
    );
    http(status, &xml)
}

fn http(status: u16, body: &str) -> Response {
    let reason = if status == 200 { "OK" } else { "Error" };
    Response::new(&format!("{status} {reason}"), "text/xml", body)
}
