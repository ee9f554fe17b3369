//! The `[health]` section: how many checks must pass, and each `[[health.check]]`
//! (http, https, tcp, exec) with its timing and rise/fall thresholds. Only reads and
//! validates the text; the checkers themselves live in `crate::health`.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::Role;
use super::duration::format_duration;
use super::parse::valid_name;
use super::reader::{At, Reader, Tab, list};

/// How many of the vetoing checks (weight 0) must pass for the node to be healthy.
/// With no vetoing checks the node is healthy whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Require {
    #[default]
    All,
    Any,
    AtLeast(usize),
}

/// The whole `[health]` section of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthSection {
    pub require: Require,
    pub checks: Vec<HealthCheck>,
    /// The user exec checks run as (`run_as`); None: root, without capabilities. Copied
    /// into each exec check's kind.
    pub run_as: Option<String>,
}

/// One `[[health.check]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    pub kind: CheckKind,
    pub interval: Duration,
    /// Always shorter than `interval`, so checks of one kind never overlap.
    pub timeout: Duration,
    /// Consecutive passes before a failed check counts as passing again.
    pub rise: u32,
    /// Consecutive failures before a passing check counts as failed.
    pub fall: u32,
    /// 0: the check vetoes (counts for `require`). Nonzero: a failing check adds this to
    /// the node's priority instead (keepalived's track_script weight; usually negative).
    pub weight: i32,
}

impl HealthCheck {
    /// Whether the check decides health (counts for `require`) rather than priority.
    pub fn vetoes(&self) -> bool {
        self.weight == 0
    }
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Http {
        /// Starts with "http://" or "https://" to match `https`.
        url: String,
        https: bool,
        method: HttpMethod,
        host: Option<String>,
        expect_status: StatusSet,
        expect_body: Option<String>,
        ca_file: Option<PathBuf>,
        insecure_skip_verify: bool,
    },
    Tcp {
        /// "host:port"; the host may be an IP address or a DNS name (`[v6]:port` for IPv6).
        address: String,
        send: Option<String>,
        expect: Option<String>,
    },
    Exec {
        /// argv, run without a shell; `command[0]` is an absolute path.
        command: Vec<String>,
        /// `[health] run_as`: the user it runs as (None: root, without capabilities).
        run_as: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// The HTTP status codes a check accepts: a code, a list of codes, or ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    /// 2xx and 3xx, like most load balancers' health checks.
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }

    /// Parses "200" or "200-399".
    pub fn parse(text: &str) -> Result<Self, StatusError> {
        Ok(StatusSet(vec![parse_status_range(text)?]))
    }

    /// One set from several codes or ranges (`[200, 204]`, `["200-299", 404]`).
    pub fn from_ranges(ranges: Vec<RangeInclusive<u16>>) -> Self {
        StatusSet(ranges)
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

const STATUS_HINT: &str = "write a code (200), a list ([200, 204]) or a range (\"200-399\")";

/// Why an `expect_status` was refused; each says what would be right. The key path and
/// line:column are added by the reader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("{text:?} is not an HTTP status code (100 to 599); {STATUS_HINT}")]
    NotACode { text: String },
    /// An integer too large for any status code.
    #[error("{number} is not an HTTP status code; {STATUS_HINT}")]
    OutOfRange { number: i64 },
    #[error("{text:?} is an empty range; write the lower code first, like \"{high}-{low}\"")]
    EmptyRange { text: String, low: u16, high: u16 },
    #[error("lists do not nest; {STATUS_HINT}")]
    NestedList,
    /// Neither a number, a string nor a non-empty list.
    #[error("is not a status code; {STATUS_HINT}")]
    NotAStatus,
}

fn status_code(text: &str) -> Result<u16, StatusError> {
    match text.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(StatusError::NotACode {
            text: text.to_string(),
        }),
    }
}

fn parse_status_range(text: &str) -> Result<RangeInclusive<u16>, StatusError> {
    match text.split_once('-') {
        None => status_code(text).map(|c| c..=c),
        Some((low, high)) => {
            let (low, high) = (status_code(low)?, status_code(high)?);
            if low > high {
                return Err(StatusError::EmptyRange {
                    text: text.to_string(),
                    low,
                    high,
                });
            }
            Ok(low..=high)
        }
    }
}

fn status_from_value(v: &toml_edit::Value) -> Result<Vec<RangeInclusive<u16>>, StatusError> {
    use toml_edit::Value;
    match v {
        Value::Integer(n) => {
            let number = *n.value();
            let code = u16::try_from(number).map_err(|_| StatusError::OutOfRange { number })?;
            status_code(&code.to_string()).map(|c| vec![c..=c])
        }
        Value::String(s) => parse_status_range(s.value()).map(|r| vec![r]),
        Value::Array(a) if !a.is_empty() => {
            let mut out = Vec::new();
            for element in a.iter() {
                match element {
                    Value::Array(_) => return Err(StatusError::NestedList),
                    other => out.extend(status_from_value(other)?),
                }
            }
            Ok(out)
        }
        _ => Err(StatusError::NotAStatus),
    }
}

const HEALTH_KEYS: &[&str] = &["require", "check", "run_as"];
const COMMON_KEYS: &[&str] = &[
    "name", "kind", "interval", "timeout", "rise", "fall", "weight",
];
const HTTP_KEYS: &[&str] = &["url", "method", "host", "expect_status", "expect_body"];
const HTTPS_KEYS: &[&str] = &["ca_file", "insecure_skip_verify"];
const TCP_KEYS: &[&str] = &["address", "send", "expect"];
const EXEC_KEYS: &[&str] = &["command"];
const KINDS: &[&str] = &["http", "https", "tcp", "exec"];

/// Reads `[health]`. A witness may not have checks: it never holds a VIP, so nothing
/// depends on its health.
pub(super) fn read_health(r: &mut Reader<'_>, root: &Tab<'_>, role: Role) -> HealthSection {
    let Some(health) = r.table(root, "health") else {
        return HealthSection::default();
    };
    r.unknown_keys(&health, HEALTH_KEYS);
    let entries = r.tables(&health, "check");
    if role == Role::Witness && !entries.is_empty() {
        r.error(
            &health.span_of("check"),
            health.key("check"),
            "a witness never holds a VIP, so it has no health checks; remove the [[health.check]] entries from this file",
        );
        return HealthSection::default();
    }

    let mut checks = Vec::new();
    let mut unreadable = 0;
    let mut seen: HashMap<String, String> = HashMap::new();
    for entry in &entries {
        if let Some(check) = read_check(r, entry) {
            if let Some(first) = seen.get(&check.name.value) {
                r.error(
                    &check.name.span,
                    entry.key("name"),
                    format!(
                        "check name {:?} is already used by {first}; give each check its own name",
                        check.name.value
                    ),
                );
            } else {
                seen.insert(check.name.value.clone(), entry.path.clone());
            }
            checks.push(check.check);
        } else {
            unreadable += 1;
        }
    }

    let vetoing = checks.iter().filter(|c| c.vetoes()).count();
    // A check with errors may have been meant to veto: do not also call `require` too big.
    let require = read_require(r, &health, vetoing + unreadable).unwrap_or_default();
    let run_as = read_run_as(r, &health);
    for check in &mut checks {
        if let CheckKind::Exec { run_as: theirs, .. } = &mut check.kind {
            theirs.clone_from(&run_as);
        }
    }
    HealthSection {
        require,
        checks,
        run_as,
    }
}

fn read_require(r: &mut Reader<'_>, health: &Tab<'_>, vetoing: usize) -> Option<Require> {
    let item = health.table.get("require")?;
    let span = health.span_of("require");
    let key = health.key("require");
    let hint = "write \"all\", \"any\" or a number of checks (without quotes)";
    if let Some(text) = item.as_str() {
        return match text {
            "all" => Some(Require::All),
            "any" => Some(Require::Any),
            other => {
                r.error(&span, key, format!("{other:?} is not a rule; {hint}"));
                None
            }
        };
    }
    let Some(n) = item.as_integer() else {
        r.error(&span, key, format!("is not a rule; {hint}"));
        return None;
    };
    if n < 1 || usize::try_from(n).map_or(true, |n| n > vetoing) {
        let message = if vetoing == 0 {
            format!(
                "require = {n} but there are no vetoing checks (weight 0); remove `require` or add checks"
            )
        } else {
            let (verb, plural) = if vetoing == 1 {
                ("is", "")
            } else {
                ("are", "s")
            };
            format!(
                "require = {n} but there {verb} {vetoing} vetoing check{plural} (weight 0); write a number from 1 to {vetoing}, or \"all\" / \"any\""
            )
        };
        r.error(&span, key, message);
        return None;
    }
    usize::try_from(n).ok().map(Require::AtLeast)
}

struct ReadCheck {
    name: At<String>,
    check: HealthCheck,
}

/// One `[[health.check]]` entry: the keys every check has, then its kind's own.
fn read_check(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<ReadCheck> {
    let all_keys: Vec<&str> = [COMMON_KEYS, HTTP_KEYS, HTTPS_KEYS, TCP_KEYS, EXEC_KEYS].concat();
    r.unknown_keys(t, &all_keys);

    let name = if r.require(t, "name", "\"crm-1-http\"") {
        r.non_empty_string(t, "name")
    } else {
        None
    };
    if let Some(name) = &name
        && let Err(why) = valid_name(&name.value, 64, true)
    {
        r.error(&name.span, t.key("name"), why);
    }

    let kind = read_kind(r, t);
    if let Some(kind) = &kind {
        check_foreign_keys(r, t, kind);
    }
    let (interval, timeout) = read_timing(r, t);
    let rise = r
        .integer(t, "rise", 1..=i64::from(u32::MAX))
        .map_or(2, |n| n.value);
    let fall = r
        .integer(t, "fall", 1..=i64::from(u32::MAX))
        .map_or(3, |n| n.value);
    let weight = r.integer(t, "weight", -254..=254).map_or(0, |n| n.value);

    let kind = match kind.as_deref() {
        Some(k @ ("http" | "https")) => read_http(r, t, k == "https"),
        Some("tcp") => read_tcp(r, t),
        Some("exec") => read_exec(r, t),
        _ => None,
    };

    let (name, kind) = (name?, kind?);
    let check = HealthCheck {
        name: name.value.clone(),
        kind,
        interval,
        timeout,
        // Bounded to u32 and i32 by the ranges above.
        rise: u32::try_from(rise).unwrap_or(2),
        fall: u32::try_from(fall).unwrap_or(3),
        weight: i32::try_from(weight).unwrap_or(0),
    };
    Some(ReadCheck { name, check })
}

/// `kind`: one of `KINDS`.
fn read_kind(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<String> {
    let kind = if r.require(t, "kind", "\"http\"") {
        r.string(t, "kind")
    } else {
        None
    };
    kind.and_then(|k| {
        if KINDS.contains(&k.value.as_str()) {
            Some(k.value)
        } else {
            r.error(
                &k.span,
                t.key("kind"),
                format!(
                    "{:?} is not a check kind; write one of {}",
                    k.value,
                    list(KINDS)
                ),
            );
            None
        }
    })
}

/// Keys that belong to another kind are mistakes (a tcp check with a `url` would
/// silently never use it), so say which kind they belong to.
fn check_foreign_keys(r: &mut Reader<'_>, t: &Tab<'_>, kind: &str) {
    let allowed: &[&[&str]] = match kind {
        "http" => &[HTTP_KEYS],
        "https" => &[HTTP_KEYS, HTTPS_KEYS],
        "tcp" => &[TCP_KEYS],
        _ => &[EXEC_KEYS],
    };
    for (key, _) in t.table.iter() {
        let foreign = [HTTP_KEYS, HTTPS_KEYS, TCP_KEYS, EXEC_KEYS]
            .iter()
            .any(|ks| ks.contains(&key));
        if foreign && !allowed.iter().any(|ks| ks.contains(&key)) {
            let owner = if HTTPS_KEYS.contains(&key) {
                "https"
            } else if HTTP_KEYS.contains(&key) {
                "http and https"
            } else if TCP_KEYS.contains(&key) {
                "tcp"
            } else {
                "exec"
            };
            r.error(
                &t.key_span(key),
                t.key(key),
                format!("`{key}` applies to {owner} checks, not to a {kind} check; remove it"),
            );
        }
    }
}

/// `interval` and `timeout` (defaults 2s and 1s), the timeout shorter than the interval.
fn read_timing(r: &mut Reader<'_>, t: &Tab<'_>) -> (Duration, Duration) {
    let interval = r.duration(t, "interval");
    let timeout = r.duration(t, "timeout");
    for (key, d) in [("interval", &interval), ("timeout", &timeout)] {
        if let Some(d) = d.as_ref().filter(|d| d.value.is_zero()) {
            r.error(&d.span, t.key(key), "must be longer than 0s");
        }
    }
    let interval_value = interval
        .as_ref()
        .map_or(Duration::from_secs(2), |d| d.value);
    let timeout_value = timeout.as_ref().map_or(Duration::from_secs(1), |d| d.value);
    // Compared only when both were readable (or defaulted), so one bad value does not
    // cause a second, confusing error.
    let unreadable =
        (t.has("interval") && interval.is_none()) || (t.has("timeout") && timeout.is_none());
    if !unreadable && timeout_value >= interval_value {
        let (key, span) = match (&timeout, &interval) {
            (Some(d), _) => ("timeout", d.span.clone()),
            (None, Some(d)) => ("interval", d.span.clone()),
            (None, None) => ("timeout", t.span.clone()),
        };
        r.error(
            &span,
            t.key(key),
            format!(
                "the timeout ({}) must be shorter than the interval ({}), or checks would overlap; shorten `timeout` or lengthen `interval`",
                format_duration(timeout_value),
                format_duration(interval_value)
            ),
        );
    }
    (interval_value, timeout_value)
}

/// The keys of an http or https check.
fn read_http(r: &mut Reader<'_>, t: &Tab<'_>, https: bool) -> Option<CheckKind> {
    let url = read_url(r, t, https);
    let method = r
        .string(t, "method")
        .and_then(|m| match m.value.to_ascii_uppercase().as_str() {
            "GET" => Some(HttpMethod::Get),
            "HEAD" => Some(HttpMethod::Head),
            _ => {
                r.error(
                    &m.span,
                    t.key("method"),
                    format!("{:?} is not supported; write \"GET\" or \"HEAD\"", m.value),
                );
                None
            }
        });
    let host = r.non_empty_string(t, "host").map(|h| h.value);
    let expect_status = read_expect_status(r, t);
    let expect_body = r.string(t, "expect_body").map(|b| b.value);
    let (ca_file, insecure) = if https {
        let ca = r.path(t, "ca_file");
        let insecure = r.boolean(t, "insecure_skip_verify").unwrap_or(false);
        if insecure && let Some(ca) = &ca {
            r.error(
                &ca.span,
                t.key("ca_file"),
                "`ca_file` and `insecure_skip_verify = true` contradict each other; keep `ca_file` and remove `insecure_skip_verify`",
            );
        }
        (ca.map(|c| c.value), insecure)
    } else {
        (None, false)
    };
    Some(CheckKind::Http {
        url: url?,
        https,
        method: method.unwrap_or_default(),
        host,
        expect_status: expect_status?,
        expect_body,
        ca_file,
        insecure_skip_verify: insecure,
    })
}

/// `url`: starts with the scheme of the check's kind and names a host.
fn read_url(r: &mut Reader<'_>, t: &Tab<'_>, https: bool) -> Option<String> {
    let scheme = if https { "https://" } else { "http://" };
    let url = if r.require(t, "url", &format!("\"{scheme}198.18.0.21:8080/health\"")) {
        r.string(t, "url")
    } else {
        None
    };
    url.and_then(|u| {
        let rest = u.value.strip_prefix(scheme);
        let host = rest.map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        match host {
            Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Some(u.value),
            Some(_) => {
                r.error(
                    &u.span,
                    t.key("url"),
                    format!(
                        "{:?} has no host; write it like \"{scheme}198.18.0.21:8080/health\"",
                        u.value
                    ),
                );
                None
            }
            None => {
                let other = if https { "http" } else { "https" };
                let hint = if u.value.starts_with(&format!("{other}://")) {
                    format!("; or set `kind = \"{other}\"`")
                } else {
                    String::new()
                };
                r.error(
                    &u.span,
                    t.key("url"),
                    format!(
                        "{:?} must start with {scheme:?} for a {} check{hint}",
                        u.value,
                        &scheme[..scheme.len() - 3]
                    ),
                );
                None
            }
        }
    })
}

/// `expect_status`: a code, a list of codes or ranges; 200-399 when absent.
fn read_expect_status(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<StatusSet> {
    match t.table.get("expect_status").and_then(|i| i.as_value()) {
        None => {
            // A table where a value belongs is reported by `string`.
            let _ = r.string(t, "expect_status");
            Some(StatusSet::default())
        }
        Some(v) => match status_from_value(v) {
            Ok(ranges) => Some(StatusSet(ranges)),
            Err(why) => {
                r.error(&v.span(), t.key("expect_status"), why);
                None
            }
        },
    }
}

fn read_tcp(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<CheckKind> {
    let address = if r.require(t, "address", "\"198.18.0.21:5432\"") {
        r.non_empty_string(t, "address")
    } else {
        None
    };
    let address = address.and_then(|a| {
        let port_ok = a
            .value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
        if port_ok {
            Some(a.value)
        } else {
            r.error(
                &a.span,
                t.key("address"),
                format!("{:?} is not host:port; write it like \"198.18.0.21:5432\" or \"[2001:db8::21]:5432\"", a.value),
            );
            None
        }
    });
    let send = r.string(t, "send").map(|s| s.value);
    let expect = r.string(t, "expect");
    if let (Some(expect), None) = (&expect, &send) {
        r.error(
            &expect.span,
            t.key("expect"),
            "`expect` needs `send`: the check compares the reply to what it sent; add `send = \"...\"` or remove `expect`",
        );
    }
    Some(CheckKind::Tcp {
        address: address?,
        send,
        expect: expect.map(|e| e.value),
    })
}

fn read_exec(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<CheckKind> {
    if !r.require(t, "command", "[\"/usr/local/bin/check-crm\", \"--fast\"]") {
        return None;
    }
    let command = read_argv(r, t, "command")?;
    Some(CheckKind::Exec {
        command,
        run_as: None,
    })
}

/// `run_as` of `[health]` or `[notify]`: a user name as `useradd` takes it. Whether the
/// user exists is the running node's to check (`platform::child::RunAs::lookup`): the
/// file may be checked on another machine.
pub(super) fn read_run_as(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<String> {
    let name = r.string(t, "run_as")?;
    if valid_user_name(&name.value) {
        Some(name.value)
    } else {
        r.error(
            &name.span,
            t.key("run_as"),
            format!(
                "{:?} is not a user name (letters, digits, '_', '-', up to 32, not starting with a digit or '-'); \
                 for example run_as = \"havip-check\", made with adduser --system havip-check",
                name.value
            ),
        );
        None
    }
}

fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// An argv array (exec checks, notify): non-empty, program given by absolute path,
/// because there is no shell and no `$PATH` search to make a bare name mean something.
pub(super) fn read_argv(r: &mut Reader<'_>, t: &Tab<'_>, key: &str) -> Option<Vec<String>> {
    let argv = r.string_array(t, key)?;
    let Some(program) = argv.value.first() else {
        r.error(&argv.span, t.key(key), "is empty; give the program and its arguments, like [\"/usr/local/bin/check-crm\", \"--fast\"]");
        return None;
    };
    if !program.value.starts_with('/') {
        r.error(
            &program.span,
            format!("{}[0]", t.key(key)),
            format!(
                "{:?} is not an absolute path; commands run without a shell or $PATH, so write the full path, like \"/usr/local/bin/{}\"",
                program.value,
                program.value.rsplit('/').next().unwrap_or("")
            ),
        );
        return None;
    }
    Some(argv.value.into_iter().map(|a| a.value).collect())
}
