//! The traffic measurements, client side and server side: iperf3 (TCP stream throughput),
//! sockperf (64 B TCP ping-pong: rate and latency percentiles), and two small Rust loops on
//! threads inside the namespaces: TCP request/response over one connection (`rr`) and
//! connect/request/response/close (`crr`, like netperf's TCP_CRR).
//!
//! Servers stay up for the whole bench (one set per topology); every client run is bounded in
//! time and fails with the tool's name and output when something is off.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use super::netns::{self, OwnedChild};

pub const IPERF3_PORT: u16 = 5201;
pub const SOCKPERF_PORT: u16 = 11111;
pub const RR_PORT: u16 = 5002;
pub const CRR_PORT: u16 = 5003;
/// Request and response size of every request/response figure.
pub const MSG: usize = 64;

/// Request/response figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct RrStats {
    pub per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Run a command with a deadline; returns stdout (stderr is kept for the error message).
pub fn run_timeout(what: &str, cmd: &mut Command, timeout: Duration) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    // Drain both pipes on threads: a full pipe would stall the tool.
    let mut so = child.stdout.take().context("stdout")?;
    let mut se = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    match status {
        None => bail!(
            "{what} did not finish within {timeout:?}\n{}{}",
            out.trim(),
            err.trim()
        ),
        Some(st) if !st.success() => bail!("{what} failed ({st}):\n{}\n{}", out.trim(), err.trim()),
        Some(_) => Ok(out),
    }
}

/// TCP stream throughput from `client` to `ip` with `streams` parallel streams, in Gbit/s
/// (what the receiver got).
pub fn iperf3(client: &Path, ip: IpAddr, secs: u32, streams: u32) -> Result<f64> {
    let out = run_timeout(
        "iperf3 client",
        netns::in_ns(client, "iperf3").args([
            "-c",
            &ip.to_string(),
            "-p",
            &IPERF3_PORT.to_string(),
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ]),
        Duration::from_secs(secs as u64 + 20),
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("iperf3 -J printed no JSON: {out}"))?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| "iperf3 -J has no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// The number after `key` in `text` (sockperf's `key=value` and `key = value` fields).
fn field_after(text: &str, key: &str) -> Option<f64> {
    let i = text.find(key)? + key.len();
    let rest = text[i..].trim_start_matches([' ', '=']);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parse a sockperf ping-pong report (`--full-rtt`: latencies are round trips, in µs).
pub fn parse_sockperf(out: &str) -> Result<RrStats> {
    let valid = out
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .with_context(|| format!("sockperf printed no [Valid Duration] line:\n{out}"))?;
    let secs = field_after(valid, "RunTime").context("sockperf: no RunTime in [Valid Duration]")?;
    let got = field_after(valid, "ReceivedMessages").context("sockperf: no ReceivedMessages")?;
    ensure!(secs > 0.0 && got > 0.0, "sockperf measured nothing: {valid}");
    let pct = |p: &str| -> Result<f64> {
        out.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| field_after(l, &format!("percentile {p}")))
            .with_context(|| format!("sockperf printed no percentile {p}"))
    };
    Ok(RrStats {
        per_s: got / secs,
        p50_us: pct("50.000")?,
        p99_us: pct("99.000")?,
    })
}

/// 64 B TCP ping-pong with sockperf for `secs` seconds (it adds ~2.5 s of its own set-up).
pub fn sockperf(client: &Path, ip: IpAddr, secs: u32) -> Result<RrStats> {
    let out = run_timeout(
        "sockperf ping-pong",
        netns::in_ns(client, "sockperf").args([
            "ping-pong",
            "--tcp",
            "-i",
            &ip.to_string(),
            "-p",
            &SOCKPERF_PORT.to_string(),
            "-t",
            &secs.to_string(),
            "-m",
            &MSG.to_string(),
            "--full-rtt",
        ]),
        Duration::from_secs(secs as u64 + 20),
    )?;
    parse_sockperf(&out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Request/response over one TCP connection for `dur`: rate and round-trip percentiles.
pub fn tcp_rr(client: &Path, ip: IpAddr, dur: Duration) -> Result<RrStats> {
    netns::run_in(client, move || {
        let addr = SocketAddr::new(ip, RR_PORT);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .with_context(|| format!("rr: connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let req = [0x5au8; MSG];
        let mut resp = [0u8; MSG];
        // Warm-up: neighbour resolution, conntrack entries, caches.
        for _ in 0..100 {
            s.write_all(&req)?;
            s.read_exact(&mut resp).context("rr: reading a response")?;
        }
        let mut lat = Vec::with_capacity(200_000);
        let start = Instant::now();
        while start.elapsed() < dur {
            let t = Instant::now();
            s.write_all(&req)?;
            s.read_exact(&mut resp).context("rr: reading a response")?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let secs = start.elapsed().as_secs_f64();
        let n = lat.len() as f64;
        lat.sort_by(f64::total_cmp);
        Ok(RrStats {
            per_s: n / secs,
            p50_us: percentile(&lat, 0.50),
            p99_us: percentile(&lat, 0.99),
        })
    })
}

/// New connections per second for `dur`: connect, 64 B request, 64 B response, close.
pub fn tcp_crr(client: &Path, ip: IpAddr, dur: Duration) -> Result<f64> {
    netns::run_in(client, move || {
        let addr = SocketAddr::new(ip, CRR_PORT);
        let req = [0x5au8; MSG];
        let mut resp = [0u8; MSG];
        let one = |resp: &mut [u8; MSG]| -> Result<()> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .with_context(|| format!("crr: connecting to {addr}"))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(&req)?;
            s.read_exact(resp).context("crr: reading the response")?;
            Ok(())
        };
        for _ in 0..20 {
            one(&mut resp)?;
        }
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < dur {
            one(&mut resp)?;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    })
}

/// Wait up to 100 ms for a connection; `None` when there was none (so the stop flag is seen).
fn accept_poll(l: &TcpListener) -> Result<Option<TcpStream>> {
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
    if rc <= 0 {
        return Ok(None);
    }
    Ok(Some(l.accept()?.0))
}

/// The Rust rr and crr servers of one pod (threads inside its namespace).
struct RustServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl RustServers {
    fn start(server: &Path, ip: IpAddr) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for port in [RR_PORT, CRR_PORT] {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let stop2 = stop.clone();
            threads.push(netns::spawn_in(server, move || {
                let l = TcpListener::bind(SocketAddr::new(ip, port))
                    .with_context(|| format!("binding {ip}:{port}"))?;
                tx.send(()).ok();
                while !stop2.load(Ordering::Acquire) {
                    let Some(mut s) = accept_poll(&l)? else { continue };
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                    if port == RR_PORT {
                        // One connection per measurement: echo until the client closes.
                        std::thread::spawn(move || {
                            let mut buf = [0u8; MSG];
                            while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
                        });
                    } else {
                        let mut buf = [0u8; MSG];
                        if s.read_exact(&mut buf).is_ok() {
                            let _ = s.write_all(&buf);
                        }
                    }
                }
                Ok(())
            }));
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|_| anyhow::anyhow!("the rr/crr server on {ip}:{port} did not start"))?;
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for RustServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Every server of one topology's server pod.
pub struct Servers {
    _iperf3: Option<OwnedChild>,
    _sockperf: Option<OwnedChild>,
    _rust: RustServers,
}

impl Servers {
    /// `tools`: also iperf3 and sockperf (the policy topologies need only the Rust servers).
    pub fn start(server: &Path, ip: IpAddr, tools: bool) -> Result<Self> {
        let rust = RustServers::start(server, ip)?;
        if !tools {
            return Ok(Self {
                _iperf3: None,
                _sockperf: None,
                _rust: rust,
            });
        }
        let iperf3 = OwnedChild::spawn(
            "iperf3 server",
            netns::in_ns(server, "iperf3")
                .args(["-s", "-B", &ip.to_string(), "-p", &IPERF3_PORT.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        // Debian 12's sockperf (3.7) has no IPv6: IPv6 topologies measure RR with `tcp_rr`.
        let sockperf = ip
            .is_ipv4()
            .then(|| {
                OwnedChild::spawn(
                    "sockperf server",
                    netns::in_ns(server, "sockperf")
                        .args([
                            "server",
                            "--tcp",
                            "-i",
                            &ip.to_string(),
                            "-p",
                            &SOCKPERF_PORT.to_string(),
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )
            })
            .transpose()?;
        let s = Self {
            _iperf3: Some(iperf3),
            _sockperf: sockperf,
            _rust: rust,
        };
        // Both tools listen within milliseconds; wait until they do (seen from the server's
        // own namespace), so the first measurement does not race their start-up.
        let path: PathBuf = server.to_owned();
        netns::run_in(&path, move || {
            let ports: &[u16] = if ip.is_ipv4() {
                &[IPERF3_PORT, SOCKPERF_PORT]
            } else {
                &[IPERF3_PORT]
            };
            for &port in ports {
                netns::wait_for("iperf3/sockperf to listen", Duration::from_secs(10), || {
                    Ok(
                        TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(200))
                            .is_ok(),
                    )
                })?;
            }
            Ok(())
        })?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockperf_report_parses() {
        let out = "sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=37829; ReceivedMessages=37828\n\
sockperf: [Valid Duration] RunTime=0.552 sec; SentMessages=21066; ReceivedMessages=21066\n\
sockperf: \x1b[2;35m====> avg-rtt=32.723 (std-dev=181.456)\x1b[0m\n\
sockperf: ---> percentile 99.000 =   32.941\n\
sockperf: ---> percentile 90.000 =   24.686\n\
sockperf: ---> percentile 50.000 =   16.711\n";
        let s = parse_sockperf(out).expect("parses");
        assert!((s.per_s - 21066.0 / 0.552).abs() < 1e-6);
        assert_eq!(s.p50_us, 16.711);
        assert_eq!(s.p99_us, 32.941);
    }

    #[test]
    fn sockperf_garbage_is_an_error() {
        assert!(parse_sockperf("sockperf: connection refused").is_err());
    }
}
