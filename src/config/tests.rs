//! Tests of the config reader: defaults, one row per validation rule, positions, the
//! example files, and cross_check.

use std::path::Path;
use std::time::Duration;

use super::*;

/// A small valid gateway file; the rule table below mutates it one way at a time.
pub(super) const GATEWAY: &str = r#"[node]
name = "gw-a"
role = "gateway"

[cluster]
listen = "198.18.0.11:7400"
[[cluster.peers]]
name = "gw-a"
address = "198.18.0.11:7400"
[[cluster.peers]]
name = "gw-b"
address = "198.18.0.12:7400"
[[cluster.peers]]
name = "witness"
address = "198.18.0.13:7400"

[[vip_group]]
name = "crm"
interface = "eth1"
addresses = ["198.18.0.50/24"]
priority = 150

[health]
[[health.check]]
name = "crm-1-http"
kind = "http"
url = "http://198.18.0.21:8080/health"
"#;

const WITNESS: &str = r#"[node]
name = "witness"
role = "witness"

[cluster]
listen = "198.18.0.13:7400"
[[cluster.peers]]
name = "gw-a"
address = "198.18.0.11:7400"
[[cluster.peers]]
name = "gw-b"
address = "198.18.0.12:7400"
[[cluster.peers]]
name = "witness"
address = "198.18.0.13:7400"

[[vip_group]]
name = "crm"
"#;

/// The witness's entry in `GATEWAY`'s peer list, and another witness to add beside it.
const WITNESS_PEER: &str =
    "[[cluster.peers]]\nname = \"witness\"\naddress = \"198.18.0.13:7400\"\n";
const SECOND_WITNESS_PEER: &str =
    "[[cluster.peers]]\nname = \"witness-2\"\naddress = \"198.18.0.14:7400\"\n";

/// `base` with `from` replaced by `to`; panics if `from` is not there, so a row of the
/// table cannot silently test the unchanged file.
fn with(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "{from:?} is not in the base file");
    base.replacen(from, to, 1)
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str(Path::new("test.toml"), text)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected errors, the file was accepted:\n{text}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

const ADDRESS_SECOND_GROUP: &str = "[[vip_group]]\nname = \"crm2\"\ninterface = \"eth1\"\naddresses = [\"198.18.0.50/32\"]\npriority = 100\n\n[health]";
const SECOND_GROUP_SAME_NAME: &str = "[[vip_group]]\nname = \"crm\"\ninterface = \"eth1\"\naddresses = [\"198.18.0.60/24\"]\npriority = 100\n\n[health]";

#[test]
fn defaults() {
    let config = parse(GATEWAY).expect("valid");
    assert_eq!(config.source, Path::new("test.toml"));
    assert_eq!(config.node.data_dir, Path::new("/var/lib/havip"));
    assert_eq!(config.cluster.key_file, Path::new("/etc/havip/cluster.key"));
    assert!(!config.cluster.allow_even_voters);
    assert_eq!(
        config.timers,
        Timers {
            heartbeat: Duration::from_millis(128),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(500),
        }
    );
    assert_eq!(config.control.socket, Path::new("/run/havip/havip.sock"));
    assert_eq!(config.control.metrics, None);
    assert_eq!(config.voters(), 3);
    assert_eq!(
        config
            .peer("gw-b")
            .map(|p| p.address.to_string())
            .as_deref(),
        Some("198.18.0.12:7400")
    );

    let group = config.group("crm").expect("crm");
    assert!(group.failback);
    assert_eq!(group.failback_delay, Duration::from_secs(5));
    assert_eq!(group.on_all_unhealthy, OnAllUnhealthy::Keep);
    assert_eq!(group.address_lifetime, Duration::from_secs(3));
    assert_eq!(
        group.announce,
        Announce {
            burst_count: 5,
            burst_spacing: Duration::from_millis(10),
            repeat_after: Some(Duration::from_secs(2)),
            refresh: None,
        }
    );

    assert_eq!(config.health.require, Require::All);
    let check = &config.health.checks[0];
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((check.rise, check.fall, check.weight), (2, 3, 0));
    let CheckKind::Http {
        https,
        method,
        host,
        expect_status,
        expect_body,
        ca_file,
        insecure_skip_verify,
        ..
    } = &check.kind
    else {
        panic!("http check expected");
    };
    assert!(!https && !insecure_skip_verify);
    assert_eq!(*method, HttpMethod::Get);
    assert_eq!((host, expect_body, ca_file), (&None, &None, &None));
    assert!(
        expect_status.contains(200) && expect_status.contains(399) && !expect_status.contains(404)
    );

    assert_eq!(
        config.notify,
        NotifySection {
            command: None,
            timeout: Duration::from_secs(5),
            run_as: None,
        }
    );
}

#[test]
fn witness_defaults() {
    let config = parse(WITNESS).expect("valid");
    assert!(config.is_witness());
    let group = &config.vip_groups[0];
    assert_eq!(
        (
            group.name.as_str(),
            group.interface.as_str(),
            group.priority
        ),
        ("crm", "", 0)
    );
    assert!(group.addresses.is_empty());
    assert!(config.health.checks.is_empty());
}

#[test]
fn every_rule_has_an_error_with_key_and_fix() {
    let witness_with_group_keys = with(
        WITNESS,
        "name = \"crm\"\n",
        "name = \"crm\"\naddresses = [\"198.18.0.50/24\"]\n",
    );
    let witness_with_checks = format!(
        "{WITNESS}\n[[health.check]]\nname = \"x\"\nkind = \"tcp\"\naddress = \"198.18.0.21:1\"\n"
    );
    let extra_check =
        |body: &str| format!("{GATEWAY}\n[[health.check]]\nname = \"extra\"\n{body}\n");
    let timers = |body: &str| {
        with(
            GATEWAY,
            "[[vip_group]]",
            &format!("[timers]\n{body}\n\n[[vip_group]]"),
        )
    };
    let group_key = |line: &str| {
        with(
            GATEWAY,
            "priority = 150\n",
            &format!("priority = 150\n{line}\n"),
        )
    };
    let check_key = |line: &str| format!("{GATEWAY}{line}\n");

    let rows: Vec<(String, &str, &str)> = vec![
        // names and duplicates
        (
            with(
                GATEWAY,
                "name = \"witness\"\naddress",
                "name = \"gw-b\"\naddress",
            ),
            "cluster.peers[2].name",
            "already listed as cluster.peers[1]",
        ),
        (
            with(
                GATEWAY,
                "address = \"198.18.0.13:7400\"",
                "address = \"198.18.0.12:7400\"",
            ),
            "cluster.peers[2].address",
            "already the address of cluster.peers[1]",
        ),
        (
            with(
                GATEWAY,
                "address = \"198.18.0.13:7400\"",
                "address = \"0.0.0.0:7400\"",
            ),
            "cluster.peers[2].address",
            "cannot be dialled",
        ),
        (
            with(GATEWAY, "[health]", SECOND_GROUP_SAME_NAME),
            "vip_group[1].name",
            "already defined as vip_group[0]",
        ),
        (
            extra_check("kind = \"tcp\"\naddress = \"a:1\"")
                .replace("name = \"extra\"", "name = \"crm-1-http\""),
            "health.check[1].name",
            "already used by health.check[0]",
        ),
        (
            with(GATEWAY, "name = \"gw-a\"\nrole", "name = \"GW_A\"\nrole"),
            "node.name",
            "not a valid name",
        ),
        (
            with(GATEWAY, "role = \"gateway\"", "role = \"master\""),
            "node.role",
            "write \"gateway\" or \"witness\"",
        ),
        // the cluster as a whole
        (
            with(GATEWAY, "name = \"gw-a\"\nrole", "name = \"gw-c\"\nrole"),
            "cluster.peers",
            "every node lists all nodes, itself included",
        ),
        (
            with(
                GATEWAY,
                "listen = \"198.18.0.11:7400\"",
                "listen = \"198.18.0.11:7401\"",
            ),
            "cluster.listen",
            "port 7401 differs",
        ),
        (
            with(
                GATEWAY,
                "listen = \"198.18.0.11:7400\"",
                "listen = \"198.18.0.99:7400\"",
            ),
            "cluster.listen",
            "is not this node's peer address",
        ),
        (
            with(
                GATEWAY,
                "[[cluster.peers]]\nname = \"witness\"\naddress = \"198.18.0.13:7400\"\n",
                "",
            ),
            "cluster.peers",
            "2 voters: a majority is 2, so they survive the loss of no node",
        ),
        (
            with(
                GATEWAY,
                WITNESS_PEER,
                &format!("{WITNESS_PEER}{SECOND_WITNESS_PEER}"),
            ),
            "cluster.peers",
            "4 voters: a majority is 3, so they survive the loss of one node, no more than 3 voters would",
        ),
        (
            with(
                GATEWAY,
                "listen = \"198.18.0.11:7400\"",
                "listen = \"198.18.0.11\"",
            ),
            "cluster.listen",
            "not an IP address with a port",
        ),
        // timers
        (
            timers("heartbeat = \"134ms\""),
            "timers.heartbeat",
            "at most a third of the minimum election timeout",
        ),
        (
            // A third of 30 ms, but the hold lease left is 10 ms (30 ms less two 10 ms ticks).
            timers("heartbeat = \"10ms\"\nelection_timeout = \"30ms..60ms\""),
            "timers.heartbeat",
            "use heartbeat = \"5ms\" or election_timeout = \"40ms..70ms\"",
        ),
        (
            timers("election_timeout = \"300ms..150ms\""),
            "timers.election_timeout",
            "must be below the maximum",
        ),
        (
            timers("election_timeout = \"150ms\""),
            "timers.election_timeout",
            "is not a range",
        ),
        (
            timers("heartbeat = \"10s\"\nelection_timeout = \"61s..70s\""),
            "timers.election_timeout",
            "a lease over 1m",
        ),
        (
            timers("election_timeout = \"150..300ms\""),
            "timers.election_timeout",
            "has no unit",
        ),
        (
            timers("heartbeat = 50"),
            "timers.heartbeat",
            "write \"50s\" or \"50ms\"",
        ),
        (
            timers("heartbeat = \"0s\""),
            "timers.heartbeat",
            "longer than 0s",
        ),
        // groups
        (
            with(GATEWAY, "priority = 150", "priority = 0"),
            "vip_group[0].priority",
            "out of range",
        ),
        (
            with(GATEWAY, "priority = 150", "priority = 255"),
            "vip_group[0].priority",
            "from 1 to 254",
        ),
        (
            with(GATEWAY, "priority = 150", "priority = \"150\""),
            "vip_group[0].priority",
            "is a string; it must be a whole number",
        ),
        (
            with(GATEWAY, "priority = 150\n", ""),
            "vip_group[0].priority",
            "missing; add `priority = 100",
        ),
        (
            with(
                GATEWAY,
                "addresses = [\"198.18.0.50/24\"]",
                "addresses = []",
            ),
            "vip_group[0].addresses",
            "is empty",
        ),
        (
            with(GATEWAY, "interface = \"eth1\"", "interface = \"\""),
            "vip_group[0].interface",
            "is empty",
        ),
        (
            with(
                GATEWAY,
                "interface = \"eth1\"",
                "interface = \"a-very-long-interface\"",
            ),
            "vip_group[0].interface",
            "at most 15 characters",
        ),
        (
            with(
                GATEWAY,
                "\"198.18.0.50/24\"",
                "\"198.18.0.50/24\", \"198.18.0.300/24\"",
            ),
            "vip_group[0].addresses[1]",
            "is not a CIDR address; write it like",
        ),
        (
            with(GATEWAY, "\"198.18.0.50/24\"", "\"198.18.0.50\""),
            "vip_group[0].addresses[0]",
            "add the prefix length",
        ),
        (
            with(GATEWAY, "\"198.18.0.50/24\"", "\"198.18.0.50/24\", 7"),
            "vip_group[0].addresses[1]",
            "must be a string",
        ),
        (
            with(GATEWAY, "[health]", ADDRESS_SECOND_GROUP),
            "vip_group[1].addresses[0]",
            "already listed at vip_group[0].addresses[0]",
        ),
        (
            group_key("failback_dealy = \"5s\""),
            "vip_group[0].failback_dealy",
            "did you mean `failback_delay`?",
        ),
        (
            group_key("failback_delay = 5"),
            "vip_group[0].failback_delay",
            "write \"5s\" or \"5ms\"",
        ),
        (
            group_key("failback = \"yes\""),
            "vip_group[0].failback",
            "true or false",
        ),
        (
            group_key("on_all_unhealthy = \"drop\""),
            "vip_group[0].on_all_unhealthy",
            "\"keep\" or \"release\"",
        ),
        (
            group_key("address_lifetime = \"500ms\""),
            "vip_group[0].address_lifetime",
            "from \"1s\" to \"60s\"",
        ),
        (
            group_key("address_lifetime = \"2m\""),
            "vip_group[0].address_lifetime",
            "out of range",
        ),
        (
            group_key("announce = { burst_count = 0 }"),
            "vip_group[0].announce.burst_count",
            "from 1 to 100",
        ),
        (
            group_key("announce = { burst_spacng = \"5ms\" }"),
            "vip_group[0].announce.burst_spacng",
            "did you mean `burst_spacing`?",
        ),
        (
            with(GATEWAY, "[[vip_group]]", "[vip_group]"),
            "vip_group",
            "double brackets",
        ),
        // witnesses
        (
            witness_with_group_keys,
            "vip_group[0].addresses",
            "a witness never holds a VIP; remove `vip_group[0].addresses`",
        ),
        (
            witness_with_checks,
            "health.check",
            "a witness never holds a VIP",
        ),
        // health
        (
            check_key("timeout = \"2s\""),
            "health.check[0].timeout",
            "shorter than the interval",
        ),
        (
            check_key("interval = \"500ms\""),
            "health.check[0].interval",
            "shorter than the interval",
        ),
        (
            check_key("rise = 0"),
            "health.check[0].rise",
            "out of range",
        ),
        (
            check_key("fall = 0"),
            "health.check[0].fall",
            "out of range",
        ),
        (
            check_key("weight = 300"),
            "health.check[0].weight",
            "from -254 to 254",
        ),
        (
            with(GATEWAY, "[health]\n", "[health]\nrequire = 2\n"),
            "health.require",
            "from 1 to 1",
        ),
        (
            with(GATEWAY, "[health]\n", "[health]\nrequire = \"most\"\n"),
            "health.require",
            "\"all\", \"any\"",
        ),
        (
            with(GATEWAY, "http://198.18.0.21", "https://198.18.0.21"),
            "health.check[0].url",
            "or set `kind = \"https\"`",
        ),
        (
            with(GATEWAY, "http://198.18.0.21", "ftp://198.18.0.21"),
            "health.check[0].url",
            "must start with \"http://\"",
        ),
        (
            with(GATEWAY, "kind = \"http\"", "kind = \"https\""),
            "health.check[0].url",
            "must start with \"https://\"",
        ),
        (
            with(GATEWAY, "kind = \"http\"", "kind = \"ping\""),
            "health.check[0].kind",
            "`http`, `https`, `tcp` or `exec`",
        ),
        (
            check_key("ca_file = \"/etc/havip/ca.pem\""),
            "health.check[0].ca_file",
            "applies to https checks",
        ),
        (
            check_key("expect_status = \"600\""),
            "health.check[0].expect_status",
            "not an HTTP status code",
        ),
        (
            check_key("expect_status = \"399-200\""),
            "health.check[0].expect_status",
            "empty range",
        ),
        (
            check_key("method = \"POST\""),
            "health.check[0].method",
            "\"GET\" or \"HEAD\"",
        ),
        (
            extra_check("kind = \"tcp\""),
            "health.check[1].address",
            "missing; add `address = ",
        ),
        (
            extra_check("kind = \"tcp\"\naddress = \"198.18.0.21\""),
            "health.check[1].address",
            "not host:port",
        ),
        (
            extra_check("kind = \"tcp\"\naddress = \"198.18.0.21:5432\"\nexpect = \"+PONG\""),
            "health.check[1].expect",
            "needs `send`",
        ),
        (
            extra_check("kind = \"tcp\"\naddress = \"198.18.0.21:5432\"\nurl = \"http://x/\""),
            "health.check[1].url",
            "applies to http and https checks, not to a tcp check",
        ),
        (
            extra_check("kind = \"exec\"\ncommand = []"),
            "health.check[1].command",
            "is empty",
        ),
        (
            extra_check("kind = \"exec\"\ncommand = \"check-crm\""),
            "health.check[1].command",
            "an array of strings",
        ),
        (
            extra_check("kind = \"exec\"\ncommand = [\"check-crm\"]"),
            "health.check[1].command[0]",
            "absolute path",
        ),
        (
            extra_check("kind = \"exec\""),
            "health.check[1].command",
            "missing",
        ),
        (
            with(GATEWAY, "[health]\n", "[health]\nrun_as = \"Root Admin\"\n"),
            "health.run_as",
            "adduser --system",
        ),
        (
            format!("{GATEWAY}\n[notify]\ncommand = [\"/bin/true\"]\nrun_as = \"9lives\"\n"),
            "notify.run_as",
            "is not a user name",
        ),
        (
            extra_check(
                "kind = \"https\"\nurl = \"https://x/\"\nca_file = \"/ca.pem\"\ninsecure_skip_verify = true",
            ),
            "health.check[1].ca_file",
            "contradict",
        ),
        // unknown keys, sections, syntax
        (
            format!("[timer]\nheartbeat = \"50ms\"\n{GATEWAY}"),
            "timer",
            "did you mean `timers`?",
        ),
        (
            format!("[notify]\ncommand = [\"notify\"]\n{GATEWAY}"),
            "notify.command[0]",
            "absolute path",
        ),
        (
            format!("[notify]\ncolor = 1\n{GATEWAY}"),
            "notify.color",
            "the keys here are `command`, `timeout` or `run_as`",
        ),
        (
            format!("[control]\nmetrics = \"localhost:9400\"\n{GATEWAY}"),
            "control.metrics",
            "not an IP address with a port",
        ),
        (
            with(GATEWAY, "[node]\nname = \"gw-a\"\nrole = \"gateway\"\n", ""),
            "node",
            "missing; add a [node] section",
        ),
        (
            with(GATEWAY, "priority = 150", "priority = 150\npriority = 100"),
            "",
            "not valid TOML",
        ),
    ];

    for (text, key, needle) in rows {
        let errors = errors(&text);
        assert!(
            errors
                .iter()
                .any(|e| e.key == key && e.message.contains(needle)),
            "no error at `{key}` containing {needle:?}; got:\n{}\nfile:\n{text}",
            ConfigErrors(errors.clone())
        );
        for e in &errors {
            assert_eq!(e.file, Path::new("test.toml"));
        }
    }
}

#[test]
fn allowed_variants_are_accepted() {
    let accepted = [
        with(
            GATEWAY,
            "listen = \"198.18.0.11:7400\"",
            "listen = \"0.0.0.0:7400\"",
        ),
        with(
            &with(
                GATEWAY,
                "[[cluster.peers]]\nname = \"witness\"\naddress = \"198.18.0.13:7400\"\n",
                "",
            ),
            "listen = \"198.18.0.11:7400\"",
            "listen = \"198.18.0.11:7400\"\nallow_even_voters = true",
        ),
        with(
            GATEWAY,
            "\"198.18.0.50/24\"",
            "\"198.18.0.50/32\", \"2001:db8::50/64\"",
        ),
        // Five voters: two gateways, three witnesses.
        with(
            GATEWAY,
            WITNESS_PEER,
            &format!(
                "{WITNESS_PEER}{SECOND_WITNESS_PEER}[[cluster.peers]]\nname = \"witness-3\"\naddress = \"198.18.0.15:7400\"\n"
            ),
        ),
        format!("{GATEWAY}expect_status = [200, \"300-302\"]\nmethod = \"head\"\n"),
        format!(
            "{GATEWAY}[[health.check]]\nname = \"veto-free\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\nweight = -20\n"
        ),
        with(GATEWAY, "[health]\n", "[health]\nrequire = 1\n"),
        with(GATEWAY, "[health]\n", "[health]\nrequire = \"any\"\n"),
        // Inline tables are the same TOML as sections.
        with(
            GATEWAY,
            "priority = 150\n",
            "priority = 150\nannounce = { repeat_after = \"0s\", refresh = \"30s\" }\n",
        ),
    ];
    for text in accepted {
        if let Err(e) = parse(&text) {
            panic!("rejected:\n{e}\nfile:\n{text}");
        }
    }
    let config = parse(&with(
        GATEWAY,
        "priority = 150\n",
        "priority = 150\nannounce = { repeat_after = \"0s\", refresh = \"30s\" }\n",
    ))
    .expect("valid");
    assert_eq!(config.vip_groups[0].announce.repeat_after, None);
    assert_eq!(
        config.vip_groups[0].announce.refresh,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn all_errors_of_a_file_at_once() {
    let text = with(
        &with(
            &with(GATEWAY, "priority = 150", "priority = 999"),
            "interface = \"eth1\"",
            "interfce = \"eth1\"",
        ),
        "url = \"http://198.18.0.21:8080/health\"",
        "url = \"http://198.18.0.21:8080/health\"\ntimeout = \"5s\"",
    );
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    // A misspelt key is one error (unknown, with the suggestion), not also "missing".
    assert_eq!(
        keys,
        [
            "vip_group[0].interfce",
            "vip_group[0].priority",
            "health.check[0].timeout"
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
    let three = with(
        &with(GATEWAY, "priority = 150", "priority = 999"),
        "role = \"gateway\"",
        "role = \"gateway\"\ncolour = 1",
    );
    let three = with(&three, "url = \"http://", "url = \"tcp://");
    assert_eq!(self::errors(&three).len(), 3);
}

#[test]
fn positions_point_at_the_offending_value() {
    let text = with(
        GATEWAY,
        "\"198.18.0.50/24\"",
        "\"198.18.0.50/24\", \"198.18.0.300/24\"",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    // Line 20 is `addresses = ["198.18.0.50/24", "198.18.0.300/24"]`; the bad one starts at column 32.
    assert_eq!(
        text.lines().nth(19).and_then(|l| l.find("\"198.18.0.300")),
        Some(31)
    );
    assert_eq!(errors[0].position, Some((20, 32)));
    assert_eq!(
        errors[0].to_string(),
        "test.toml:20:32: vip_group[0].addresses[1]: \"198.18.0.300/24\" is not a CIDR address; write it like \"198.18.0.50/24\" or \"2001:db8::50/64\""
    );

    let unknown = errors_at(
        &with(
            GATEWAY,
            "role = \"gateway\"",
            "role = \"gateway\"\n  colour = 1",
        ),
        "node.colour",
    );
    assert_eq!(unknown, Some((4, 3)), "unknown keys point at the key");

    let missing = errors_at(
        &with(GATEWAY, "priority = 150\n", ""),
        "vip_group[0].priority",
    );
    assert_eq!(
        missing,
        Some((17, 1)),
        "missing keys point at the table's header"
    );

    let syntax = self::errors(&with(GATEWAY, "priority = 150", "priority = = 150"));
    assert_eq!(syntax.len(), 1);
    assert_eq!(syntax[0].position.map(|p| p.0), Some(21), "{}", syntax[0]);
    assert!(
        syntax[0].to_string().starts_with("test.toml:21:"),
        "{}",
        syntax[0]
    );
}

fn errors_at(text: &str, key: &str) -> Option<(usize, usize)> {
    errors(text)
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| e.position)
}

#[test]
fn display_is_one_error_per_line() {
    let text = with(
        &with(GATEWAY, "priority = 150", "priority = 0"),
        "interface = \"eth1\"",
        "interface = \"\"",
    );
    let shown = parse(&text).expect_err("invalid").to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines[0].starts_with("test.toml:19:13: vip_group[0].interface: "),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("test.toml:21:12: vip_group[0].priority: "),
        "{shown}"
    );
}

#[test]
fn status_sets() {
    let single = StatusSet::parse("200").expect("200");
    assert!(single.contains(200) && !single.contains(201));
    let range = StatusSet::parse("200-399").expect("range");
    assert!(
        range.contains(200) && range.contains(301) && range.contains(399) && !range.contains(400)
    );
    assert_eq!(range.to_string(), "200-399");
    assert!(StatusSet::parse("99").is_err());
    assert!(StatusSet::parse("abc").is_err());
    assert!(StatusSet::parse("400-200").is_err());

    let listed = |snippet: &str| {
        let config = parse(&format!("{GATEWAY}expect_status = {snippet}\n")).expect("valid");
        match &config.health.checks[0].kind {
            CheckKind::Http { expect_status, .. } => expect_status.clone(),
            other => panic!("{other:?}"),
        }
    };
    let list = listed("[200, 204]");
    assert!(list.contains(200) && list.contains(204) && !list.contains(201));
    assert_eq!(list.to_string(), "200,204");
    assert!(listed("200").contains(200));
    assert!(listed("\"200-399\"").contains(302));
    let mixed = listed("[\"200-299\", 404]");
    assert!(mixed.contains(250) && mixed.contains(404) && !mixed.contains(403));
}

fn example(name: &str, text: &str) -> Config {
    Config::from_str(Path::new(name), text).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

fn examples() -> Vec<Config> {
    vec![
        example("conf/gw-a.toml", include_str!("../../conf/gw-a.toml")),
        example("conf/gw-b.toml", include_str!("../../conf/gw-b.toml")),
        example("conf/witness.toml", include_str!("../../conf/witness.toml")),
    ]
}

#[test]
fn example_files_are_valid_and_agree() {
    let configs = examples();
    assert_eq!(cross_check(&configs), Vec::<String>::new());

    let [a, b, w] = [&configs[0], &configs[1], &configs[2]];
    assert_eq!(
        (
            a.group("crm").map(|g| g.priority),
            a.group("crm2").map(|g| g.priority)
        ),
        (Some(150), Some(100))
    );
    assert_eq!(
        (
            b.group("crm").map(|g| g.priority),
            b.group("crm2").map(|g| g.priority)
        ),
        (Some(100), Some(150))
    );
    let crm = a.group("crm").expect("crm");
    assert_eq!(crm.interface, "eth1");
    assert_eq!(
        crm.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["198.18.0.50/24", "2001:db8::50/64"]
    );
    assert_eq!(a.health.require, Require::Any);
    assert_eq!(a.health.checks.len(), 2);
    assert!(w.is_witness() && w.health.checks.is_empty());
    assert_eq!(
        w.vip_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["crm", "crm2"]
    );
    assert_eq!(w.voters(), 3);
}

/// The five-voter deployment (README, "Five voters"): two gateways, three witnesses, one
/// peer list; the gateways' groups are those of the three-node examples.
#[test]
fn five_voter_example_files_are_valid_and_agree() {
    let configs = vec![
        example(
            "gw-a.toml",
            include_str!("../../conf/five-voters/gw-a.toml"),
        ),
        example(
            "gw-b.toml",
            include_str!("../../conf/five-voters/gw-b.toml"),
        ),
        example(
            "witness.toml",
            include_str!("../../conf/five-voters/witness.toml"),
        ),
        example(
            "witness-crm-1.toml",
            include_str!("../../conf/five-voters/witness-crm-1.toml"),
        ),
        example(
            "witness-crm-2.toml",
            include_str!("../../conf/five-voters/witness-crm-2.toml"),
        ),
    ];
    assert_eq!(cross_check(&configs), Vec::<String>::new());
    for c in &configs {
        assert_eq!(c.voters(), 5, "{}", c.source.display());
        assert!(!c.cluster.allow_even_voters);
    }
    let witnesses: Vec<&str> = (configs.iter())
        .filter(|c| c.is_witness())
        .map(|c| c.node.name.as_str())
        .collect();
    assert_eq!(witnesses, ["witness", "witness-crm-1", "witness-crm-2"]);
    let three = examples();
    for (five, three) in configs.iter().zip(&three).take(2) {
        assert_eq!(five.vip_groups, three.vip_groups, "{}", five.node.name);
    }
}

#[test]
fn cross_check_warns_where_files_disagree() {
    let gw_a = include_str!("../../conf/gw-a.toml");
    let gw_b = include_str!("../../conf/gw-b.toml");
    let witness = include_str!("../../conf/witness.toml");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "peer lists",
            with(
                gw_b,
                "address = \"198.18.0.13:7400\"",
                "address = \"198.18.0.14:7400\"",
            ),
            "list different peers",
        ),
        (
            "timers",
            with(gw_b, "heartbeat = \"128ms\"", "heartbeat = \"40ms\""),
            "different [timers]",
        ),
        (
            "groups listed",
            with(
                gw_b,
                "[[vip_group]]\nname = \"crm2\"",
                "[[vip_group]]\nname = \"crm3\"",
            ),
            "list different vip_groups (only in conf/gw-a.toml: crm2; only in conf/gw-b.toml: crm3)",
        ),
        (
            "addresses",
            with(gw_b, "[\"198.18.0.51/24\"]", "[\"198.18.0.52/24\"]"),
            "group \"crm2\" has addresses",
        ),
        (
            "priority tie",
            with(
                gw_b,
                "priority = 150             #",
                "priority = 100             #",
            ),
            "both have priority 100; ties are broken by node name",
        ),
        (
            "same node name",
            with(
                gw_b,
                "name = \"gw-b\"               #",
                "name = \"gw-a\"               #",
            )
            .replace(
                "listen = \"198.18.0.12:7400\"",
                "listen = \"198.18.0.11:7400\"",
            ),
            "both claim node name \"gw-a\"",
        ),
    ];
    for (what, changed_b, needle) in cases {
        let configs = vec![
            example("conf/gw-a.toml", gw_a),
            example("conf/gw-b.toml", &changed_b),
            example("conf/witness.toml", witness),
        ];
        let warnings = cross_check(&configs);
        assert!(
            warnings.iter().any(|w| w.contains(needle)
                && w.contains("conf/gw-a.toml")
                && w.contains("conf/gw-b.toml")),
            "{what}: no warning containing {needle:?} naming both files; got {warnings:#?}"
        );
    }
    assert!(cross_check(&[]).is_empty());
}

#[test]
fn load_checks_the_key_file() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("gw-a.toml");
    // A relative key_file is taken relative to the config file's directory.
    let text = with(
        GATEWAY,
        "listen = \"198.18.0.11:7400\"",
        "listen = \"198.18.0.11:7400\"\nkey_file = \"cluster.key\"",
    );
    std::fs::write(&config_path, &text).expect("write config");

    let missing = Config::load(&config_path).expect_err("no key file yet");
    assert_eq!(missing.0.len(), 1, "{missing}");
    assert_eq!(missing.0[0].key, "cluster.key_file");
    assert_eq!(missing.0[0].position, Some((7, 12)));
    assert!(
        missing.0[0].message.contains("havip keygen --out"),
        "{missing}"
    );

    let key_path = dir.path().join("cluster.key");
    crate::key::ClusterKey::generate()
        .write_new(&key_path)
        .expect("keygen");
    let config = Config::load(&config_path).expect("valid with key");
    assert_eq!(config.cluster.key_file, key_path);

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = Config::load(&config_path).expect_err("group-readable key");
    assert!(open.to_string().contains("chmod 600"), "{open}");

    // Key errors come with the file's other errors, not instead of them.
    std::fs::write(&config_path, with(&text, "priority = 150", "priority = 0"))
        .expect("write config");
    assert_eq!(
        Config::load(&config_path).expect_err("two errors").0.len(),
        2
    );

    let absent = Config::load(&dir.path().join("nope.toml")).expect_err("no such file");
    assert!(
        absent.to_string().contains("cannot read the config file"),
        "{absent}"
    );
}

/// Issue 14 item 7: a duration too long for any arithmetic on it is an error naming the
/// key, not a panic (`heartbeat * 3` overflowed on "10000000000000000000s").
#[test]
fn huge_durations_are_errors_with_the_key_not_panics() {
    for (from, to, key) in [
        (
            "[health]",
            "[timers]\nheartbeat = \"10000000000000000000s\"\n\n[health]",
            "timers.heartbeat",
        ),
        (
            "priority = 150",
            "priority = 150\nfailback_delay = \"25h\"",
            "vip_group[0].failback_delay",
        ),
    ] {
        let text = with(GATEWAY, from, to);
        assert_ne!(text, GATEWAY, "{from} is in the base config");
        let found = errors(&text);
        assert!(
            found
                .iter()
                .any(|e| e.key == key && e.message.contains("longer than 24h")),
            "{key}: {found:?}"
        );
    }
    // A decimal whose digits overflow the arithmetic is refused too.
    assert!(
        super::parse_duration("340282366920938463463374607431.99999999999h").is_err(),
        "an overflowing decimal"
    );
}

#[test]
fn two_node_names_with_one_node_id_are_found() {
    let names = ["gw-a", "gw-b", "witness"];
    assert!(super::parse::same_ids(names.into_iter(), crate::consensus::types::node_id).is_empty());
    // With a hash that collides, the pair is named.
    let same = super::parse::same_ids(names.into_iter(), |n| n.len() as u64);
    assert_eq!(same, [("gw-a", "gw-b", 4)]);
}

#[test]
fn run_as_reaches_every_exec_check_and_the_notify_hook() {
    let text = with(
        GATEWAY,
        "[health]\n",
        "[health]\nrun_as = \"havip-check\"\n",
    ) + "[[health.check]]\nname = \"script\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n\n[notify]\ncommand = [\"/bin/true\"]\nrun_as = \"havip-hook\"\n";
    let config = parse(&text).expect("valid");
    assert_eq!(config.health.run_as.as_deref(), Some("havip-check"));
    let exec = config
        .health
        .checks
        .iter()
        .find(|c| c.name == "script")
        .expect("the exec check");
    assert_eq!(
        exec.kind,
        CheckKind::Exec {
            command: vec!["/bin/true".into()],
            run_as: Some("havip-check".into()),
        }
    );
    assert_eq!(config.notify.run_as.as_deref(), Some("havip-hook"));
}

/// `run` and `reload` (`check_children`, after `load`) refuse a `run_as` user this
/// machine does not have, naming the key and the fix; an existing one passes (as root).
#[test]
fn the_daemon_checks_that_run_as_users_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("gw-a.toml");
    crate::key::ClusterKey::generate()
        .write_new(&dir.path().join("cluster.key"))
        .expect("keygen");
    let with_users = |health: &str, notify: &str| {
        with(
            GATEWAY,
            "listen = \"198.18.0.11:7400\"",
            "listen = \"198.18.0.11:7400\"\nkey_file = \"cluster.key\"",
        )
        .replace("[health]\n", &format!("[health]\nrun_as = \"{health}\"\n"))
            + &format!("\n[notify]\ncommand = [\"/bin/true\"]\nrun_as = \"{notify}\"\n")
    };
    std::fs::write(&config_path, with_users("nobody", "havip-no-such-user")).expect("write");
    let config = Config::load(&config_path).expect("load does not look users up");
    let err = config.check_children().expect_err("no such user");
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].key, "notify.run_as");
    assert!(
        err.0[0]
            .message
            .contains("adduser --system havip-no-such-user"),
        "{err}"
    );
    std::fs::write(&config_path, with_users("nobody", "nobody")).expect("write");
    let config = Config::load(&config_path).expect("valid");
    if nix::unistd::geteuid().is_root() {
        config
            .check_children()
            .expect("both users exist, and root may switch");
    }
    assert_eq!(
        config.run_as_users(),
        [("health.run_as", "nobody"), ("notify.run_as", "nobody")]
    );
}
