//! Per-packet cost of the eBPF programs, with BPF_PROG_TEST_RUN on the pinned programs of the
//! policy nodes' daemons.
//!
//! The packets are what the client pod sends to the server pod (Ethernet + IPv4 + TCP), and
//! the test run's context names the client's host-side veth (`__sk_buff.ifindex`; the kernel
//! then runs the program on an skb of that device), so `from_pod` finds the real endpoint in
//! `SL_IFACES` and takes the same path as live traffic, down to `bpf_redirect_peer`.
//!
//! Why not `bpftool prog run ... repeat N`: the kernel runs the N repetitions on one skb, and
//! `from_pod` rewrites the packet it forwards (MACs, TTL), so from the second repetition on the
//! packet carries the gateway's MAC as its source and takes the anti-spoofing drop path
//! instead. And a new flow is new only once: its first run creates the conntrack entry. So each
//! run here is a separate BPF_PROG_TEST_RUN with `repeat = 1` and a pristine packet (a fresh
//! source port for every new-flow run), and the figure is the median of the kernel-reported
//! durations, less the median of the same measurement for an empty program (the timer and
//! dispatch overhead of a single run). `to_pod` does not rewrite packets: its established-flow
//! run is measured both ways (`bpftool ... repeat N` and single runs), which checks the method.

use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{
    Config,
    netns::{self, TempDir},
    report::{Report, Section, fmt_num},
    stats,
    topology::Topo,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `TC_ACT_REDIRECT`: what `from_pod` returns after `bpf_redirect_peer`.
const TC_ACT_REDIRECT: u32 = 7;
/// `TC_ACT_UNSPEC` (-1): pass on.
const TC_ACT_UNSPEC: u32 = u32::MAX;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed 128-byte union bpf_attr laid out for `cmd`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr).with_context(|| format!("BPF_OBJ_GET {}", path.display()))?;
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `r0 = TC_ACT_UNSPEC; exit`: the calibration program.
fn load_empty() -> Result<OwnedFd> {
    // mov64 r0, -1 ; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = CString::new("GPL")?;
    let mut attr = [0u64; 16];
    attr[0] = BPF_PROG_TYPE_SCHED_CLS as u64 | ((insns.len() as u64) << 32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD of the empty calibration program")?;
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One test run with `repeat = 1`: (return value, duration in ns).
fn test_run(prog: &OwnedFd, data: &[u8], ctx: &[u8]) -> Result<(u32, u32)> {
    let mut attr = [0u64; 16];
    // prog_fd, retval | data_size_in, data_size_out | data_in | data_out | repeat, duration |
    // ctx_size_in, ctx_size_out | ctx_in | ctx_out
    attr[0] = prog.as_raw_fd() as u32 as u64;
    attr[1] = data.len() as u64;
    attr[2] = data.as_ptr() as u64;
    attr[4] = 1;
    attr[5] = ctx.len() as u64;
    attr[6] = ctx.as_ptr() as u64;
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok(((attr[0] >> 32) as u32, (attr[4] >> 32) as u32))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + TCP packet (no payload) with valid checksums.
pub fn tcp_packet(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::with_capacity(54);
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&tcp);
    p
}

/// A `struct __sk_buff` prefix that names the device (`ifindex` at offset 40).
fn ctx_for(ifindex: u32) -> Vec<u8> {
    let mut c = vec![0u8; 44];
    c[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    c
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("bad MAC {s:?}"))?;
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {s:?}"))
}

/// What the datapath knows of one pod, from `sluicectl endpoints` and `ip link`.
struct Ep {
    ifindex: u32,
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
    ip: Ipv4Addr,
}

fn endpoint(topo: &Topo, eps: &Value, ip: IpAddr) -> Result<Ep> {
    let e = eps
        .as_array()
        .context("sluicectl endpoints is not a list")?
        .iter()
        .find(|e| {
            e["ips"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&ip.to_string())))
        })
        .with_context(|| format!("sluicectl endpoints has no endpoint with {ip}"))?;
    let ifindex = e["host_ifindex"]
        .as_u64()
        .context("endpoint without host_ifindex")? as u32;
    let host_if = e["host_ifname"]
        .as_str()
        .context("endpoint without host_ifname")?;
    let pod_mac = parse_mac(e["pod_mac"].as_str().context("endpoint without pod_mac")?)?;
    let out = topo
        .node()?
        .cmd("ip")
        .args(["-j", "link", "show", "dev", host_if])
        .output()
        .context("spawning ip link")?;
    let links: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`ip -j link show dev {host_if}` printed no JSON"))?;
    let host_mac = parse_mac(links[0]["address"].as_str().context("ip -j link: no address")?)?;
    let IpAddr::V4(ip) = ip else {
        bail!("IPv6 pod address {ip}: the bench uses IPv4")
    };
    Ok(Ep {
        ifindex,
        pod_mac,
        host_mac,
        ip,
    })
}

/// Single-run figures of one daemon's programs (ns; raw, before subtracting the overhead).
#[derive(Default, Clone, Copy)]
struct Figures {
    overhead: f64,
    fast: f64,
    policy: f64,
    to_pod_single: f64,
    to_pod_repeat: f64,
}

const SERVER_PORT: u16 = 5201;
/// The runs of each figure are split into this many chunks, and the chunks of all levels
/// alternate, so a slow spell of the machine hits every level alike.
const CHUNKS: usize = 10;

/// One daemon's programs and the two pods' datapath records.
struct Level {
    node: std::path::PathBuf,
    from_pod: OwnedFd,
    to_pod: OwnedFd,
    client: Ep,
    server: Ep,
    /// The established flow's source port; new flows count up from it.
    first_sport: u16,
    next_sport: u16,
    samples: [Vec<f64>; 4],
}

impl Level {
    fn client_pkt(&self, sport: u16, flags: u8) -> Vec<u8> {
        tcp_packet(
            self.client.host_mac,
            self.client.pod_mac,
            self.client.ip,
            self.server.ip,
            sport,
            SERVER_PORT,
            flags,
        )
    }

    /// The established packet as the server's host veth sends it to the server (to_pod).
    fn to_server_pkt(&self) -> Vec<u8> {
        tcp_packet(
            self.server.pod_mac,
            self.server.host_mac,
            self.client.ip,
            self.server.ip,
            self.first_sport,
            SERVER_PORT,
            0x10,
        )
    }
}

fn prepare(topo: &Topo, first_sport: u16) -> Result<Level> {
    let d = topo.daemon.as_ref().context("no daemon")?;
    let eps = d.ctl(&["endpoints"])?;
    let progs = d.bpffs.join("progs");
    let l = Level {
        node: topo.node()?.path(),
        from_pod: obj_get(&progs.join("from_pod"))?,
        to_pod: obj_get(&progs.join("to_pod"))?,
        client: endpoint(topo, &eps, topo.client_ip)?,
        server: endpoint(topo, &eps, topo.server_ip)?,
        first_sport,
        next_sport: first_sport.wrapping_add(1),
        samples: Default::default(),
    };
    Ok(l)
}

/// Establish one flow: SYN from the client, SYN-ACK from the server (both through from_pod,
/// as between two pods); its ACKs are then conntrack hits. Runs inside the level's node.
fn establish(l: &Level) -> Result<()> {
    let (cctx, sctx) = (ctx_for(l.client.ifindex), ctx_for(l.server.ifindex));
    let synack = tcp_packet(
        l.server.host_mac,
        l.server.pod_mac,
        l.server.ip,
        l.client.ip,
        SERVER_PORT,
        l.first_sport,
        0x12,
    );
    let (ret, _) = test_run(&l.from_pod, &l.client_pkt(l.first_sport, 0x02), &cctx)?;
    ensure!(
        ret == TC_ACT_REDIRECT,
        "from_pod dropped the client's SYN (returned {ret})"
    );
    let (ret, _) = test_run(&l.from_pod, &synack, &sctx)?;
    ensure!(
        ret == TC_ACT_REDIRECT,
        "from_pod dropped the server's SYN-ACK (returned {ret})"
    );
    Ok(())
}

/// `n` single runs of each figure on `l`, from a thread inside its node (the test run's
/// ifindex is resolved in the caller's namespace).
fn chunk(l: &mut Level, empty: &OwnedFd, n: usize) -> Result<()> {
    let (cctx, sctx) = (ctx_for(l.client.ifindex), ctx_for(l.server.ifindex));
    let est = l.client_pkt(l.first_sport, 0x10);
    let to_server = l.to_server_pkt();
    let runs = |prog: &OwnedFd, data: &[u8], ctx: &[u8], want: u32, what: &str, out: &mut Vec<f64>| {
        for _ in 0..n {
            let (ret, ns) = test_run(prog, data, ctx)?;
            ensure!(ret == want, "{what}: the program returned {ret}, expected {want}");
            out.push(ns as f64);
        }
        Ok::<(), anyhow::Error>(())
    };
    let [overhead, fast, policy, to_pod] = &mut l.samples;
    runs(empty, &est, &cctx, TC_ACT_UNSPEC, "empty program", overhead)?;
    runs(
        &l.from_pod,
        &est,
        &cctx,
        TC_ACT_REDIRECT,
        "from_pod, established flow",
        fast,
    )?;
    runs(
        &l.to_pod,
        &to_server,
        &sctx,
        TC_ACT_UNSPEC,
        "to_pod, established flow",
        to_pod,
    )?;
    // New flows: a fresh source port every run (conntrack miss, policy lookups for the
    // isolated server, conntrack insert, redirect).
    for _ in 0..n {
        let pkt = tcp_packet(
            l.client.host_mac,
            l.client.pod_mac,
            l.client.ip,
            l.server.ip,
            l.next_sport,
            SERVER_PORT,
            0x02,
        );
        l.next_sport = l.next_sport.wrapping_add(1);
        let (ret, ns) = test_run(&l.from_pod, &pkt, &cctx)?;
        ensure!(
            ret == TC_ACT_REDIRECT,
            "from_pod dropped a new flow (returned {ret})"
        );
        policy.push(ns as f64);
    }
    Ok(())
}

/// `bpftool prog run pinned to_pod ... repeat N` on the established packet: its average.
fn bpftool_to_pod(topo: &Topo, l: &Level, repeat: usize) -> Result<f64> {
    let d = topo.daemon.as_ref().context("no daemon")?;
    let dir = TempDir::new("progrun")?;
    std::fs::write(dir.path.join("est.bin"), l.to_server_pkt())?;
    std::fs::write(dir.path.join("ctx.bin"), ctx_for(l.server.ifindex))?;
    let out = netns::in_ns(&l.node, "bpftool")
        .args(["prog", "run", "pinned"])
        .arg(d.bpffs.join("progs/to_pod"))
        .arg("data_in")
        .arg(dir.path.join("est.bin"))
        .arg("ctx_in")
        .arg(dir.path.join("ctx.bin"))
        .args(["repeat", &repeat.to_string()])
        .output()
        .context("spawning bpftool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "bpftool prog run failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("duration (average):")
        .nth(1)
        .and_then(|s| s.split("ns").next())
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("bpftool prog run printed no average duration: {text}"))
}

fn measure(cfg: &Config, levels: &[(usize, Topo)]) -> Result<Vec<(usize, Figures)>> {
    let mut ls: Vec<Level> = Vec::new();
    for (i, (n, t)) in levels.iter().enumerate() {
        // Each level uses its own port range: its flows are new to its daemon's conntrack.
        let l = prepare(t, 20_000 + (i as u16) * 3000)
            .with_context(|| format!("BPF_PROG_TEST_RUN on the daemon with {n} rules"))?;
        ls.push(l);
    }
    let per_chunk = cfg.progrun_runs.div_ceil(CHUNKS);
    // One thread does every run; it moves into each level's node before that level's runs
    // (a test run resolves the context's ifindex in the caller's namespace).
    let ls = std::thread::spawn(move || -> Result<Vec<Level>> {
        let empty = load_empty()?;
        for l in &ls {
            netns::enter(&l.node)?;
            establish(l)?;
        }
        for _ in 0..CHUNKS {
            netns::check_interrupted()?;
            for l in &mut ls {
                netns::enter(&l.node)?;
                chunk(l, &empty, per_chunk)?;
            }
        }
        Ok(ls)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the BPF_PROG_TEST_RUN thread panicked"))??;
    let mut out = Vec::new();
    for ((n, t), l) in levels.iter().zip(&ls) {
        let [overhead, fast, policy, to_pod] = &l.samples;
        out.push((
            *n,
            Figures {
                overhead: stats::median(overhead),
                fast: stats::median(fast),
                policy: stats::median(policy),
                to_pod_single: stats::median(to_pod),
                to_pod_repeat: bpftool_to_pod(t, l, cfg.progrun_runs * 10)?,
            },
        ));
    }
    Ok(out)
}

pub fn run(cfg: &Config, levels: &[(usize, Topo)], rep: &mut Report) -> Result<()> {
    let mut rows = Vec::new();
    let all = measure(cfg, levels)?;
    for (n, f) in &all {
        let nl = super::policy_cost::n_label(*n);
        rep.num(&format!("policy{nl}_ns_per_pkt"), f.policy - f.overhead);
        rep.num(&format!("fastpath{nl}_ns_per_pkt"), f.fast - f.overhead);
        rows.push(vec![
            n.to_string(),
            fmt_num(f.fast - f.overhead),
            fmt_num(f.policy - f.overhead),
            fmt_num(f.overhead),
            fmt_num(f.to_pod_single - f.overhead),
            fmt_num(f.to_pod_repeat),
        ]);
    }
    let first = all.first().map(|x| x.1).unwrap_or_default();
    let last = all.last().map(|x| x.1).unwrap_or_default();
    rep.num("fastpath_ns_per_pkt", first.fast - first.overhead);
    rep.num("policy_ns_per_pkt", last.policy - last.overhead);
    rep.num("progrun_overhead_ns", first.overhead);
    rep.num("to_pod_fast_ns_single", first.to_pod_single - first.overhead);
    rep.num("to_pod_fast_ns_bpftool_repeat", first.to_pod_repeat);
    // How far the single-run method is from bpftool's steady-state average where both apply.
    rep.num(
        "progrun_single_vs_repeat",
        (first.to_pod_single - first.overhead) / first.to_pod_repeat,
    );
    rep.sections.push(Section {
        title:
            "eBPF per-packet cost (BPF_PROG_TEST_RUN, ns, median of single runs less the empty-program run)"
                .into(),
        note: format!(
            "{} runs each. fast path = from_pod on an established client->server flow (conntrack hit, \
             redirect to the peer); policy path = from_pod on a new flow to the isolated server \
             (conntrack miss, policy lookups, conntrack insert, redirect). Check of the method: to_pod \
             on an established flow, single runs vs `bpftool prog run ... repeat {}`.",
            cfg.progrun_runs,
            cfg.progrun_runs * 10
        ),
        header: [
            "rules N",
            "fast path",
            "policy path",
            "single-run overhead",
            "to_pod (single)",
            "to_pod (bpftool repeat)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_checksums_verify() {
        let p = tcp_packet(
            [1; 6],
            [2; 6],
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1234,
            80,
            0x02,
        );
        assert_eq!(p.len(), 54);
        // A correct IPv4 header sums to 0 with its checksum.
        assert_eq!(checksum(&p[14..34]), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[26..34]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&p[34..54]);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("da:aa:c6:e7:67:ab").expect("mac"),
            [0xda, 0xaa, 0xc6, 0xe7, 0x67, 0xab]
        );
        assert!(parse_mac("da:aa").is_err());
    }
}
