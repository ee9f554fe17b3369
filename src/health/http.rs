//! The http and https checker: one request, its status and optionally a substring of its
//! body. One `reqwest::Client` per check, kept for the check's life, so probes reuse a
//! keep-alive connection (a new TCP and TLS handshake every second for 1,000 checks
//! would cost the gateway CPU for nothing). Never follows redirects: a 302 to a login
//! page is not a healthy CRM node unless the operator said 302 is expected.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{HOST, HeaderValue};
use reqwest::{Client, Method, Url, redirect};

use super::{HealthError, ProbeResult, root_cause, timeout_detail};
use crate::config::{CheckKind, HealthCheck, HttpMethod, StatusSet};

/// Bodies are read up to this size for `expect_body`; a health page is small, and a
/// misconfigured check pointed at a large file must not make the gateway buffer it.
pub const BODY_LIMIT: usize = 64 * 1024;

pub struct HttpChecker {
    client: Client,
    url: Url,
    method: HttpMethod,
    host: Option<HeaderValue>,
    expect_status: StatusSet,
    expect_body: Option<String>,
    timeout: Duration,
}

impl HttpChecker {
    /// Builds the client (reads `ca_file` now, so a bad file is reported at start, not
    /// at every probe). Logs a warning once when verification is off.
    pub fn new(check: &HealthCheck) -> Result<Self, HealthError> {
        let CheckKind::Http {
            url,
            https,
            method,
            host,
            expect_status,
            expect_body,
            ca_file,
            insecure_skip_verify,
        } = &check.kind
        else {
            return Err(HealthError::Invalid {
                check: check.name.clone(),
                reason: "not an http or https check".into(),
            });
        };
        let name = &check.name;
        let parsed = Url::parse(url).map_err(|e| HealthError::BadUrl {
            check: name.clone(),
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let host = match host {
            None => None,
            Some(h) => Some(HeaderValue::from_str(h).map_err(|_| HealthError::BadHost {
                check: name.clone(),
                host: h.clone(),
            })?),
        };
        let tls = Tls {
            https: *https,
            ca_file: ca_file.as_deref(),
            insecure_skip_verify: *insecure_skip_verify,
        };
        Ok(HttpChecker {
            client: client(check, url, &tls)?,
            url: parsed,
            method: *method,
            host,
            expect_status: expect_status.clone(),
            expect_body: expect_body.clone(),
            timeout: check.timeout,
        })
    }

    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let verdict = tokio::time::timeout(self.timeout, self.request()).await;
        let latency = start.elapsed();
        match verdict {
            Err(_) => ProbeResult::fail(latency, timeout_detail(self.timeout)),
            Ok(Ok(detail)) => ProbeResult::pass(latency, detail),
            Ok(Err(failure)) => ProbeResult::fail(latency, failure.to_string()),
        }
    }

    /// Ok(detail) when the check passes.
    async fn request(&self) -> Result<String, HttpFailure> {
        let method = match self.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Head => Method::HEAD,
        };
        let mut request = self.client.request(method, self.url.clone());
        if let Some(host) = &self.host {
            request = request.header(HOST, host.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| HttpFailure::of(&e, self.timeout))?;
        let code = response.status().as_u16();
        if !self.expect_status.contains(code) {
            return Err(HttpFailure::Status {
                code,
                expected: self.expect_status.clone(),
            });
        }
        if self.method == HttpMethod::Head {
            return Ok(format!("HTTP {code}"));
        }
        // Read the body even when nobody looks at it: a connection goes back to the
        // pool only once its response is consumed.
        let mut body = BodyPrefix::default();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.push(&chunk) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(HttpFailure::Body {
                        code,
                        cause: root_cause(&e),
                    });
                }
            }
        }
        judge_body(code, &body, self.expect_body.as_deref())
    }
}

/// The first `BODY_LIMIT` bytes of a response body, gathered chunk by chunk as the server
/// sends them. Pure, like `judge_body`, so the fuzz target `health_reply` (fuzz/) feeds
/// them what a CRM server could answer.
#[derive(Debug, Default)]
pub struct BodyPrefix {
    body: Vec<u8>,
    /// Whether the body was cut at `BODY_LIMIT` (then a missing needle may lie beyond).
    cut: bool,
}

impl BodyPrefix {
    /// Adds a chunk; true once the limit is reached and no more should be read.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let room = BODY_LIMIT - self.body.len();
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if self.body.len() >= BODY_LIMIT {
            self.cut = true;
        }
        self.cut
    }

    pub fn bytes(&self) -> &[u8] {
        &self.body
    }
}

/// The verdict on a response whose status passed: with `expect_body`, whether the body
/// (as far as it was read) contains it.
pub fn judge_body(
    code: u16,
    body: &BodyPrefix,
    expect_body: Option<&str>,
) -> Result<String, HttpFailure> {
    let Some(needle) = expect_body else {
        return Ok(format!("HTTP {code}"));
    };
    if contains(&body.body, needle.as_bytes()) {
        Ok(format!("HTTP {code}, body matches"))
    } else if !body.cut {
        Err(HttpFailure::BodyLacks {
            code,
            needle: needle.to_string(),
        })
    } else {
        Err(HttpFailure::PrefixLacks {
            code,
            needle: needle.to_string(),
        })
    }
}

/// How a check's client verifies the server it probes.
struct Tls<'a> {
    https: bool,
    ca_file: Option<&'a Path>,
    insecure_skip_verify: bool,
}

/// The check's own client: no redirects, no proxy, one kept-alive connection, the check's
/// connect timeout and its TLS trust (`ca_file` read now). Warns once when verification
/// is off.
fn client(check: &HealthCheck, url: &str, tls: &Tls<'_>) -> Result<Client, HealthError> {
    let name = &check.name;
    let mut builder = Client::builder()
        .redirect(redirect::Policy::none())
        // A proxy from the environment would check the proxy, not the CRM node.
        .no_proxy()
        // No client-wide `.timeout()`: `probe` bounds the whole request with one
        // tokio timer already, and a second timer per request costs CPU at 1,000 checks.
        .connect_timeout(check.timeout)
        // One connection per check is all a probe every interval needs.
        .pool_max_idle_per_host(1)
        .user_agent(concat!("havip-health/", env!("CARGO_PKG_VERSION")))
        // Loading the system roots costs a few milliseconds per client: only https
        // checks without their own CA need them.
        .tls_built_in_root_certs(tls.https && tls.ca_file.is_none());
    if let Some(path) = tls.ca_file {
        for cert in ca_certificates(name, path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if tls.insecure_skip_verify {
        tracing::warn!(
            "health: check {name} does NOT verify the TLS certificate of {url} \
             (insecure_skip_verify = true): anyone on the path can answer for the CRM node; \
             set ca_file instead"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| HealthError::Client {
        check: name.clone(),
        reason: root_cause(&e),
    })
}

/// The certificates of a check's `ca_file`: at least one, or an error naming the file.
fn ca_certificates(check: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, HealthError> {
    let pem = std::fs::read(path).map_err(|source| HealthError::CaFileUnreadable {
        check: check.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HealthError::CaFileInvalid {
            check: check.to_string(),
            path: path.to_path_buf(),
            reason: root_cause(&e),
        })?;
    if certs.is_empty() {
        return Err(HealthError::CaFileInvalid {
            check: check.to_string(),
            path: path.to_path_buf(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Why a probe failed, as its detail line reads ("HTTP 503 (expected 200-399)",
/// "connect: connection refused"). Not an error of the daemon: it becomes a
/// `ProbeResult` with `ok: false`.
#[derive(Debug, thiserror::Error)]
pub enum HttpFailure {
    /// The client's own timeout (the probe's outer one reads the same).
    #[error("{}", timeout_detail(*.0))]
    Timeout(Duration),
    /// The cause, not reqwest's wrapping ("connection refused", "tls: ...").
    #[error("connect: {0}")]
    Connect(String),
    #[error("request: {0}")]
    Request(String),
    #[error("HTTP {code} (expected {expected})")]
    Status { code: u16, expected: StatusSet },
    #[error("HTTP {code}, body: {cause}")]
    Body { code: u16, cause: String },
    #[error("HTTP {code}, body lacks {needle:?}")]
    BodyLacks { code: u16, needle: String },
    #[error("HTTP {code}, body lacks {needle:?} in its first {} KiB", BODY_LIMIT / 1024)]
    PrefixLacks { code: u16, needle: String },
}

impl HttpFailure {
    /// A request that got no response: timed out, not connected, or failed on the way.
    fn of(e: &reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            HttpFailure::Timeout(timeout)
        } else if e.is_connect() {
            HttpFailure::Connect(root_cause(e))
        } else {
            HttpFailure::Request(root_cause(e))
        }
    }
}
