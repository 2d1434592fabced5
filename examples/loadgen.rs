//! The load generator of `bench/run`, and the report it writes.
//!
//! `loadgen run` keeps N HTTP/1.1 keep-alive connections (hyper's
//! low-level client, nothing pooled or hidden) and sends POST form bodies
//! read from files, one body per line:
//!
//! - closed loop (no `--rate`): every connection sends its next request as
//!   soon as the previous answer is read: the peak throughput;
//! - open loop (`--rate R`): requests are due at fixed intervals, 1/R apart,
//!   whatever the server does; a due request waits for a free connection.
//!   Latency is recorded from the actual send (`service`) and from the time
//!   it was due (`corrected`, free of coordinated omission).
//!
//! Latencies go into HDR histograms (microseconds, 3 significant digits).
//! A target marked `once` uses each line once (refresh and revocation:
//! every request needs a token nobody used); the run ends early when such a
//! target runs dry, and says so.
//!
//! `loadgen report` turns the JSON of every run into the markdown table of
//! BENCHMARKS.md, and `--check` fails when a run had errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Tessera's load generator and benchmark report")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send load and write the figures as JSON.
    Run(RunArgs),
    /// Render the markdown table from the JSON of every run.
    Report(ReportArgs),
    /// Print a run's RSS samples and whether they stayed flat (exit 1 if not).
    Rss(RssArgs),
}

#[derive(Args)]
struct RssArgs {
    /// The JSON figures of a run made with `--rss-every`.
    file: PathBuf,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// `host:port` of the server (loopback only).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Threads of the load generator's own runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long)]
    duration: f64,
    /// Seconds of load before measuring (connections, caches, argon2 check).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Requests per second for the open loop; 0: closed loop, as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// File holding `client_id:client_secret`, sent as HTTP Basic.
    #[arg(long)]
    basic_file: Option<PathBuf>,
    /// `name=N;path=/p;file=F;weight=W[;once][;expect=TEXT]`, repeatable:
    /// each request picks a target by weight.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Where to write the JSON figures.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "")]
    label: String,
    /// The server's process id: its CPU time is accounted during the
    /// measured window (and its RSS sampled with `--rss-every`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds between samples of the server's resident set size; 0: none.
    #[arg(long, default_value_t = 0.0)]
    rss_every: f64,
}

#[derive(Args)]
struct ReportArgs {
    /// Directory with the runs' JSON files and `facts.txt`.
    #[arg(long)]
    dir: PathBuf,
    /// Replace the part between the markers of this markdown file.
    #[arg(long)]
    into: Option<PathBuf>,
    /// Exit non-zero if any run had errors or no successful request.
    #[arg(long)]
    check: bool,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(a) => match run(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("loadgen: {e}");
                2
            }
        },
        Cmd::Rss(a) => match rss(a) {
            Ok(ok) => i32::from(!ok),
            Err(e) => {
                eprintln!("loadgen rss: {e}");
                2
            }
        },
        Cmd::Report(a) => match report(a) {
            Ok(ok) => i32::from(!ok),
            Err(e) => {
                eprintln!("loadgen report: {e}");
                2
            }
        },
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// targets

struct Target {
    name: String,
    path: String,
    weight: u32,
    once: bool,
    expect: Option<String>,
    lines: Vec<Bytes>,
    next: AtomicUsize,
    dry: AtomicBool,
}

impl Target {
    fn parse(spec: &str) -> Result<Self, String> {
        let mut t = Target {
            name: String::new(),
            path: String::new(),
            weight: 1,
            once: false,
            expect: None,
            lines: Vec::new(),
            next: AtomicUsize::new(0),
            dry: AtomicBool::new(false),
        };
        let mut file = None;
        for part in spec.split(';').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("name", v)) => t.name = v.to_owned(),
                Some(("path", v)) => t.path = v.to_owned(),
                Some(("file", v)) => file = Some(PathBuf::from(v)),
                Some(("weight", v)) => {
                    t.weight = v.parse().map_err(|_| format!("bad weight in {spec:?}"))?
                }
                Some(("expect", v)) => t.expect = Some(v.to_owned()),
                None if part == "once" => t.once = true,
                _ => return Err(format!("unknown part {part:?} of target {spec:?}")),
            }
        }
        let file = file.ok_or_else(|| format!("target {spec:?} has no file"))?;
        if t.name.is_empty() || !t.path.starts_with('/') {
            return Err(format!("target {spec:?} needs name= and path=/..."));
        }
        let all =
            Bytes::from(std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?);
        let mut start = 0;
        for (i, b) in all.iter().enumerate() {
            if *b == b'\n' {
                if i > start {
                    t.lines.push(all.slice(start..i));
                }
                start = i + 1;
            }
        }
        if start < all.len() {
            t.lines.push(all.slice(start..));
        }
        if t.lines.is_empty() {
            return Err(format!("{} has no lines", file.display()));
        }
        Ok(t)
    }

    /// The next body, or `None` once a `once` target has used every line.
    fn body(&self, rng: &mut u64) -> Option<Bytes> {
        if self.once {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.lines.len() {
                self.dry.store(true, Ordering::Relaxed);
                return None;
            }
            Some(self.lines[i].clone())
        } else {
            let i = (xorshift(rng) % self.lines.len() as u64) as usize;
            Some(self.lines[i].clone())
        }
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

// ---------------------------------------------------------------------------
// per-connection figures

struct Stats {
    service: Histogram<u64>,
    corrected: Histogram<u64>,
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    unexpected_body: u64,
    io_errors: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            service: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            corrected: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            ok: 0,
            statuses: BTreeMap::new(),
            unexpected_body: 0,
            io_errors: 0,
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.service.add(&o.service).expect("same bounds");
        self.corrected.add(&o.corrected).expect("same bounds");
        self.ok += o.ok;
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        self.unexpected_body += o.unexpected_body;
        self.io_errors += o.io_errors;
    }

    fn errors(&self) -> u64 {
        self.io_errors
            + self.unexpected_body
            + self
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum::<u64>()
    }

    fn json(&self, secs: f64) -> Value {
        let ms = |h: &Histogram<u64>, q: f64| -> f64 {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        json!({
            "ok": self.ok,
            "errors": self.errors(),
            "io_errors": self.io_errors,
            "unexpected_body": self.unexpected_body,
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "rps": if secs > 0.0 { self.ok as f64 / secs } else { 0.0 },
            "p50_ms": ms(&self.service, 0.50),
            "p90_ms": ms(&self.service, 0.90),
            "p99_ms": ms(&self.service, 0.99),
            "p999_ms": ms(&self.service, 0.999),
            "max_ms": if self.service.is_empty() { 0.0 } else { self.service.max() as f64 / 1000.0 },
            "mean_ms": self.service.mean() / 1000.0,
            "corrected_p50_ms": ms(&self.corrected, 0.50),
            "corrected_p99_ms": ms(&self.corrected, 0.99),
            "corrected_p999_ms": ms(&self.corrected, 0.999),
        })
    }
}

// ---------------------------------------------------------------------------
// the run

struct Shared {
    addr: String,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    targets: Vec<Target>,
    total_weight: u64,
    /// When measuring starts (the warm-up is over) and when the run ends.
    measure_from: Instant,
    end: Instant,
    t0: Instant,
    rate: f64,
    stop: AtomicBool,
    /// Nanoseconds after `t0` of the last measured answer.
    last_done: AtomicU64,
    samples: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn pick(&self, rng: &mut u64) -> Option<(usize, Bytes)> {
        // Weighted pick among targets that still have lines; a dry target's
        // share moves to the others.
        for _ in 0..64 {
            let live: u64 = self
                .targets
                .iter()
                .filter(|t| !t.dry.load(Ordering::Relaxed))
                .map(|t| t.weight as u64)
                .sum();
            if live == 0 {
                return None;
            }
            let mut r = xorshift(rng) % live;
            for (i, t) in self.targets.iter().enumerate() {
                if t.dry.load(Ordering::Relaxed) {
                    continue;
                }
                if r < t.weight as u64 {
                    if let Some(b) = t.body(rng) {
                        return Some((i, b));
                    }
                    break;
                }
                r -= t.weight as u64;
            }
        }
        None
    }

    fn note_error(&self, msg: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 5 {
            s.push(msg);
        }
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let addr = args.addr.clone();
    let ip: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| format!("--addr {addr:?} is not ip:port"))?;
    if !ip.ip().is_loopback() {
        return Err("the load generator only targets loopback addresses".into());
    }
    let targets = args
        .targets
        .iter()
        .map(|s| Target::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = match &args.basic_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let v = format!("Basic {}", STANDARD.encode(text.trim()));
            Some(HeaderValue::from_str(&v).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())?;
    let total_weight = targets.iter().map(|t| t.weight as u64).sum();
    let t0 = Instant::now();
    let measure_from = t0 + Duration::from_secs_f64(args.warmup);
    let shared = Arc::new(Shared {
        host: HeaderValue::from_str(&addr).map_err(|e| e.to_string())?,
        addr,
        auth,
        targets,
        total_weight,
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
        t0,
        rate: args.rate,
        stop: AtomicBool::new(false),
        last_done: AtomicU64::new(0),
        samples: Default::default(),
    });
    if shared.total_weight == 0 {
        return Err("every target has weight 0".into());
    }
    let conns = args.connections.max(1);
    let (per_target, rss, cpu) = rt.block_on(async {
        let cpu_task = {
            let sh = shared.clone();
            let pid = args.server_pid;
            tokio::spawn(async move {
                tokio::time::sleep_until(sh.measure_from.into()).await;
                let a = CpuSnap::take(pid);
                while Instant::now() < sh.end && !sh.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(
                        Duration::from_millis(50)
                            .min(sh.end.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                let b = CpuSnap::take(pid);
                (a, b)
            })
        };
        let rss_task = args.server_pid.filter(|_| args.rss_every > 0.0).map(|pid| {
            let sh = shared.clone();
            let every = Duration::from_secs_f64(args.rss_every.max(0.5));
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    if let Some(kb) = rss_kb(pid) {
                        out.push(json!([sh.t0.elapsed().as_secs_f64(), kb]));
                    }
                    if Instant::now() >= sh.end || sh.stop.load(Ordering::Relaxed) {
                        return out;
                    }
                    tokio::time::sleep(every).await;
                }
            })
        });
        let due_queue: Option<DueQueue> = (args.rate > 0.0).then(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let sh = shared.clone();
            std::thread::spawn(move || pacer(sh, tx));
            Arc::new(tokio::sync::Mutex::new(rx))
        });
        let mut handles = Vec::new();
        for i in 0..conns {
            let sh = shared.clone();
            let seed = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
            handles.push(tokio::spawn(connection(sh, seed, due_queue.clone())));
        }
        drop(due_queue);
        let mut per_target: Vec<Stats> = shared.targets.iter().map(|_| Stats::new()).collect();
        for h in handles {
            if let Ok(stats) = h.await {
                for (acc, s) in per_target.iter_mut().zip(stats.iter()) {
                    acc.merge(s);
                }
            }
        }
        let rss = match rss_task {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let cpu = cpu_task.await.ok();
        (per_target, rss, cpu)
    });
    let last = shared.last_done.load(Ordering::Relaxed);
    let window_end = if shared.stop.load(Ordering::Relaxed) && last > 0 {
        (shared.t0 + Duration::from_nanos(last)).min(shared.end)
    } else {
        shared.end
    };
    let secs = window_end
        .saturating_duration_since(shared.measure_from)
        .as_secs_f64();
    let mut total = Stats::new();
    for s in &per_target {
        total.merge(s);
    }
    let exhausted: Vec<&str> = shared
        .targets
        .iter()
        .filter(|t| t.dry.load(Ordering::Relaxed))
        .map(|t| t.name.as_str())
        .collect();
    let out = json!({
        "label": args.label,
        "mode": if args.rate > 0.0 { "open" } else { "closed" },
        "rate": args.rate,
        "connections": conns,
        "threads": args.threads,
        "planned_secs": args.duration,
        "secs": secs,
        "exhausted": exhausted,
        "total": total.json(secs),
        "targets": shared.targets.iter().zip(per_target.iter())
            .map(|(t, s)| (t.name.clone(), s.json(secs))).collect::<serde_json::Map<_, _>>(),
        "rss_kb": rss,
        "cpu": cpu.map(|(a, b)| CpuSnap::json(&a, &b, total.ok)).unwrap_or(Value::Null),
        "rss_end_kb": args.server_pid.and_then(rss_kb),
        "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("").to_owned(),
        "error_samples": shared.samples.lock().unwrap().clone(),
    });
    let t = &out["total"];
    eprintln!(
        "{:<28} {:>6} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  errors {}{}",
        args.label,
        if args.rate > 0.0 { "open" } else { "closed" },
        t["rps"].as_f64().unwrap_or(0.0),
        t["p50_ms"].as_f64().unwrap_or(0.0),
        t["p99_ms"].as_f64().unwrap_or(0.0),
        t["p999_ms"].as_f64().unwrap_or(0.0),
        t["errors"],
        if exhausted.is_empty() { String::new() } else { format!("  (ran dry: {})", exhausted.join(",")) },
    );
    for s in shared.samples.lock().unwrap().iter() {
        eprintln!("    error sample: {s}");
    }
    let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    match &args.out {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            // For the script that chains a half-peak run onto this one.
            println!("RPS {:.1}", out["total"]["rps"].as_f64().unwrap_or(0.0));
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// CPU time, in clock ticks (USER_HZ, 100 per second on Linux).
struct CpuSnap {
    at: Instant,
    /// Busy ticks of every core together (`/proc/stat`).
    busy: u64,
    server: u64,
    own: u64,
}

const TICKS_PER_SEC: f64 = 100.0;

impl CpuSnap {
    fn take(server: Option<u32>) -> Self {
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let v: Vec<u64> = s
                    .lines()
                    .next()?
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal ...
                let total: u64 = v.iter().take(8).sum();
                Some(total - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0))
            })
            .unwrap_or(0);
        Self {
            at: Instant::now(),
            busy,
            server: server.and_then(|p| proc_ticks(&p.to_string())).unwrap_or(0),
            own: proc_ticks("self").unwrap_or(0),
        }
    }

    /// Cores used by the server, the load generator and everything else on
    /// the machine (other engineers' builds) during the window.
    fn json(a: &Self, b: &Self, requests: u64) -> Value {
        let secs = (b.at - a.at).as_secs_f64().max(1e-3);
        let cores = |t: u64| t as f64 / TICKS_PER_SEC / secs;
        let server = b.server.saturating_sub(a.server);
        let own = b.own.saturating_sub(a.own);
        let others = b.busy.saturating_sub(a.busy).saturating_sub(server + own);
        json!({
            "server_cores": cores(server),
            "loadgen_cores": cores(own),
            "others_cores": cores(others),
            "server_us_per_req": if requests > 0 { server as f64 / TICKS_PER_SEC * 1e6 / requests as f64 } else { 0.0 },
        })
    }
}

/// utime + stime of a process (every thread), in ticks.
fn proc_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Due times of the open loop, taken by whichever connection is free first.
type DueQueue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>;

/// The open loop's clock: a thread of its own hands out due times, 1/rate
/// apart. tokio's timer wheel has millisecond ticks, which would add up to a
/// millisecond to every latency counted from the due time; a thread sleeping
/// with nanosleep is late by tens of microseconds at most.
fn pacer(sh: Arc<Shared>, tx: tokio::sync::mpsc::UnboundedSender<Instant>) {
    let interval = 1e9 / sh.rate;
    let mut k: u64 = 0;
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        // Hand out everything that is due; sleep until the next one.
        loop {
            let due = sh.t0 + Duration::from_nanos((k as f64 * interval) as u64);
            if due >= sh.end {
                return;
            }
            if due > now {
                std::thread::sleep(due - now);
                break;
            }
            if tx.send(due).is_err() {
                return;
            }
            k += 1;
        }
    }
}

async fn connect(sh: &Shared) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(&sh.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One keep-alive connection's loop; returns its figures per target.
async fn connection(sh: Arc<Shared>, seed: u64, due_queue: Option<DueQueue>) -> Vec<Stats> {
    let mut stats: Vec<Stats> = sh.targets.iter().map(|_| Stats::new()).collect();
    let mut rng = seed | 1;
    let mut sender: Option<Sender> = None;
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        // Open loop: the next due request from the pacer; closed loop: now.
        let due = if let Some(q) = &due_queue {
            let next = q.lock().await.recv().await;
            match next {
                Some(due) => due,
                None => break,
            }
        } else {
            let now = Instant::now();
            if now >= sh.end {
                break;
            }
            now
        };
        let Some((ti, body)) = sh.pick(&mut rng) else {
            sh.stop.store(true, Ordering::Relaxed);
            break;
        };
        if sender.is_none() {
            match connect(&sh).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    stats[ti].io_errors += 1;
                    sh.note_error(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected");
        let t = &sh.targets[ti];
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(t.path.as_str())
            .body(Full::new(body))
            .expect("request");
        let h = req.headers_mut();
        h.insert(HOST, sh.host.clone());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some(a) = &sh.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        if s.ready().await.is_err() {
            sender = None;
            stats[ti].io_errors += 1;
            continue;
        }
        let start = Instant::now();
        let result = match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(b) => Ok((status, b.to_bytes())),
                    Err(e) => Err(format!("reading body: {e}")),
                }
            }
            Err(e) => Err(format!("request: {e}")),
        };
        let done = Instant::now();
        let measured = start >= sh.measure_from && done <= sh.end;
        let st = &mut stats[ti];
        match result {
            Ok((status, body)) => {
                let good_body = t
                    .expect
                    .as_ref()
                    .is_none_or(|e| contains(&body, e.as_bytes()));
                if measured {
                    *st.statuses.entry(status).or_default() += 1;
                    if (200..300).contains(&status) && good_body {
                        st.ok += 1;
                        let us = |d: Duration| (d.as_micros() as u64).clamp(1, 120_000_000);
                        let _ = st.service.record(us(done - start));
                        let _ = st.corrected.record(us(done.saturating_duration_since(due)));
                        sh.last_done.fetch_max(
                            done.duration_since(sh.t0).as_nanos() as u64,
                            Ordering::Relaxed,
                        );
                    } else if (200..300).contains(&status) {
                        st.unexpected_body += 1;
                    }
                }
                if !(200..300).contains(&status) || !good_body {
                    sh.note_error(format!(
                        "{} -> {status}: {}",
                        t.name,
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ));
                }
            }
            Err(e) => {
                if measured {
                    st.io_errors += 1;
                }
                sh.note_error(format!("{}: {e}", t.name));
                sender = None;
            }
        }
    }
    stats
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// the report

const MARK_START: &str = "<!-- bench:results:start -->";
const MARK_END: &str = "<!-- bench:results:end -->";

/// What each scenario is held to (issue 5).
struct Scenario {
    key: &'static str,
    title: &'static str,
    min_ratio: Option<f64>,
    max_half_p99_ms: Option<f64>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        key: "introspect_same",
        title: "1a. introspect a live JWT, same token",
        min_ratio: Some(0.6),
        max_half_p99_ms: Some(5.0),
    },
    Scenario {
        key: "introspect_many",
        title: "1b. introspect live JWTs, 10,000 distinct",
        min_ratio: Some(0.6),
        max_half_p99_ms: Some(5.0),
    },
    Scenario {
        key: "introspect_ended",
        title: "2. introspect ended JWTs (revoked sessions)",
        min_ratio: Some(0.6),
        max_half_p99_ms: Some(5.0),
    },
    Scenario {
        key: "client_credentials",
        title: "3. client_credentials grant (durable)",
        min_ratio: Some(0.2),
        max_half_p99_ms: None,
    },
    Scenario {
        key: "refresh",
        title: "4. refresh with rotation (durable)",
        min_ratio: None,
        max_half_p99_ms: None,
    },
    Scenario {
        key: "revoke",
        title: "5. revocation, RFC 7009 (durable)",
        min_ratio: Some(0.2),
        max_half_p99_ms: None,
    },
    Scenario {
        key: "revoke_random",
        title: "5b. revocation, sessions in random order (durable)",
        min_ratio: Some(0.2),
        max_half_p99_ms: None,
    },
];

fn load(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn facts(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("facts.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

fn report(args: ReportArgs) -> Result<bool, String> {
    use std::fmt::Write as _;
    let dir = &args.dir;
    let facts = facts(dir);
    let fact = |k: &str| facts.get(k).cloned().unwrap_or_else(|| "n/a".into());
    let mut all_ok = true;
    let mut problems = Vec::new();
    // Every run's JSON must show successful requests and no errors.
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    for n in &names {
        let Some(v) = load(dir, n) else { continue };
        let ok = v["total"]["ok"].as_u64().unwrap_or(0);
        let errors = v["total"]["errors"].as_u64().unwrap_or(0);
        if ok == 0 || errors > 0 {
            all_ok = false;
            problems.push(format!(
                "{n}: {ok} ok, {errors} errors {}",
                v["error_samples"]
            ));
        }
    }

    let base_runs: Vec<Value> = ["baseline_start.peak", "baseline_end.peak"]
        .iter()
        .filter_map(|n| load(dir, n))
        .collect();
    let base_rps: Vec<f64> = base_runs.iter().map(|v| f(&v["total"], "rps")).collect();
    let baseline = if base_rps.is_empty() {
        0.0
    } else {
        base_rps.iter().sum::<f64>() / base_rps.len() as f64
    };

    let mut md = String::new();
    let _ = writeln!(md, "{MARK_START}");
    let _ = writeln!(
        md,
        "<!-- generated by bench/run ({}); edit the prose outside these markers -->\n",
        fact("mode")
    );
    let _ = writeln!(md, "### Run of {} ({})\n", fact("date"), fact("mode"));
    let _ = writeln!(
        md,
        "- machine: {} cores, {}, {} memory; kernel {}",
        fact("nproc"),
        fact("cpu"),
        fact("mem"),
        fact("kernel")
    );
    let _ = writeln!(md, "- load on the machine at start (1-min load average): {}; other engineers share these 2 cores, so figures move between runs; ratios use a baseline measured in the same run", fact("loadavg"));
    let _ = writeln!(md, "- command: `{}`", fact("command"));
    let _ = writeln!(md, "- build: {}; commit {}", fact("build"), fact("commit"));
    let _ = writeln!(
        md,
        "- load generator: `examples/loadgen.rs`, {} keep-alive HTTP/1.1 connections, {} thread(s), {} s measured after {} s warm-up per run; the server and the load generator share the machine's 2 cores",
        fact("connections"), fact("loadgen_threads"), fact("duration"), fact("warmup")
    );
    let _ = writeln!(
        md,
        "- baseline: `examples/bench_baseline.rs` (empty axum 0.8 POST handler, tokio multi-thread runtime) with the same connections and the introspection request (same path, Basic auth, same body): {} req/s at the start, {} req/s at the end; ratios use their mean, **{:.0} req/s**\n",
        base_rps.first().map(|r| format!("{r:.0}")).unwrap_or_else(|| "n/a".into()),
        base_rps.get(1).map(|r| format!("{r:.0}")).unwrap_or_else(|| "n/a".into()),
        baseline
    );

    let _ = writeln!(md, "| scenario | peak req/s | × baseline | p50 ms | p99 ms | p99.9 ms | ½-peak rate | p50 ms | p99 ms | p99.9 ms | p99 ms, CO-corrected | target | |");
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let row = |md: &mut String, title: &str, key: &str, sc: Option<&Scenario>| {
        let peak = load(dir, &format!("{key}.peak"));
        let half = load(dir, &format!("{key}.half"));
        let Some(peak) = peak else {
            let _ = writeln!(md, "| {title} | not run | | | | | | | | | | | |");
            return;
        };
        let p = &peak["total"];
        let rps = f(p, "rps");
        let ratio = if baseline > 0.0 { rps / baseline } else { 0.0 };
        let dry = ran_dry(&peak);
        let mut cells = format!(
            "| {title} | {:.0}{} | {:.3} | {:.2} | {:.2} | {:.2} |",
            rps,
            if dry {
                format!(" (tokens ran out after {:.1} s)", f(&peak, "secs"))
            } else {
                String::new()
            },
            ratio,
            f(p, "p50_ms"),
            f(p, "p99_ms"),
            f(p, "p999_ms")
        );
        let half_p99 = match &half {
            Some(h) => {
                let t = &h["total"];
                let _ = write!(
                    cells,
                    " {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    f(t, "rps"),
                    f(t, "p50_ms"),
                    f(t, "p99_ms"),
                    f(t, "p999_ms"),
                    f(t, "corrected_p99_ms")
                );
                Some(f(t, "p99_ms"))
            }
            None => {
                cells.push_str(" not run | | | | |");
                None
            }
        };
        let mut target = Vec::new();
        let mut met = true;
        if let Some(sc) = sc {
            if let Some(r) = sc.min_ratio {
                target.push(format!("≥ {r}×"));
                met &= ratio >= r;
            }
            if let Some(ms) = sc.max_half_p99_ms {
                target.push(format!("p99 ≤ {ms} ms at ½ peak"));
                met &= half_p99.is_some_and(|p| p <= ms);
            }
        }
        let _ = writeln!(
            md,
            "{cells} {} | {} |",
            if target.is_empty() {
                "none".to_owned()
            } else {
                target.join(", ")
            },
            if target.is_empty() { "" } else { verdict(met) }
        );
    };
    row(
        &mut md,
        "baseline, start (empty handler)",
        "baseline_start",
        None,
    );
    for sc in SCENARIOS {
        row(&mut md, sc.title, sc.key, Some(sc));
    }
    row(
        &mut md,
        "baseline, end (empty handler)",
        "baseline_end",
        None,
    );
    let _ = writeln!(
        md,
        "\nLatencies at the peak are closed-loop (each connection sends as soon as it has its answer), so they mostly show queueing. \
         The ½-peak runs are open-loop at half of that scenario's own peak: p50/p99/p99.9 from the actual send, and the target is judged on that p99. \
         The CO-corrected p99 counts from the time each request was due, free of coordinated omission; on this shared machine it also counts the time the load generator itself waited for a core.\n"
    );

    // Where the CPU went.
    let _ = writeln!(md, "CPU during the peak runs, in cores (of {}): the server's, the load generator's, and every other process's on the machine (other engineers' builds and tests); and the server's CPU time per request.\n", fact("nproc"));
    let _ = writeln!(md, "| peak run | server | load generator | other processes | server CPU µs / request | × baseline, by CPU cost | server RSS after the ½-peak run, MB | 1-min load avg at end |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let base_us: Vec<f64> = base_runs
        .iter()
        .map(|v| f(&v["cpu"], "server_us_per_req"))
        .filter(|u| *u > 0.0)
        .collect();
    let base_us = if base_us.is_empty() {
        0.0
    } else {
        base_us.iter().sum::<f64>() / base_us.len() as f64
    };
    let mut keys: Vec<(&str, &str)> = vec![("baseline, start", "baseline_start")];
    keys.extend(SCENARIOS.iter().map(|s| (s.title, s.key)));
    keys.push(("baseline, end", "baseline_end"));
    for (title, key) in keys {
        if let Some(v) = load(dir, &format!("{key}.peak")) {
            let c = &v["cpu"];
            let us = f(c, "server_us_per_req");
            let rss = load(dir, &format!("{key}.half"))
                .and_then(|h| h["rss_end_kb"].as_f64())
                .or_else(|| v["rss_end_kb"].as_f64())
                .map(|kb| format!("{:.1}", kb / 1024.0))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {title} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {rss} | {} |",
                f(c, "server_cores"),
                f(c, "loadgen_cores"),
                f(c, "others_cores"),
                us,
                if us > 0.0 && base_us > 0.0 {
                    format!("{:.3}", base_us / us)
                } else {
                    String::new()
                },
                v["loadavg_end"].as_str().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        md,
        "\nThe CPU-cost ratio (the baseline server's CPU µs per request ÷ Tessera's) compares the work each server does per request, whatever share of the cores it got; it moves less with the other processes' load than the throughput ratio. CPU time is read from /proc in 10 ms ticks.\n"
    );

    // Mixed workload.
    if let Some(m) = load(dir, "mixed") {
        let t = &m["total"];
        let _ = writeln!(
            md,
            "**6. Mixed workload** (90% introspection of 10,000 distinct live JWTs, 5% client_credentials, 4% refresh, 1% revocation; closed loop, {:.0} s): {:.0} req/s in all ({:.3} × baseline), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}.\n",
            f(&m, "secs"), f(t, "rps"), if baseline > 0.0 { f(t, "rps") / baseline } else { 0.0 },
            f(t, "p50_ms"), f(t, "p99_ms"), f(t, "p999_ms"), t["errors"]
        );
        let _ = writeln!(md, "| operation | req/s | p50 ms | p99 ms | p99.9 ms |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        if let Some(ts) = m["targets"].as_object() {
            for (name, v) in ts {
                let _ = writeln!(
                    md,
                    "| {name} | {:.0} | {:.2} | {:.2} | {:.2} |",
                    f(v, "rps"),
                    f(v, "p50_ms"),
                    f(v, "p99_ms"),
                    f(v, "p999_ms")
                );
            }
        }
        if let Some(ex) = m["exhausted"].as_array().filter(|a| !a.is_empty()) {
            let ex: Vec<&str> = ex.iter().filter_map(Value::as_str).collect();
            let _ = writeln!(md, "\nThe pre-created tokens of {} ran out before the end; its share went to the other operations from then on.", ex.join(", "));
        }
        if let Some(memory) = MemoryVerdict::of(&m) {
            let _ = writeln!(
                md,
                "\nServer RSS during the mixed run (MB): {}. Memory: {}.\n",
                memory.series, memory.sentence
            );
        }
    } else {
        let _ = writeln!(md, "**6. Mixed workload**: not run.\n");
    }

    // Memory, size, restart.
    let mb = |k: &str| facts.get(k).and_then(|v| v.parse::<f64>().ok());
    let _ = writeln!(md, "| memory, size, restart | measured | target | |");
    let _ = writeln!(md, "|---|---:|---|---|");
    let line =
        |md: &mut String, what: &str, v: Option<f64>, unit: &str, target: Option<(f64, &str)>| {
            match v {
                Some(x) => {
                    let (t, m) = match target {
                        Some((max, label)) => (label.to_owned(), verdict(x <= max).to_owned()),
                        None => (String::new(), String::new()),
                    };
                    let _ = writeln!(md, "| {what} | {x:.1} {unit} | {t} | {m} |");
                }
                None => {
                    let _ = writeln!(
                        md,
                        "| {what} | not measured in this run | {} | |",
                        target.map(|t| t.1).unwrap_or("")
                    );
                }
            }
        };
    line(
        &mut md,
        "RSS of the idle server (fresh start on the fixture data directory, before any request)",
        mb("idle_rss_mb"),
        "MB",
        Some((50.0, "≤ 50 MB")),
    );
    line(
        &mut md,
        "RSS after every scenario above, idle again",
        mb("after_rss_mb"),
        "MB",
        None,
    );
    line(
        &mut md,
        &format!(
            "RSS with {} live sessions (and {} ended), after start",
            fact("bulk_live"),
            fact("bulk_ended")
        ),
        mb("bulk_rss_mb"),
        "MB",
        Some((300.0, "≤ 300 MB")),
    );
    line(
        &mut md,
        "the same, after 10 s of introspection load on them",
        mb("bulk_rss_loaded_mb"),
        "MB",
        Some((300.0, "≤ 300 MB")),
    );
    line(
        &mut md,
        "data directory with them (tessera.redb)",
        mb("bulk_disk_mb"),
        "MB",
        Some((1024.0, "≤ 1 GB")),
    );
    line(
        &mut md,
        "restart with them: process start → /readyz 200",
        mb("bulk_startup_s"),
        "s",
        Some((10.0, "≤ 10 s")),
    );
    if let Some(secs) = mb("bulk_create_s") {
        let _ = writeln!(
            md,
            "\nThe {} sessions were opened through the engine by `examples/bulk_sessions.rs` ({} concurrent openings, group commit) in {:.0} s ({:.0} sessions/s), and {} of them ended through the engine.",
            fact("bulk_opened"), fact("bulk_concurrency"), secs, mb("bulk_rate").unwrap_or(0.0), fact("bulk_ended")
        );
    }
    if !problems.is_empty() {
        let _ = writeln!(md, "\n**Runs with errors:**\n");
        for p in &problems {
            let _ = writeln!(md, "- {p}");
        }
    }
    let _ = writeln!(md, "{MARK_END}");

    print!("{md}");
    if let Some(path) = &args.into {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let new = match (old.find(MARK_START), old.find(MARK_END)) {
            (Some(a), Some(b)) if b > a => format!(
                "{}{}{}",
                &old[..a],
                md.trim_end(),
                &old[b + MARK_END.len()..]
            ),
            _ => format!("{old}\n{md}"),
        };
        std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if args.check && !all_ok {
        for p in &problems {
            eprintln!("loadgen report: {p}");
        }
        return Ok(false);
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// memory verdict

/// How much higher the later window's peak RSS may be than the earlier
/// one's and still count as flat, as a share of the earlier peak.
const RSS_TOLERANCE: f64 = 0.02;

/// Whether a run's RSS stopped growing, judged on its high-water marks.
///
/// The first third of the run is left out: caches with a bound (the
/// store's page cache, the verified-signature cache, the allocator's
/// segments) fill while it lasts. The rest is cut into two windows of
/// equal length; memory is flat when the later window's peak is at most
/// [`RSS_TOLERANCE`] above the earlier window's. A leak raises every later
/// peak; a cache that has reached its bound, or the allocator giving pages
/// back and taking them again, does not. Peaks rather than single samples,
/// so one sample taken at a high or a low point decides nothing.
struct RssTrend {
    settle_s: f64,
    window_s: f64,
    early_peak: f64,
    late_peak: f64,
    /// `None`: too few samples in a window to judge.
    flat: Option<bool>,
}

impl RssTrend {
    /// `samples`: (seconds since the start of the run, MB), in time order.
    fn judge(samples: &[(f64, f64)]) -> Option<RssTrend> {
        let (first, last) = (samples.first()?.0, samples.last()?.0);
        let settle_s = first + (last - first) / 3.0;
        let split = settle_s + (last - settle_s) / 2.0;
        // [settle, split) and [split, last]: a sample at the split counts
        // once, in the later window.
        let peak = |inside: &dyn Fn(f64) -> bool| {
            let w: Vec<f64> = samples
                .iter()
                .filter(|s| inside(s.0))
                .map(|s| s.1)
                .collect();
            (w.len(), w.iter().copied().fold(0.0, f64::max))
        };
        let (n_early, early_peak) = peak(&|t| t >= settle_s && t < split);
        let (n_late, late_peak) = peak(&|t| t >= split);
        let flat = (n_early >= 3 && n_late >= 3)
            .then_some(late_peak <= early_peak * (1.0 + RSS_TOLERANCE));
        Some(RssTrend {
            settle_s: settle_s - first,
            window_s: split - settle_s,
            early_peak,
            late_peak,
            flat,
        })
    }

    /// Growth between the windows' peaks, per minute: the largest leak the
    /// run could have hidden is about this plus the tolerance.
    fn per_min(&self) -> f64 {
        if self.window_s > 0.0 {
            (self.late_peak - self.early_peak) / self.window_s * 60.0
        } else {
            0.0
        }
    }

    fn sentence(&self, mix_changed: bool) -> String {
        let verdict = match (mix_changed, self.flat) {
            (true, _) => {
                "**not judged**: a pool ran dry, so the mix changed during the run".to_owned()
            }
            (false, None) => "**not judged**: fewer than 3 samples in a window".to_owned(),
            (false, Some(true)) => format!("**flat** (within {:.0}%)", RSS_TOLERANCE * 100.0),
            (false, Some(false)) => format!(
                "**not flat**: the later peak is more than {:.0}% above the earlier one",
                RSS_TOLERANCE * 100.0
            ),
        };
        format!(
            "after the first {:.0} s (caches filling), peak {:.1} MB in the next {:.0} s and {:.1} MB in the last {:.0} s ({:+.1} MB, {:+.1} MB/min): {verdict}",
            self.settle_s,
            self.early_peak,
            self.window_s,
            self.late_peak,
            self.window_s,
            self.late_peak - self.early_peak,
            self.per_min(),
        )
    }
}

/// Whether a run's `once` targets ran out of lines before its end.
fn ran_dry(run: &Value) -> bool {
    run["exhausted"].as_array().is_some_and(|a| !a.is_empty())
}

/// A run's RSS samples as text, and the verdict on them.
struct MemoryVerdict {
    series: String,
    sentence: String,
    flat: bool,
}

impl MemoryVerdict {
    /// `None` when the run has no RSS samples.
    fn of(run: &Value) -> Option<Self> {
        let samples: Vec<(f64, f64)> = run["rss_kb"]
            .as_array()?
            .iter()
            .filter_map(|s| Some((s[0].as_f64()?, s[1].as_f64()? / 1024.0)))
            .collect();
        let trend = RssTrend::judge(&samples)?;
        let mix_changed = ran_dry(run);
        let series: Vec<String> = samples
            .iter()
            .map(|(t, mb)| format!("{t:.0} s: {mb:.1}"))
            .collect();
        Some(Self {
            series: series.join(", "),
            sentence: trend.sentence(mix_changed),
            flat: trend.flat == Some(true) && !mix_changed,
        })
    }
}

/// `loadgen rss FILE`: a run's RSS samples and their verdict.
fn rss(args: RssArgs) -> Result<bool, String> {
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let run: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let memory = MemoryVerdict::of(&run).ok_or("no RSS samples in this run")?;
    println!("RSS MB: {}\n{}", memory.series, memory.sentence);
    Ok(memory.flat)
}

#[cfg(test)]
mod tests {
    use super::RssTrend;

    /// 180 s sampled every 5 s, as bench/run does.
    fn series(mb: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..=36)
            .map(|i| f64::from(i) * 5.0)
            .map(|t| (t, mb(t)))
            .collect()
    }

    #[test]
    fn caches_filling_in_the_first_third_then_a_band_of_noise_is_flat() {
        // 60 MB of cache filling over the first 55 s (it would read as
        // growth if the first third were judged), then a wobble of 2.5 MB.
        let s = series(|t| {
            let fill = (t / 55.0).min(1.0) * 60.0;
            let wobble = if (t as u64 / 5) % 3 == 0 { 2.5 } else { 0.0 };
            100.0 + fill + wobble
        });
        let trend = RssTrend::judge(&s).unwrap();
        assert_eq!(trend.flat, Some(true));
        assert!((trend.settle_s - 60.0).abs() < 1e-9);
        assert!((trend.window_s - 60.0).abs() < 1e-9);
    }

    #[test]
    fn the_tolerance_is_two_percent_of_the_earlier_peak() {
        let late_by = |share: f64| {
            series(move |t| {
                if t < 120.0 {
                    180.0
                } else {
                    180.0 * (1.0 + share)
                }
            })
        };
        assert_eq!(RssTrend::judge(&late_by(0.015)).unwrap().flat, Some(true));
        assert_eq!(RssTrend::judge(&late_by(0.025)).unwrap().flat, Some(false));
        assert_eq!(RssTrend::judge(&late_by(-0.10)).unwrap().flat, Some(true));
    }

    #[test]
    fn a_high_point_in_the_earlier_window_does_not_hide_a_rise_after_it() {
        // Peaks, not single samples: the last sample alone (175) is below
        // the middle one (185), but the later window's peak is what counts.
        let s = series(|t| match t as u64 {
            90 => 185.0,
            150 => 192.0,
            180 => 175.0,
            _ => 180.0,
        });
        assert_eq!(RssTrend::judge(&s).unwrap().flat, Some(false));
    }

    #[test]
    fn a_sample_at_the_split_belongs_to_the_later_window_only() {
        // Were it counted in both windows, the earlier peak would match.
        let s = series(|t| {
            if t < 120.0 {
                180.0
            } else if t == 120.0 {
                190.0
            } else {
                181.0
            }
        });
        let trend = RssTrend::judge(&s).unwrap();
        assert!((trend.early_peak - 180.0).abs() < 1e-9);
        assert!((trend.late_peak - 190.0).abs() < 1e-9);
        assert_eq!(trend.flat, Some(false));
    }

    #[test]
    fn steady_growth_is_not_flat() {
        // 5 MB a minute on 170 MB: 5 MB between the windows' peaks, 2.8%
        // of the earlier one.
        let s = series(|t| 170.0 + t / 60.0 * 5.0);
        let trend = RssTrend::judge(&s).unwrap();
        assert_eq!(trend.flat, Some(false));
        assert!((trend.per_min() - 5.0).abs() < 0.5);
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let s = vec![(0.0, 100.0), (30.0, 100.0), (60.0, 130.0)];
        assert_eq!(RssTrend::judge(&s).unwrap().flat, None);
        assert!(RssTrend::judge(&[]).is_none());
    }
}
