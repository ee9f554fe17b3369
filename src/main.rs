//! The `havip` command: the daemon (`run`), the operator's commands that talk to it over
//! its Unix socket, and the offline tools (`check-config`, `keygen`). Exit codes: 0 ok,
//! 1 the request failed (the message says why), 2 usage or configuration error.
#![forbid(unsafe_code)]
// No `unwrap`/`expect` outside tests, as in the library (src/lib.rs says why).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};

use havip::config::{self, Config};
use havip::control::protocol::{Request, Response, StatusReport};
use havip::control::socket;
use havip::key::ClusterKey;

/// `havip --version`: the package version and the git revision it was built from
/// (build.rs; "unknown" outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HAVIP_GIT_REVISION"),
    ")"
);

const EXAMPLES: &str = "\
Examples:
  havip keygen --out /etc/havip/cluster.key     # once; copy the file to every node (mode 0600)
  havip check-config conf/gw-a.toml conf/gw-b.toml conf/witness.toml
  havip run --config /etc/havip/havip.toml      # the daemon (systemd runs this)
  havip status                                  # who is master of each group, who holds the VIPs
  havip failover --to gw-b --group crm          # move the VIP by hand (pinned until --clear)
  havip failover --clear --group crm            # let priorities and failback decide again
  havip maintenance on gw-a                     # drain gw-a: it hands over and never holds
  havip reload                                  # apply an edited config without a restart
  havip history --json | jq .                   # master changes and operator commands

Commands other than run/check-config/keygen talk to the local daemon over its Unix
socket: the one named in /etc/havip/havip.toml, or pick one with --config or --socket.
Exit codes: 0 ok, 1 the request failed, 2 usage or configuration error.";

#[derive(Parser)]
#[command(name = "havip", version = VERSION, about = "High-availability virtual IPs for Linux gateways, elected through Raft",
    long_about = "havip keeps each virtual IP on exactly one healthy gateway. The gateways (and a witness that \
never holds a VIP) elect a master per VIP group through Raft; the master holds the group's addresses only while \
a quorum acknowledges it, so a partitioned or frozen master lets go before another can be elected.",
    after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

/// Which daemon a command talks to: the control socket of --config's file, or --socket.
#[derive(Args, Clone)]
struct DaemonSocket {
    /// The node's config file; its [control] socket is used.
    #[arg(long, short, global = true, default_value = "/etc/havip/havip.toml")]
    config: PathBuf,
    /// The daemon's control socket (overrides --config).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
}

/// The subcommands. (Not `consensus::state::Command`, what a group's Raft log records.)
#[derive(Subcommand)]
enum CliCommand {
    /// Run the daemon for the node described by --config.
    #[command(
        after_help = "Example:\n  havip run --config /etc/havip/gw-a.toml\n\nSIGTERM/SIGINT: releases the VIPs, hands leadership over, flushes the store and exits 0."
    )]
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Change nothing on the host: log the VIP changes that would be made and report them in status.
        /// Without it the daemon needs CAP_NET_ADMIN and CAP_NET_RAW (exit 2 when missing).
        #[arg(long)]
        observe_only: bool,
    },
    /// Show each group's master, term, nodes and who holds the VIPs.
    #[command(
        after_help = "Examples:\n  havip status\n  havip status --json | jq '.groups[] | {name, leader}'\n  havip status --watch            # redraw every second, like crm_mon; Ctrl-C ends it\n  havip status --watch --json     # one JSON line per poll, for a log or a pipe\n\nWith --watch, a daemon that does not answer is shown as such and asked again: the\nscreen keeps running through a restart of the daemon."
    )]
    Status {
        #[command(flatten)]
        daemon: DaemonSocket,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Ask again and redraw every --interval until interrupted.
        #[arg(long)]
        watch: bool,
        /// How often --watch asks (a duration: "500ms", "2s").
        #[arg(long, default_value = "1s", requires = "watch", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Move a group's VIPs to a gateway and pin them there, or clear the pin.
    #[command(
        after_help = "Examples:\n  havip failover --to gw-b --group crm\n  havip failover --clear --group crm\n\nWithout --group, every group is pinned/cleared. A pin is a committed record: it survives leader changes until cleared."
    )]
    Failover {
        #[command(flatten)]
        daemon: DaemonSocket,
        /// The gateway that should hold the VIPs.
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        to: Option<String>,
        /// Remove the pin: priorities and failback decide again.
        #[arg(long)]
        clear: bool,
        /// Only this group (default: all).
        #[arg(long)]
        group: Option<String>,
    },
    /// Drain a node (it hands over and never holds) or bring it back.
    #[command(after_help = "Examples:\n  havip maintenance on gw-a\n  havip maintenance off gw-a")]
    Maintenance {
        #[command(flatten)]
        daemon: DaemonSocket,
        mode: OnOff,
        node: String,
    },
    /// Re-read the node's config file and apply what changed, without a restart (= SIGHUP).
    #[command(
        after_help = "Examples:\n  havip reload\n  havip reload --json\n  systemctl reload havip        # the unit's ExecReload runs this\n\nApplied live: VIP groups added (formed once every node lists them) and removed (released\nfirst, then their Raft state dropped), a group's addresses, priority, failback and announce\nsettings (a held VIP stays; only changed addresses change), the health checks (switched\nonce the new ones have results), key_file / previous_key_file (a key rollover), the\nnotify hook, the other nodes of the peer list (the membership follows once every node\nlists the same nodes: see havip member --help), [timers] and the [[backend]] pools
(their HAProxy appliers replaced; servers keep their cluster-wide states). A file with any error, or a\nchange that needs a restart (node name, role, data_dir, listen and this node's own peer\nentry, sockets, a group's interface), is refused whole with every reason, and the\nrunning node is unchanged. Each applied reload is recorded in havip history. Roll a change through the cluster one node at a time;\n`havip status` shows each node's config fingerprint and keys, and warns while the\ncluster-wide settings differ.\nExit codes: 0 applied (or nothing changed), 1 the daemon did not answer, 2 refused."
    )]
    Reload {
        #[command(flatten)]
        daemon: DaemonSocket,
        #[arg(long)]
        json: bool,
    },
    /// The Raft membership of each group, beside this node's configured peers.
    #[command(
        after_help = "Examples:\n  havip member list\n  havip member list --json | jq '.groups[] | select(.matches_config | not)'\n\nEach group's voters and learners as this node's replica has them, and whether they\nare the peers this node's config lists (and whether a change is half done, in joint\nconsensus). On the group's leader, also what it does to make the voters the peer\nlists: it changes them once every connected node lists the same peers (new nodes as\nlearners first, then one change), and says what it waits for until then. The lists\nchange by `havip reload` of each node with the new file, the master's last (README,\n\"From three voters to five, or a node replaced\"): `havip member add|remove|replace`\ncheck such a change against the running cluster first and print the edits, changing\nnothing themselves."
    )]
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Drain, put in maintenance or bring back a CRM server on every gateway's HAProxy,
    /// or set its weight there (committed through Raft, like maintenance).
    #[command(
        after_help = "Examples:\n  havip backend drain crm-1          # no new connections to crm-1 on any gateway\n  havip backend maint crm-1 --pool crm\n  havip backend ready crm-1          # takes traffic again (if its checks pass)\n  havip backend weight crm-2 50\n\nThe state is one cluster-wide record per server (shown by `havip status`, kept in\n`havip history`), applied by every gateway to its own HAProxy through the Runtime API.\nThe command returns once it is committed and says whether this gateway's HAProxy\nholds it yet."
    )]
    Backend {
        #[command(subcommand)]
        action: BackendAction,
    },
    /// Master changes, health changes, operator commands and config reloads (each node's
    /// new fingerprint and what changed), oldest first.
    History {
        #[command(flatten)]
        daemon: DaemonSocket,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove the VIPs a dead daemon left on its interfaces (run it after `run` exits).
    #[command(
        after_help = "Example (systemd, in conf/havip.service):\n  ExecStopPost=/usr/sbin/havip release --config /etc/havip/havip.toml\n\nA daemon that is SIGKILLed, crashes or is OOM-killed cannot remove its VIPs: its fence process does at once, but when the fence was killed too (systemd kills the whole unit after a stop timeout) the kernel does only when their lifetime (address_lifetime) runs out, and until then the dead node still answers ARP for them. `release` removes them at once. It never touches a running daemon's VIPs (the data_dir's lock proves none runs) nor an operator's permanent address. Exit 0 when nothing is left (also when there was nothing), 1 when a daemon runs or an address could not be removed, 2 on a bad config or missing privileges."
    )]
    Release {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The daemon's fence (started by `run`, never by hand): removes the VIPs of a frozen
    /// or killed daemon at the end of their hold lease; orders come on stdin.
    #[command(hide = true)]
    Fence,
    /// Validate config files; with several files of one cluster, also check they agree.
    #[command(
        after_help = "Example:\n  havip check-config conf/gw-a.toml conf/gw-b.toml conf/witness.toml\n\nEvery error of every file is reported (file:line:column: key: what is wrong and what would be right). Exit 0 when all are valid, 2 otherwise."
    )]
    CheckConfig {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Create a new cluster key file (mode 0600). Every node of a cluster needs the same key.
    #[command(after_help = "Example:\n  havip keygen --out /etc/havip/cluster.key")]
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a shell completion script for havip.
    #[command(
        after_help = "Examples:\n  havip completions bash > /etc/bash_completion.d/havip\n  havip completions zsh > \"${fpath[1]}/_havip\"\n  havip completions fish > ~/.config/fish/completions/havip.fish\n\nThe Debian package installs all three."
    )]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (havip(8) and one per command) into a directory.
    #[command(hide = true)]
    Manpages {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BackendAction {
    /// No new connections (existing and persistent ones stay): `set server ... state drain`.
    Drain(BackendServerArgs),
    /// No traffic at all: `set server ... state maint`.
    Maint(BackendServerArgs),
    /// Takes traffic again (while its checks pass): `set server ... state ready`.
    Ready(BackendServerArgs),
    /// The server's weight on every gateway (0 to 256): `set server ... weight N`.
    Weight {
        #[command(flatten)]
        server: BackendServerArgs,
        weight: u16,
    },
}

#[derive(Args)]
struct BackendServerArgs {
    #[command(flatten)]
    daemon: DaemonSocket,
    /// The server's name, as in [[backend.server]] and haproxy.cfg.
    server: String,
    /// The pool (only needed when the server is in several).
    #[arg(long)]
    pool: Option<String>,
}

#[derive(Subcommand)]
enum MemberAction {
    /// Each group's voters and learners beside the configured peers.
    List {
        #[command(flatten)]
        daemon: DaemonSocket,
        #[arg(long)]
        json: bool,
    },
    /// Check that adding nodes can be done now, and print the edits that do it (changes nothing).
    #[command(
        after_help = "Example:\n  havip member add witness-2=198.18.0.21:7400 witness-3=198.18.0.22:7400\n\nChanges nothing: membership follows the peer lists in the files. Checked against\nthe running cluster as this node sees it: refused (exit 2) with the reason for a name\nor address already listed, an even number of voters, a majority this node cannot\nreach; otherwise prints the steps (start the new nodes, the [[cluster.peers]] entries\nto add to every file, `havip reload` on each node with the master last)."
    )]
    Add {
        #[command(flatten)]
        daemon: DaemonSocket,
        /// NAME=ADDRESS of each node to add (its peer address, e.g. 198.18.0.21:7400).
        #[arg(required = true, value_parser = parse_new_member)]
        nodes: Vec<(String, SocketAddr)>,
        /// The added nodes' role.
        #[arg(long, value_enum, default_value = "witness")]
        role: RoleArg,
        #[arg(long)]
        json: bool,
    },
    /// Check that removing nodes can be done now, and print the edits that do it (changes nothing).
    #[command(
        after_help = "Example:\n  havip member remove witness-2 witness-3\n\nChanges nothing: membership follows the peer lists in the files. Refused (exit 2)\nwith the reason for an unknown name, the last gateway, a node that leads a group\n(move the group first), an even number of voters left, a majority this node cannot\nreach; otherwise prints the steps."
    )]
    Remove {
        #[command(flatten)]
        daemon: DaemonSocket,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check replacing a node by a new one (another name and address) in one change.
    #[command(
        after_help = "Example:\n  havip member replace witness witness-2=198.18.0.21:7400\n\nOne membership change: the cluster never runs on fewer voters. Changes nothing;\nchecked and printed as `member add` and `member remove` are."
    )]
    Replace {
        #[command(flatten)]
        daemon: DaemonSocket,
        old: String,
        /// NAME=ADDRESS of the new node.
        #[arg(value_parser = parse_new_member)]
        new: (String, SocketAddr),
        #[arg(long, value_enum, default_value = "witness")]
        role: RoleArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Gateway,
    Witness,
}

/// `NAME=ADDRESS`, as `havip member add` takes a node.
fn parse_new_member(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, address) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: write NAME=ADDRESS, e.g. witness-2=198.18.0.21:7400"))?;
    let address = address
        .parse()
        .map_err(|e| format!("{address:?} is not an IP:port peer address: {e}"))?;
    if name.is_empty() {
        return Err(format!("{text:?}: the node's name is empty"));
    }
    Ok((name.to_string(), address))
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// How a command ended, mapped onto the documented exit codes.
enum Failure {
    Request(String),
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's fence needs CAP_NET_ADMIN, which a child gets only through the ambient
    // set under systemd's `User=havip`: it starts before the set is cleared.
    let fence = match fence_for(&cli.command) {
        Ok(fence) => fence,
        Err(e) => {
            eprintln!("havip: {e}");
            return ExitCode::from(2);
        }
    };
    // Then, before any thread exists (capabilities are per thread): the children havip
    // starts (exec checks, notify hooks) must not inherit its CAP_NET_ADMIN/CAP_NET_RAW.
    if let Err(e) = havip::platform::child::drop_inherited_capabilities() {
        eprintln!("havip: warning: cannot clear the inheritable capabilities: {e}");
    }
    let result = match cli.command {
        CliCommand::Run {
            config,
            observe_only,
        } => run(&config, observe_only, fence),
        CliCommand::Release { config } => release(&config),
        CliCommand::Fence => fence_main(),
        CliCommand::CheckConfig { files } => check_config(&files),
        CliCommand::Keygen { out } => keygen(&out),
        CliCommand::Completions { shell } => completions(shell),
        CliCommand::Manpages { out } => manpages(&out),
        CliCommand::Status {
            daemon,
            json,
            watch: false,
            ..
        } => status(&daemon, json),
        CliCommand::Status {
            daemon,
            json,
            interval,
            ..
        } => watch_status(&daemon, json, interval),
        CliCommand::Failover {
            daemon,
            to,
            clear: _,
            group,
        } => request(&daemon, Request::Failover { group, to }).and_then(print_done),
        CliCommand::Maintenance { daemon, mode, node } => request(
            &daemon,
            Request::Maintenance {
                node,
                on: matches!(mode, OnOff::On),
            },
        )
        .and_then(print_done),
        CliCommand::History {
            daemon,
            json,
            group,
        } => history(&daemon, json, group),
        CliCommand::Reload { daemon, json } => reload(&daemon, json),
        CliCommand::Member {
            action: MemberAction::List { daemon, json },
        } => member_list(&daemon, json),
        CliCommand::Member { action } => member_check(action),
        CliCommand::Backend { action } => backend(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Request(message)) => {
            eprintln!("havip: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("havip: {message}");
            ExitCode::from(2)
        }
    }
}

fn keygen(out: &Path) -> Result<(), Failure> {
    ClusterKey::generate()
        .write_new(out)
        .map(|()| {
            println!(
                "wrote a new cluster key to {} (mode 0600); copy it to every node",
                out.display()
            )
        })
        .map_err(|e| Failure::Usage(e.to_string()))
}

/// Into a buffer first: clap_complete panics on a write error, and `| head` is one.
fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "havip", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Request(format!(
            "cannot write the completion script: {e}"
        ))),
        _ => Ok(()),
    }
}

/// The sections of havip(8) that clap does not know: examples, exit status, files.
const MAN_SECTIONS: &str = r#".SH EXAMPLES
.nf
havip keygen \-\-out /etc/havip/cluster.key  # once; copy it to every node (mode 0600)
havip check\-config gw\-a.toml gw\-b.toml witness.toml
systemctl enable \-\-now havip               # runs: havip run \-\-config /etc/havip/havip.toml
havip status                               # each group's master, term, nodes, holders
havip status \-\-json | jq .
havip failover \-\-to gw\-b \-\-group crm       # move the VIPs by hand (pinned)
havip failover \-\-clear \-\-group crm         # priorities and failback decide again
havip maintenance on gw\-a                  # drain gw\-a: it hands over, never holds
havip history \-\-json
.fi
.PP
Commands other than run, release, check\-config, keygen and completions talk to the local
daemon over its Unix socket: the one named in /etc/havip/havip.toml, or the one given
with \-\-config or \-\-socket.
.SH "EXIT STATUS"
.TP
.B 0
Success. For release: nothing is left on the interfaces (also when there was nothing).
.TP
.B 1
The request failed: the daemon refused it or could not do it (the message says why),
the daemon did not answer, or release found a running daemon or could not remove an
address.
.TP
.B 2
Usage or configuration error: a bad command line, a config file with errors (every
error is listed with file:line:column and key), a missing key file, or missing
privileges (run needs CAP_NET_ADMIN and CAP_NET_RAW unless \-\-observe\-only).
.SH FILES
.TP
.I /etc/havip/havip.toml
The node's configuration (the package ships /etc/havip/havip.toml.example).
.TP
.I /etc/havip/cluster.key
The cluster key (havip keygen), the same on every node, mode 0600, owned by the
user the daemon runs as.
.TP
.I /var/lib/havip
The node's Raft state (data_dir).
.TP
.I /run/havip/havip.sock
The control socket the CLI talks to.
.SH "SEE ALSO"
systemctl(1), journalctl(1), ip\-address(8), keepalived(8).
/usr/share/doc/havip/README.md and config\-reference.md.
"#;

/// havip(8) and havip-COMMAND(8) from the CLI's own definition: section 8, because
/// havip is a daemon and its administration. The exit codes are in havip(8)'s EXTRA
/// section (the after-help text).
fn manpages(out: &Path) -> Result<(), Failure> {
    // After build(), a subcommand's display name is "havip-status": its page's name.
    fn write(cmd: clap::Command, out: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), out)?;
        }
        let top = cmd.get_name() == "havip";
        let man = clap_mangen::Man::new(cmd)
            .section("8")
            .manual("System Administration")
            .source(concat!("havip ", env!("CARGO_PKG_VERSION")));
        if !top {
            return man.generate_to(out).map(drop);
        }
        // havip(8): clap's sections, then the examples unfilled and what operators look up.
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_subcommands_section(&mut page)?;
        page.extend_from_slice(MAN_SECTIONS.as_bytes());
        std::fs::write(out.join(man.get_filename()), page)
    }
    std::fs::create_dir_all(out)
        .and_then(|()| {
            let mut cmd = Cli::command().disable_help_subcommand(true);
            cmd.build();
            write(cmd, out)
        })
        .map_err(|e| Failure::Usage(format!("cannot write man pages to {}: {e}", out.display())))
}

/// Logs go to stdout through a thread of their own: the daemon runs on one thread, and a
/// log line written in place would stop heartbeats whenever stdout stalls (a file on a disk
/// busy writing back, a journald that is behind). Measured in the cluster tests: a leader
/// whose log file sat on a disk under writeback lost its quorum acknowledgement while
/// writing warnings. If the queue ever fills, lines are dropped rather than waited for.
/// Keep the guard until exit: dropping it flushes what is queued.
/// The log filter without `HAVIP_LOG`. openraft's heartbeat worker warns on every beat to
/// an unreachable peer (every 128 ms, per peer, per group: a dead witness filled the log),
/// and its core on every (pre-)vote request that cannot be sent (an isolated node, or a
/// removed one started again: four lines every 130 ms); the mesh already says once,
/// rate-limited, that the peer is unreachable and why, and the group loop logs every
/// state change.
const DEFAULT_LOG: &str =
    "info,openraft=warn,openraft::core::heartbeat=error,openraft::core::raft_core=error";

fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAVIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    // 1024 queued lines is plenty for a daemon that logs state changes; the default
    // (128 000) costs 3 MiB of resident memory per process.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .lossy(true)
        .thread_name("havip-log")
        .finish(std::io::stdout());
    // Under systemd, the journal gets each line with its fields (GROUP=, TERM=, ...)
    // instead of the same text over stdout; anywhere else, or if the journal's socket
    // does not answer, text on stdout.
    let journal = havip::journal::stdout_is_journal()
        .then(|| havip::journal::layer(std::path::Path::new(havip::journal::SOCKET), "havip").ok())
        .flatten();
    let text = journal.is_none().then(|| {
        // Colours only on a terminal: a file or a pipe would store the escapes.
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(writer)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(text)
        .init();
    guard
}

/// One thread: the daemon's work is many tiny wake-ups (Raft ticks, heartbeats, leases), and
/// on a multi-threaded runtime each one also paid for waking another worker. Idle master
/// 2.0 % -> 1.5 % of a core (scripts/bench-idle.sh). Disk writes and blocking lookups
/// still go to tokio's blocking pool, so they never stall a heartbeat.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    havip::platform::timer_grid::mark_runtime_start();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Request(format!("cannot start the async runtime: {e}")))
}

/// The fence of `havip run` (none for other commands, or when observing only): `havip
/// fence` from this very binary (`/proc/self/exe`, so an upgrade that replaced the file
/// on disk cannot start another version).
fn fence_for(
    command: &CliCommand,
) -> Result<Option<std::sync::Arc<havip::vip::fence::Fence>>, String> {
    let CliCommand::Run {
        observe_only: false,
        ..
    } = command
    else {
        return Ok(None);
    };
    let fence =
        havip::vip::fence::Fence::spawn(Path::new("/proc/self/exe")).map_err(|e| e.to_string())?;
    Ok(Some(std::sync::Arc::new(fence)))
}

/// The fence's life: orders from the daemon on stdin until it is gone.
fn fence_main() -> Result<(), Failure> {
    use havip::vip::fence_process;
    use std::os::fd::AsFd as _;
    // Before the logger's thread exists: a thread that does not block them would take
    // the stop signals for the whole process.
    fence_process::block_stop_signals().map_err(|e| Failure::Request(e.to_string()))?;
    let _log = init_logging();
    // The pipe itself, unbuffered: the fence polls it, and std's stdin buffer would hide
    // what it has already read from the poll.
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|e| Failure::Request(format!("fence: cannot take its stdin: {e}")))?;
    let taken = fence_process::run(pipe).map_err(|e| Failure::Request(e.to_string()))?;
    tracing::debug!(taken, "fence: the daemon is gone; exiting");
    Ok(())
}

fn run(
    path: &Path,
    observe_only: bool,
    fence: Option<std::sync::Arc<havip::vip::fence::Fence>>,
) -> Result<(), Failure> {
    let config = Config::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    config
        .check_children()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let _log = init_logging();
    runtime()?
        .block_on(havip::daemon::run(havip::daemon::RunOptions {
            config,
            observe_only,
            fence,
        }))
        .map_err(|e| Failure::Usage(e.to_string()))
}

fn release(path: &Path) -> Result<(), Failure> {
    use havip::release::ReleaseError;
    // The unit's ExecStopPost: it must take the VIPs down whatever state the key file is
    // in, so the config is parsed without `load`'s filesystem checks.
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    let config = Config::from_str(path, &text).map_err(|e| Failure::Usage(e.to_string()))?;
    let _log = init_logging();
    match runtime()?.block_on(havip::release::release(&config)) {
        Ok(0) => println!("no VIP of {} was left on this host", config.node.name),
        Ok(n) => println!(
            "released {n} VIP address(es) left by {}'s daemon",
            config.node.name
        ),
        Err(e @ ReleaseError::Privileges(_)) => return Err(Failure::Usage(e.to_string())),
        Err(e) => return Err(Failure::Request(e.to_string())),
    }
    Ok(())
}

/// Validates every file and reports every error at once. The key file is checked if it
/// exists on this host; a missing one is only a warning here, because check-config often
/// runs on a workstation or in CI against files meant for other hosts (`run` refuses it).
fn check_config(files: &[PathBuf]) -> Result<(), Failure> {
    let mut loaded = Vec::new();
    let mut errors = 0;
    for file in files {
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read the config file: {e}", file.display()))
            .and_then(|text| Config::from_str(file, &text).map_err(|e| e.to_string()));
        match parsed {
            Ok(config) => {
                let key_file = &config.cluster.key_file;
                if !key_file.exists() {
                    eprintln!(
                        "warning: {}: cluster.key_file: {} does not exist on this host; `havip run` refuses to start without it (make one with `havip keygen --out {}`)",
                        file.display(),
                        key_file.display(),
                        key_file.display()
                    );
                } else if let Err(e) = ClusterKey::load(key_file) {
                    errors += 1;
                    eprintln!("{}: cluster.key_file: {e}", file.display());
                }
                // Like the key file: the users may exist only on the node the file is for.
                for (key, user) in config.run_as_users() {
                    if let Err(e) = havip::platform::child::RunAs::lookup(user) {
                        eprintln!("warning: {}: {key}: {e}", file.display());
                    }
                }
                loaded.push(config);
            }
            Err(message) => {
                errors += message.lines().count();
                eprintln!("{message}");
            }
        }
    }
    for warning in config::cross_check(&loaded) {
        eprintln!("warning: {warning}");
    }
    if errors > 0 {
        return Err(Failure::Usage(format!(
            "{errors} error(s) in {} file(s)",
            files.len()
        )));
    }
    println!("{} file(s) OK", files.len());
    Ok(())
}

/// The socket to talk to: --socket, else the [control] socket of --config.
fn socket_path(daemon: &DaemonSocket) -> Result<PathBuf, Failure> {
    if let Some(socket) = &daemon.socket {
        return Ok(socket.clone());
    }
    // The operator may not be allowed to read the key file, so the config is parsed
    // without the filesystem checks that `run` makes.
    let text = std::fs::read_to_string(&daemon.config).map_err(|e| {
        Failure::Usage(format!(
            "cannot read {}: {e} (pass --config FILE or --socket PATH)",
            daemon.config.display()
        ))
    })?;
    let config =
        Config::from_str(&daemon.config, &text).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(config.control.socket)
}

fn request(daemon: &DaemonSocket, request: Request) -> Result<Response, Failure> {
    let path = socket_path(daemon)?;
    let response = runtime()?
        .block_on(socket::call(&path, &request, Duration::from_secs(15)))
        .map_err(|e| Failure::Request(e.to_string()))?;
    match response {
        Response::Error { message } => Err(Failure::Request(message)),
        Response::Refused { message } => Err(Failure::Usage(message)),
        other => Ok(other),
    }
}

/// A refused reload is a configuration error (exit 2, `Response::Refused`), a daemon that
/// does not answer a failed request (exit 1).
fn reload(daemon: &DaemonSocket, json: bool) -> Result<(), Failure> {
    let response = request(daemon, Request::Reload)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&response).unwrap_or_default()
        );
        return Ok(());
    }
    if let Response::Reloaded {
        node,
        changes,
        fingerprints,
    } = response
    {
        if changes.is_empty() {
            println!(
                "{node}: reloaded, nothing changed (config {})",
                fingerprints.config
            );
        } else {
            println!("{node}: reloaded (config {}):", fingerprints.config);
            for change in changes {
                println!("  {change}");
            }
        }
    }
    Ok(())
}

fn member_list(daemon: &DaemonSocket, json: bool) -> Result<(), Failure> {
    let response = request(daemon, Request::Members)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&response).unwrap_or_default()
        );
        return Ok(());
    }
    let Response::Members { groups } = response else {
        return Err(Failure::Request(
            "the daemon answered member list with something else".into(),
        ));
    };
    for g in groups {
        let list = |names: &[String]| {
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(", ")
            }
        };
        println!("group {}", g.group);
        println!("  voters:   {}", list(&g.voters));
        println!("  learners: {}", list(&g.learners));
        if g.joint {
            println!("  a membership change is half done (joint consensus)");
        }
        if let Some(change) = &g.change {
            println!("  change:   {change}");
        }
        if !g.matches_config {
            println!(
                "  DIFFERS from this node's peers: {} (see havip member --help)",
                list(&g.configured)
            );
        }
    }
    Ok(())
}

/// `havip member add|remove|replace`: the daemon's check and steps, printed.
fn member_check(action: MemberAction) -> Result<(), Failure> {
    use havip::control::protocol::NewMember;
    let role_of = |r: RoleArg| match r {
        RoleArg::Gateway => havip::config::Role::Gateway,
        RoleArg::Witness => havip::config::Role::Witness,
    };
    let new = |(name, address): (String, SocketAddr), role| NewMember {
        name,
        address,
        role,
    };
    let (daemon, add, remove, json) = match action {
        MemberAction::List { .. } => return Ok(()),
        MemberAction::Add {
            daemon,
            nodes,
            role,
            json,
        } => {
            let add = nodes.into_iter().map(|n| new(n, role_of(role))).collect();
            (daemon, add, Vec::new(), json)
        }
        MemberAction::Remove {
            daemon,
            names,
            json,
        } => (daemon, Vec::new(), names, json),
        MemberAction::Replace {
            daemon,
            old,
            new: node,
            role,
            json,
        } => (daemon, vec![new(node, role_of(role))], vec![old], json),
    };
    let path = socket_path(&daemon)?;
    let response = runtime()?
        .block_on(socket::call(
            &path,
            &Request::MemberCheck { add, remove },
            Duration::from_secs(15),
        ))
        .map_err(|e| Failure::Request(e.to_string()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&response).unwrap_or_default()
        );
    }
    match response {
        Response::Done { message } if !json => {
            print!("{message}");
            Ok(())
        }
        Response::Refused { message } => Err(Failure::Usage(message)),
        Response::Error { message } => Err(Failure::Request(message)),
        _ => Ok(()),
    }
}

/// `havip backend ...`: one request, the daemon's answer printed.
fn backend(action: BackendAction) -> Result<(), Failure> {
    use havip::control::protocol::BackendChange;
    use havip::haproxy::AdminState;
    let (args, change) = match action {
        BackendAction::Drain(a) => (a, BackendChange::State(AdminState::Drain)),
        BackendAction::Maint(a) => (a, BackendChange::State(AdminState::Maint)),
        BackendAction::Ready(a) => (a, BackendChange::State(AdminState::Ready)),
        BackendAction::Weight { server, weight } => (server, BackendChange::Weight(weight)),
    };
    let request_ = Request::Backend {
        pool: args.pool,
        server: args.server,
        change,
    };
    request(&args.daemon, request_).and_then(print_done)
}

fn print_done(response: Response) -> Result<(), Failure> {
    if let Response::Done { message } = response {
        println!("{message}");
    }
    Ok(())
}

fn status(daemon: &DaemonSocket, json: bool) -> Result<(), Failure> {
    let Response::Status(report) = request(daemon, Request::Status)? else {
        return Err(Failure::Request(
            "the daemon answered status with something else".into(),
        ));
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!(
            "{}{}{}{}",
            render_status(&report),
            render_backends(&report),
            render_configs(&report),
            render_checks(&report)
        );
    }
    Ok(())
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = havip::config::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err(format!("{text} is too often; use 100ms or more"));
    }
    Ok(interval)
}

/// `status --watch`: the report redrawn every `interval` (on a terminal the screen is
/// cleared first, as `watch` and crm_mon do); with --json one line per poll. Runs until
/// interrupted; a daemon that does not answer is reported and asked again.
fn watch_status(daemon: &DaemonSocket, json: bool, interval: Duration) -> Result<(), Failure> {
    use std::io::Write as _;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let now = wall_clock_utc();
        let text = match request(daemon, Request::Status) {
            Ok(Response::Status(report)) if json => {
                format!("{}\n", serde_json::to_string(&report).unwrap_or_default())
            }
            Ok(Response::Status(report)) => format!(
                "Every {}: havip status    {now}\n\n{}{}{}{}",
                config::format_duration(interval),
                render_status(&report),
                render_backends(&report),
                render_configs(&report),
                render_checks(&report)
            ),
            Ok(_) => "the daemon answered status with something else\n".into(),
            Err(Failure::Request(why) | Failure::Usage(why)) if json => {
                format!("{}\n", serde_json::json!({ "error": why, "at": now }))
            }
            Err(Failure::Request(why) | Failure::Usage(why)) => {
                format!(
                    "havip status    {now}\n\nno answer: {why}\n(asking again every {})\n",
                    config::format_duration(interval)
                )
            }
        };
        let mut out = std::io::stdout().lock();
        let clear = if terminal && !json {
            "\x1b[H\x1b[2J"
        } else {
            ""
        };
        if write!(out, "{clear}{text}")
            .and_then(|()| out.flush())
            .is_err()
        {
            // The reader went away (`| head`, a closed terminal): nothing left to do.
            return Ok(());
        }
        drop(out);
        std::thread::sleep(interval);
    }
}

/// The wall clock as `HH:MM:SS` UTC, for the watch header (no date crate for one line).
fn wall_clock_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn yes_no(value: Option<bool>, yes: &'static str, no: &'static str) -> &'static str {
    match value {
        Some(true) => yes,
        Some(false) => no,
        None => "?",
    }
}

fn render_status(report: &StatusReport) -> String {
    let mut out = format!(
        "node {} ({}, data plane: {})\n",
        report.node, report.role, report.data_plane
    );
    if !report.not_listed_by.is_empty() {
        out += &format!(
            "NOT A MEMBER: {} do(es) not list this node in its peer list (removed or replaced?): stop it, or add it back to every node's peer list and reload them\n",
            report.not_listed_by.join(", ")
        );
    }
    for group in &report.groups {
        out += &format!(
            "\ngroup {}  [{}]\n  master: {}  term: {}  pin: {}  quorum ack: {}\n  here: {} ({})\n",
            group.name,
            group.addresses.join(", "),
            group.leader.as_deref().unwrap_or("none"),
            group.term,
            group.pin.as_deref().unwrap_or("-"),
            group
                .quorum_ack_age_ms
                .map(|ms| format!("{ms} ms ago"))
                .unwrap_or_else(|| "-".into()),
            if group.holding {
                "HOLDING the VIPs"
            } else {
                "not holding"
            },
            group.hold_reason,
        );
        out += &format!(
            "  {:<12} {:<8} {:>4}  {:<9} {:<5} {:<11} {:<5}\n",
            "NODE", "ROLE", "PRIO", "HEALTH", "LINK", "MAINTENANCE", "HOLDS"
        );
        for node in &group.nodes {
            out += &format!(
                "  {:<12} {:<8} {:>4}  {:<9} {:<5} {:<11} {:<5}{}\n",
                node.name,
                node.role.as_deref().unwrap_or("?"),
                node.priority
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into()),
                yes_no(node.healthy, "healthy", "UNHEALTHY"),
                yes_no(node.link_up, "up", "DOWN"),
                if node.maintenance { "ON" } else { "off" },
                yes_no(node.holds, "YES", "no"),
                if node.detail.is_empty() {
                    String::new()
                } else {
                    format!("  {}", node.detail)
                },
            );
        }
    }
    out
}

/// Each node's config fingerprint and cluster keys, the key this node's link to it uses,
/// and which nodes disagree on what must be the same everywhere (peers, timers, groups):
/// a reload or a key rollover rolled out to some nodes only.
fn render_configs(report: &StatusReport) -> String {
    if report.configs.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nconfig\n  {:<12} {:<13} {:<12} {}\n",
        "NODE", "CONFIG", "LINK KEY", "KEYS"
    );
    for c in &report.configs {
        let (config, keys) = match &c.fingerprints {
            Some(f) => (f.config.as_str(), f.keys.as_str()),
            None => ("?", "no answer"),
        };
        out += &format!(
            "  {:<12} {:<13} {:<12} {}\n",
            c.node,
            config,
            c.link_key.as_deref().unwrap_or("-"),
            keys
        );
    }
    let mine = (report.configs.iter())
        .find(|c| c.node == report.node)
        .and_then(|c| c.fingerprints.as_ref())
        .map(|f| f.cluster.clone());
    let differ: Vec<&str> = (report.configs.iter())
        .filter(|c| match (&c.fingerprints, &mine) {
            (Some(f), Some(m)) => f.cluster != *m,
            _ => false,
        })
        .map(|c| c.node.as_str())
        .collect();
    if !differ.is_empty() {
        out += &format!(
            "  DRIFT: {} disagree(s) with {} on peers, timers or groups; finish rolling the change out (havip check-config on all files shows where)\n",
            differ.join(", "),
            report.node
        );
    }
    out
}

/// Each pool: per server, what the cluster decided and what this node's HAProxy has;
/// then whether each other gateway's HAProxy holds it.
fn render_backends(report: &StatusReport) -> String {
    use havip::haproxy::PoolStatus;
    let sync = |pool: &PoolStatus| match (&pool.error, pool.rounds) {
        (_, 0) => "not asked yet".to_string(),
        (Some(e), _) => format!("ERROR: {e}"),
        (None, _) if pool.drift.is_empty() => "in sync".to_string(),
        (None, _) => format!("DRIFT: {}", pool.drift.join("; ")),
    };
    let Some((mine, others)) = report.backends.split_first() else {
        return String::new();
    };
    let mut out = String::new();
    for pool in mine.pools.iter().flatten() {
        out += &format!(
            "\nbackend {} (HAProxy {} on {}): {}\n  {:<16} {:<6} {:>6} {:<5}  HAPROXY ON {}\n",
            pool.pool,
            pool.backend,
            pool.socket,
            sync(pool),
            "SERVER",
            "STATE",
            "WEIGHT",
            "CHECK",
            mine.node
        );
        for s in &pool.servers {
            let here = match &s.observed {
                Some(o) => format!(
                    "{} {} weight {}{}",
                    o.admin,
                    if o.up { "up" } else { "down" },
                    o.weight,
                    if s.in_sync { "" } else { "  DRIFT" }
                ),
                None => "-".to_string(),
            };
            out += &format!(
                "  {:<16} {:<6} {:>6} {:<5}  {here}\n",
                s.name,
                s.desired.admin.as_str(),
                s.desired.weight,
                yes_no(s.desired.up, "up", "DOWN"),
            );
        }
        if pool.reapplied > 0 {
            out += &format!(
                "  HAProxy on {} lost what havip applied {} time(s) (restart, reload, hand edit); applied again\n",
                mine.node, pool.reapplied
            );
        }
        for other in others {
            let theirs = match &other.pools {
                None => "no answer".to_string(),
                Some(pools) => pools
                    .iter()
                    .find(|p| p.pool == pool.pool)
                    .map_or_else(|| "has no such pool".to_string(), sync),
            };
            out += &format!("  HAProxy on {}: {theirs}\n", other.node);
        }
    }
    out
}

fn render_checks(report: &StatusReport) -> String {
    let mut out = String::new();
    for node in &report.health {
        match &node.checks {
            None => out += &format!("\nchecks of {}: no answer\n", node.node),
            Some(checks) if checks.is_empty() => {}
            Some(checks) => {
                out += &format!(
                    "\nchecks of {}\n  {:<20} {:<5} {:>9}  LAST\n",
                    node.node, "CHECK", "STATE", "LATENCY"
                );
                for c in checks {
                    let state = if c.probes == 0 {
                        "-".to_string()
                    } else {
                        format!("{:?}", c.state).to_uppercase()
                    };
                    let failure = c
                        .last_failure
                        .as_deref()
                        .map(|f| format!("  (last failure: {f})"))
                        .unwrap_or_default();
                    out += &format!(
                        "  {:<20} {:<5} {:>7.1}ms  {}{}\n",
                        c.name, state, c.last_latency_ms, c.last_detail, failure
                    );
                }
            }
        }
    }
    out
}

fn history(daemon: &DaemonSocket, json: bool, group: Option<String>) -> Result<(), Failure> {
    let Response::History { groups } = request(daemon, Request::History { group })? else {
        return Err(Failure::Request(
            "the daemon answered history with something else".into(),
        ));
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        );
        return Ok(());
    }
    for group in groups {
        println!("group {}", group.group);
        for entry in group.entries {
            println!("  {}  {}", format_unix_ms(entry.at_unix_ms), entry.event);
        }
    }
    Ok(())
}

/// UTC "YYYY-MM-DD HH:MM:SS.mmm" without a date crate (civil-from-days, Howard Hinnant).
fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}
