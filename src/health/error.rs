//! Errors of setting a check up (reading its CA file, building its HTTP client). A probe
//! that fails is not an error: it is a `ProbeResult` with `ok: false`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(
        "health check {check}: cannot read ca_file {}: {source}; check the path and its permissions",
        path.display()
    )]
    CaFileUnreadable {
        check: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "health check {check}: ca_file {} holds no usable PEM certificate ({reason}); give the PEM file of the CA that signed the server's certificate",
        path.display()
    )]
    CaFileInvalid {
        check: String,
        path: PathBuf,
        reason: String,
    },
    #[error("health check {check}: url {url:?} cannot be used: {reason}")]
    BadUrl {
        check: String,
        url: String,
        reason: String,
    },
    #[error(
        "health check {check}: host {host:?} cannot be sent as a Host header; write a host name like \"crm.example.net\""
    )]
    BadHost { check: String, host: String },
    #[error("health check {check}: cannot set up the HTTP client: {reason}")]
    Client { check: String, reason: String },
    #[error("health check {check}: {reason}")]
    Invalid { check: String, reason: String },
}
