//! The `[[backend]]` tables: the pools of CRM servers that each gateway's load balancer
//! (HAProxy) spreads the VIP's traffic over, which health checks decide each server, and
//! where that gateway's HAProxy answers its Runtime API. Only reads and validates the
//! text; the client and the applier live in `crate::haproxy`.
//!
//! Pure, like the rest of `config`: never touches the host (the socket is not opened
//! here, so `check-config` on a laptop accepts a gateway's file).

use std::collections::HashMap;
use std::path::PathBuf;

use super::check::HealthSection;
use super::parse::valid_name;
use super::reader::{At, Reader, Tab};
use super::{Backend, BackendServer, HaproxyTarget, Role, VipGroup};

const BACKEND_KEYS: &[&str] = &["name", "group", "haproxy", "server"];
const HAPROXY_KEYS: &[&str] = &["socket", "backend"];
const SERVER_KEYS: &[&str] = &["name", "address", "weight", "checks"];

/// HAProxy's own bounds for a server's weight (`set server B/S weight N`).
pub const MAX_WEIGHT: u16 = 256;
/// The weight of a server that does not name one: HAProxy's default.
pub const DEFAULT_WEIGHT: u16 = 1;

/// Reads every `[[backend]]`. A witness has none: it runs no load balancer and no checks.
/// `health` is this file's `[health]`, whose check names a server may list; `groups` its
/// VIP groups, one of which a pool follows.
pub(super) fn read_backends(
    r: &mut Reader<'_>,
    root: &Tab<'_>,
    role: Role,
    health: &HealthSection,
    groups: &[VipGroup],
) -> Vec<Backend> {
    let entries = r.tables(root, "backend");
    if role == Role::Witness && !entries.is_empty() {
        r.error(
            &root.key_span("backend"),
            "backend",
            "a witness runs no load balancer and no health checks; remove the [[backend]] entries from this file",
        );
        return Vec::new();
    }
    let mut backends = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    // Two pools driving one HAProxy backend would fight over its servers' states.
    let mut targets: HashMap<(PathBuf, String), String> = HashMap::new();
    for entry in &entries {
        let Some(backend) = read_backend(r, entry, health, groups) else {
            continue;
        };
        if let Some(first) = names.get(&backend.name) {
            r.error(
                &entry.span_of("name"),
                entry.key("name"),
                format!(
                    "backend {:?} is already defined as {first}; give each pool its own name",
                    backend.name
                ),
            );
            continue;
        }
        names.insert(backend.name.clone(), entry.path.clone());
        let target = (
            backend.haproxy.socket.clone(),
            backend.haproxy.backend.clone(),
        );
        if let Some(first) = targets.get(&target) {
            r.error(
                &entry.span_of("haproxy"),
                entry.key("haproxy"),
                format!(
                    "{first} already drives HAProxy backend {:?} on {}; two pools would overwrite each other's server states: name another `backend` or merge the pools",
                    target.1,
                    target.0.display()
                ),
            );
            continue;
        }
        targets.insert(target, entry.path.clone());
        backends.push(backend);
    }
    backends
}

fn read_backend(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    health: &HealthSection,
    groups: &[VipGroup],
) -> Option<Backend> {
    r.unknown_keys(t, BACKEND_KEYS);
    let name = if r.require(t, "name", "\"crm\"") {
        r.string(t, "name")
    } else {
        None
    };
    let name = name.and_then(|n| match valid_name(&n.value, 32, false) {
        Ok(()) => Some(n),
        Err(why) => {
            r.error(&n.span, t.key("name"), why);
            None
        }
    });
    let haproxy = if r.require_with(
        t,
        "haproxy",
        "missing; add `haproxy = { socket = \"/run/haproxy/admin.sock\", backend = \"crm\" }` (HAProxy's Runtime API socket, level admin, and the backend's name in haproxy.cfg)",
    ) {
        r.table(t, "haproxy")
            .and_then(|h| read_haproxy(r, &h, name.as_ref()))
    } else {
        None
    };
    let group = read_group(r, t, groups);
    let servers = read_servers(r, t, health);
    Some(Backend {
        name: name?.value,
        group: group?,
        haproxy: haproxy?,
        servers: servers?,
    })
}

/// `group`: the VIP group whose holder's checks decide up and down for the pool; the
/// file's first group when absent (a file with no readable group reports that itself).
fn read_group(r: &mut Reader<'_>, t: &Tab<'_>, groups: &[VipGroup]) -> Option<String> {
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    match r.string(t, "group") {
        Some(g) if names.contains(&g.value.as_str()) => Some(g.value),
        Some(g) => {
            r.error(
                &g.span,
                t.key("group"),
                format!(
                    "{:?} is not a [[vip_group]] of this file; name the group whose VIP the pool serves: {}",
                    g.value,
                    names.join(", ")
                ),
            );
            None
        }
        None if t.has("group") => None,
        None => names.first().map(ToString::to_string),
    }
}

/// `haproxy = { socket = "...", backend = "..." }`; the backend defaults to the pool's name.
fn read_haproxy(
    r: &mut Reader<'_>,
    h: &Tab<'_>,
    pool: Option<&At<String>>,
) -> Option<HaproxyTarget> {
    r.unknown_keys(h, HAPROXY_KEYS);
    let socket = if r.require(h, "socket", "\"/run/haproxy/admin.sock\"") {
        r.path(h, "socket")
    } else {
        None
    };
    let backend = match r.non_empty_string(h, "backend") {
        Some(b) => match valid_name(&b.value, 64, true) {
            Ok(()) => Some(b.value),
            Err(why) => {
                r.error(&b.span, h.key("backend"), why);
                None
            }
        },
        None if h.has("backend") => None,
        None => pool.map(|p| p.value.clone()),
    };
    Some(HaproxyTarget {
        socket: socket?.value,
        backend: backend?,
    })
}

/// The `[[backend.server]]` entries: at least one, each name once.
fn read_servers(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    health: &HealthSection,
) -> Option<Vec<BackendServer>> {
    if !r.require_with(
        t,
        "server",
        "missing; add a [[backend.server]] entry with `name`, `address` and `checks` for every server of the pool",
    ) {
        return None;
    }
    let entries = r.tables(t, "server");
    let mut servers = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut all_read = !entries.is_empty();
    for entry in &entries {
        let Some(server) = read_server(r, entry, health) else {
            all_read = false;
            continue;
        };
        if let Some(first) = names.get(&server.value.name) {
            r.error(
                &server.span,
                entry.key("name"),
                format!(
                    "server {:?} is already listed as {first}; list each server of a pool once",
                    server.value.name
                ),
            );
            all_read = false;
            continue;
        }
        names.insert(server.value.name.clone(), entry.path.clone());
        servers.push(server.value);
    }
    all_read.then_some(servers)
}

/// One `[[backend.server]]`; its span is its name's, for the duplicate check.
fn read_server(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    health: &HealthSection,
) -> Option<At<BackendServer>> {
    r.unknown_keys(t, SERVER_KEYS);
    // HAProxy's server names may use upper case, '_' and '.', so the relaxed rule.
    let name = if r.require(t, "name", "\"crm-1\"") {
        r.string(t, "name")
    } else {
        None
    };
    let name = name.and_then(|n| match valid_name(&n.value, 64, true) {
        Ok(()) => Some(n),
        Err(why) => {
            r.error(&n.span, t.key("name"), why);
            None
        }
    });
    let address = if r.require(t, "address", "\"198.18.0.21:8080\"") {
        r.socket_addr(t, "address")
    } else {
        None
    };
    let weight = r
        .integer(t, "weight", 0..=i64::from(MAX_WEIGHT))
        .map_or(Some(DEFAULT_WEIGHT), |w| u16::try_from(w.value).ok());
    let checks = read_server_checks(r, t, health);
    let name = name?;
    Some(At {
        value: BackendServer {
            name: name.value,
            address: address?.value,
            weight: weight?,
            checks: checks?,
        },
        span: name.span,
    })
}

/// `checks`: names of this file's `[[health.check]]` entries (at least one). The server is
/// up while all of them pass, after their rise/fall.
fn read_server_checks(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    health: &HealthSection,
) -> Option<Vec<String>> {
    if !r.require(t, "checks", "[\"crm-1-http\"]") {
        return None;
    }
    let list = r.string_array(t, "checks")?;
    if list.value.is_empty() {
        r.error(
            &list.span,
            t.key("checks"),
            "is empty; name the [[health.check]] entries that decide whether this server is up, like [\"crm-1-http\"]",
        );
        return None;
    }
    let known: Vec<&str> = health.checks.iter().map(|c| c.name.as_str()).collect();
    let mut ok = true;
    for (i, check) in list.value.iter().enumerate() {
        if !known.contains(&check.value.as_str()) {
            ok = false;
            let hint = if known.is_empty() {
                "this file has no [[health.check]] entries; add one that probes this server"
                    .to_string()
            } else {
                format!("the checks here are {}", known.join(", "))
            };
            r.error(
                &check.span,
                format!("{}[{i}]", t.key("checks")),
                format!(
                    "{:?} is not a [[health.check]] of this file; {hint}",
                    check.value
                ),
            );
        }
    }
    ok.then(|| list.value.into_iter().map(|c| c.value).collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigErrors};

    /// The config tests' gateway file, which has one check, `crm-1-http`.
    const BASE: &str = crate::config::tests::GATEWAY;

    const POOL: &str = r#"
[[backend]]
name = "crm"
haproxy = { socket = "/run/haproxy/admin.sock", backend = "crm-pool" }
[[backend.server]]
name = "crm-1"
address = "198.18.0.21:8080"
weight = 10
checks = ["crm-1-http"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_str(Path::new("gw-a.toml"), text)
    }

    /// Every error of `text` as "line:col key: message".
    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ConfigErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_pool_reads_with_its_defaults() {
        let config = parse(&format!("{BASE}{POOL}")).expect("valid");
        let pool = &config.backends[0];
        assert_eq!(pool.name, "crm");
        assert_eq!(pool.haproxy.socket, Path::new("/run/haproxy/admin.sock"));
        assert_eq!(pool.haproxy.backend, "crm-pool");
        let server = &pool.servers[0];
        assert_eq!(
            (
                server.name.as_str(),
                server.weight,
                server.address.to_string()
            ),
            ("crm-1", 10, "198.18.0.21:8080".to_string())
        );
        assert_eq!(server.checks, ["crm-1-http"]);
        // The pool follows the file's first group unless it names one.
        assert_eq!(pool.group, "crm");

        // The HAProxy backend defaults to the pool's name, the weight to HAProxy's 1.
        let short = POOL
            .replace(", backend = \"crm-pool\"", "")
            .replace("weight = 10\n", "");
        let config = parse(&format!("{BASE}{short}")).expect("valid");
        assert_eq!(config.backends[0].haproxy.backend, "crm");
        assert_eq!(config.backends[0].servers[0].weight, 1);
        assert!(parse(BASE).expect("valid").backends.is_empty());
    }

    #[test]
    fn every_rule_names_file_line_key_and_value() {
        let rows: &[(&str, &str, &str)] = &[
            (
                "checks = [\"crm-1-http\"]",
                "checks = [\"crm-9-http\"]",
                "gw-a.toml:36:11: backend[0].server[0].checks[0]: \"crm-9-http\" is not a [[health.check]] of this file; the checks here are crm-1-http",
            ),
            (
                "checks = [\"crm-1-http\"]",
                "checks = []",
                "gw-a.toml:36:10: backend[0].server[0].checks: is empty;",
            ),
            (
                "weight = 10",
                "weight = 300",
                "gw-a.toml:35:10: backend[0].server[0].weight: 300 is out of range; it must be a whole number from 0 to 256",
            ),
            (
                "address = \"198.18.0.21:8080\"",
                "address = \"crm-1\"",
                "gw-a.toml:34:11: backend[0].server[0].address: \"crm-1\" is not an IP address with a port",
            ),
            (
                "name = \"crm-1\"",
                "name = \"crm 1\"",
                "gw-a.toml:33:8: backend[0].server[0].name: \"crm 1\" is not a valid name",
            ),
            (
                "socket = \"/run/haproxy/admin.sock\", ",
                "",
                "gw-a.toml:31:11: backend[0].haproxy.socket: missing; add `socket = \"/run/haproxy/admin.sock\"`",
            ),
            (
                "backend = \"crm-pool\"",
                "backend = \"\"",
                "backend[0].haproxy.backend: is empty",
            ),
            (
                "haproxy = {",
                "haproxi = {",
                "gw-a.toml:31:1: backend[0].haproxi: unknown key `haproxi`; did you mean `haproxy`?",
            ),
            (
                "name = \"crm\"\n",
                "name = \"crm\"\ngroup = \"web\"\n",
                "gw-a.toml:31:9: backend[0].group: \"web\" is not a [[vip_group]] of this file; name the group whose VIP the pool serves: crm",
            ),
            (
                "weight = 10",
                "weight = 10\nport = 80",
                "gw-a.toml:36:1: backend[0].server[0].port: unknown key `port`",
            ),
        ];
        for (from, to, want) in rows {
            assert!(POOL.contains(from), "{from:?} is not in the pool");
            let text = format!("{BASE}{}", POOL.replacen(from, to, 1));
            let got = errors(&text);
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{to:?}: want {want:?}, got {got:#?}"
            );
        }
    }

    #[test]
    fn names_and_targets_are_used_once() {
        let twice = format!("{BASE}{POOL}{POOL}");
        let got = errors(&twice);
        assert!(
            got.iter()
                .any(|e| e
                    .contains("backend[1].name: backend \"crm\" is already defined as backend[0]")),
            "{got:#?}"
        );
        let same_target = format!(
            "{BASE}{POOL}{}",
            POOL.replace("name = \"crm\"", "name = \"crm-b\"")
        );
        let got = errors(&same_target);
        assert!(
            got.iter().any(|e| e.contains(
                "backend[1].haproxy: backend[0] already drives HAProxy backend \"crm-pool\""
            )),
            "{got:#?}"
        );
        let server_twice = format!(
            "{BASE}{POOL}[[backend.server]]\nname = \"crm-1\"\naddress = \"198.18.0.22:8080\"\nchecks = [\"crm-1-http\"]\n"
        );
        let got = errors(&server_twice);
        assert!(
            got.iter().any(|e| e.contains("backend[0].server[1].name: server \"crm-1\" is already listed as backend[0].server[0]")),
            "{got:#?}"
        );
        let no_servers = POOL.split("[[backend.server]]").next().unwrap_or_default();
        let got = errors(&format!("{BASE}{no_servers}"));
        assert!(
            got.iter()
                .any(|e| e.contains("backend[0].server: missing; add a [[backend.server]]")),
            "{got:#?}"
        );
    }

    #[test]
    fn gateways_with_different_pools_are_warned_about() {
        let a = parse(&format!("{BASE}{POOL}")).expect("valid");
        let b_text = format!("{BASE}{POOL}")
            .replace("name = \"gw-a\"\nrole", "name = \"gw-b\"\nrole")
            .replace(
                "listen = \"198.18.0.11:7400\"",
                "listen = \"198.18.0.12:7400\"",
            )
            .replace("priority = 150", "priority = 100");
        let b = Config::from_str(Path::new("gw-b.toml"), &b_text).expect("valid");
        assert_eq!(
            crate::config::cross_check(&[a.clone(), b.clone()]),
            Vec::<String>::new()
        );
        let heavier = Config::from_str(
            Path::new("gw-b.toml"),
            &b_text.replace("weight = 10", "weight = 20"),
        )
        .expect("valid");
        let warnings = crate::config::cross_check(&[a, heavier]);
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].contains("gw-a.toml and gw-b.toml have different [[backend]] pools (gw-a.toml: crm (group crm: crm-1 198.18.0.21:8080 weight 10); gw-b.toml: crm (group crm: crm-1 198.18.0.21:8080 weight 20))"),
            "{warnings:#?}"
        );
    }

    /// The pools of conf/ (which the lab runs, with conf/haproxy.cfg) are valid and the two
    /// gateways agree.
    #[test]
    fn the_example_in_conf_is_valid() {
        let files = [
            ("conf/gw-a.toml", include_str!("../../conf/gw-a.toml")),
            ("conf/gw-b.toml", include_str!("../../conf/gw-b.toml")),
        ];
        let configs: Vec<Config> = files
            .iter()
            .map(|(name, text)| {
                Config::from_str(Path::new(name), text).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        for c in &configs {
            assert_eq!(c.backends.len(), 1, "{}", c.source.display());
            assert_eq!(c.backends[0].servers.len(), 2);
        }
        assert_eq!(crate::config::cross_check(&configs), Vec::<String>::new());
    }

    #[test]
    fn a_witness_has_no_backends() {
        let witness = BASE.replace("role = \"gateway\"", "role = \"witness\"");
        let got = errors(&format!("{witness}{POOL}"));
        assert!(
            got.iter()
                .any(|e| e.contains("backend: a witness runs no load balancer")),
            "{got:#?}"
        );
    }

    #[test]
    fn the_pool_of_a_server_is_found_or_the_choice_explained() {
        let two = format!(
            "{BASE}{POOL}{}",
            POOL.replace("name = \"crm\"", "name = \"crm-b\"")
                .replace("crm-pool", "crm-b")
        );
        let config = parse(&two).expect("valid");
        assert_eq!(
            config
                .backend_of(Some("crm-b"), "crm-1")
                .map(|b| b.name.as_str()),
            Ok("crm-b")
        );
        let ambiguous = config.backend_of(None, "crm-1").err().unwrap_or_default();
        assert!(
            ambiguous.contains("several pools (crm, crm-b); name one with --pool"),
            "{ambiguous}"
        );
        let unknown = config.backend_of(None, "crm-9").err().unwrap_or_default();
        assert!(
            unknown.contains("no pool has a server \"crm-9\"; pools here: crm, crm-b"),
            "{unknown}"
        );
        let config = parse(&format!("{BASE}{POOL}")).expect("valid");
        assert_eq!(
            config.backend_of(None, "crm-1").map(|b| b.name.as_str()),
            Ok("crm")
        );
    }
}
