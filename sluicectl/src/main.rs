//! `sluicectl`: ask the local sluiced about its state. Every command talks to the daemon's
//! socket (`--socket`, default `/run/sluice/sluiced.sock`) and prints a table, or JSON with
//! `--output json` (one document; `monitor` prints one JSON object per line).

mod render;

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use sluice_api::{Client, FlowEventInfo, PodRef, Request};

#[derive(Parser)]
#[command(name = "sluicectl", version, about = "Inspect a node's sluice datapath")]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, default_value = sluice_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Daemon health, versions, kernel features, map fill levels.
    Status,
    /// Pods on this node: addresses, interfaces, counters.
    Endpoints,
    /// Address leases.
    Ipam,
    /// Which policies select a pod and what they allow (`namespace/name`, or `name` in `default`).
    Policy { pod: String },
    /// Stream drops (and, with --verdicts, allowed new flows) as they happen.
    Monitor {
        /// Also show allowed new flows (turns verdict events on in the datapath while running).
        #[arg(long)]
        verdicts: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn pod_ref(s: &str) -> PodRef {
    match s.split_once('/') {
        Some((ns, name)) => PodRef {
            namespace: ns.into(),
            name: name.into(),
        },
        None => PodRef {
            namespace: "default".into(),
            name: s.into(),
        },
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("sluicectl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut client = Client::connect(&cli.socket, Duration::from_secs(10))
        .with_context(|| format!("connecting to sluiced at {}", cli.socket.display()))?;
    let json = cli.output == Output::Json;
    let print_json = |v: &serde_json::Value| println!("{}", serde_json::to_string_pretty(v).expect("json"));
    match cli.cmd {
        Cmd::Status => {
            let s: sluice_api::Status = client.call(&Request::Status)?;
            if json {
                print_json(&serde_json::to_value(&s)?);
            } else {
                render::status(&s);
            }
        }
        Cmd::Endpoints => {
            let eps: Vec<sluice_api::EndpointInfo> = client.call(&Request::Endpoints)?;
            if json {
                print_json(&serde_json::to_value(&eps)?);
            } else {
                render::endpoints(&eps);
            }
        }
        Cmd::Ipam => {
            let leases: Vec<sluice_api::LeaseInfo> = client.call(&Request::Leases)?;
            let status: sluice_api::Status = client.call(&Request::Status)?;
            if json {
                print_json(&serde_json::json!({"pools": status.pools, "leases": leases}));
            } else {
                render::ipam(&status.pools, &leases);
            }
        }
        Cmd::Policy { pod } => {
            let v: serde_json::Value = client.call(&Request::Policy { pod: pod_ref(&pod) })?;
            if json {
                print_json(&v);
            } else {
                render::policy(&v);
            }
        }
        Cmd::Monitor { verdicts, count } => {
            let _: serde_json::Value = client.call(&Request::Monitor { verdicts })?;
            client.set_stream_timeout(None)?;
            let mut seen = 0u64;
            let stdout = std::io::stdout();
            while count.is_none_or(|c| seen < c) {
                let ev: FlowEventInfo = client.next_event()?;
                let mut out = stdout.lock();
                if json {
                    writeln!(out, "{}", serde_json::to_string(&ev)?)?;
                } else {
                    writeln!(out, "{}", render::event(&ev))?;
                }
                out.flush()?;
                seen += 1;
            }
        }
    }
    Ok(())
}
