//! The node between real processes: throughput beside a raw QUIC stream,
//! challenge latency, idle memory and start-up with many shards.
//!
//! `cargo bench -p cairn-cli --bench node` prints one table measured in one
//! run. `CAIRN_BENCH_SMALL_SHARDS` sets the shard count of the memory part
//! (default 100000), `CAIRN_BENCH_MIB` the bytes moved per throughput test
//! (default 256), `CAIRN_BENCH_EPOCH_MIB` the dataset read epoch after
//! epoch (default 1024); `CAIRN_BENCH_ONLY=epochs` runs only that part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_node::config::Role;
use cairn_proof::{Challenge, ShardId, shard_id_and_outboard};
use cairn_testkit::bench::{env_num, rss_kib};
use cairn_testkit::bytes;
use cairn_testkit::net::*;
use iroh::endpoint::presets;

const RAW_ALPN: &[u8] = b"cairn-bench/raw";

fn main() {
    if std::env::var("CAIRN_BENCH_ROLE").as_deref() == Ok("raw-sink") {
        return tokio::runtime::Runtime::new().unwrap().block_on(raw_sink());
    }
    // `cargo test --benches` / `cargo bench -- --test`: compile-check only.
    if !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

/// A bare iroh endpoint that sinks uploads and sources downloads: the ceiling.
async fn raw_sink() {
    let ep = iroh::Endpoint::builder(presets::Minimal)
        .alpns(vec![RAW_ALPN.to_vec()])
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    println!("{} {}", ep.id(), ep.bound_sockets()[0]);
    while let Some(inc) = ep.accept().await {
        tokio::spawn(async move {
            let conn = inc.await.unwrap();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut op = [0u8; 9];
                    recv.read_exact(&mut op).await.unwrap();
                    let n = u64::from_le_bytes(op[1..].try_into().unwrap());
                    if op[0] == b'u' {
                        let mut total = 0u64;
                        while let Ok(Some(c)) = recv.read_chunk(1 << 20).await {
                            total += c.len() as u64;
                        }
                        send.write_all(&total.to_le_bytes()).await.unwrap();
                    } else {
                        let buf = vec![7u8; 1 << 20];
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(buf.len() as u64) as usize;
                            send.write_all(&buf[..k]).await.unwrap();
                            left -= k as u64;
                        }
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
}

struct Row(String, String);

/// Random 4 KiB reads of one file through the gateway.
struct RangedReads {
    /// One reader, one read at a time: p50, p99.
    p50: Duration,
    p99: Duration,
    /// 8 readers at once.
    per_sec_8: f64,
    /// Shard bytes the gateway received per read.
    fetched_per_read: f64,
    /// One reader, ranges whose data shard's holder is stopped: p50.
    holder_down_p50: Duration,
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// A 4 KiB range of `file` at a pseudo-random offset below `len`, read and
/// checked against `want`; returns how long it took.
fn read_4k(http: &HttpReader, api: &str, path: &str, want: &[u8], x: &mut u64) -> Duration {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let at = *x % (want.len() as u64 - 4096);
    read_at(http, api, path, want, at)
}

fn read_at(http: &HttpReader, api: &str, path: &str, want: &[u8], at: u64) -> Duration {
    let t = Instant::now();
    let (status, body) = http.get(api, path, Some(&format!("bytes={at}-{}", at + 4095)));
    let took = t.elapsed();
    assert_eq!(status, 206);
    assert!(
        body == want[at as usize..at as usize + 4096],
        "range at {at}"
    );
    took
}

fn ranged_reads(net: &CliDevnet, cid: &str, file: &str, want: &[u8]) -> RangedReads {
    let path = format!("/d/{cid}/{file}");
    let received = || metric(&net.api, "cairn_shard_bytes_received_total").unwrap();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let http = HttpReader::new();
    for _ in 0..20 {
        read_4k(&http, &net.api, &path, want, &mut x); // connections up
    }
    let before = received();
    let mut one: Vec<Duration> = (0..300)
        .map(|_| read_4k(&http, &net.api, &path, want, &mut x))
        .collect();
    let fetched_per_read = (received() - before) / 300.0;
    let t = Instant::now();
    std::thread::scope(|s| {
        for r in 0..8u64 {
            let path = &path;
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ r;
                let http = HttpReader::new();
                for _ in 0..100 {
                    read_4k(&http, &net.api, path, want, &mut x);
                }
            });
        }
    });
    let per_sec_8 = 800.0 / t.elapsed().as_secs_f64();

    // Stop one miner; read only where it held the data shard, in a file
    // pinned now and never read: what this gateway read before (the gets,
    // the reads above) may still be in its cache, and half of these reads
    // had been served from there.
    let fresh = bytes(64 << 20, 4242);
    let fresh_path = net.dir.path().join("holder-down.bin");
    std::fs::write(&fresh_path, &fresh).unwrap();
    let pin = net.cli(&["pin", fresh_path.to_str().unwrap(), "--json"]);
    assert!(pin.status.success(), "pin: {}", stderr(&pin));
    let v: serde_json::Value = serde_json::from_slice(&pin.stdout).unwrap();
    let (cid, want) = (v["cid"].as_str().unwrap(), &fresh[..]);
    let path = format!("/d/{cid}/holder-down.bin");
    let st = net.cli(&["status", cid, "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let victim = net.node_id("miner-0").fmt_short().to_string();
    net.devnet(&["stop-miner", "0"], &[]);
    let (seg, k) = (8u64 << 20, 4u64);
    let mut spans = Vec::new();
    for (s, segment) in st["segments"].as_array().unwrap().iter().enumerate() {
        for i in 0..k {
            if segment["shards"][i as usize][0] == victim.as_str() {
                let start = s as u64 * seg + i * (seg / k);
                if start + (seg / k) <= want.len() as u64 {
                    spans.push(start);
                }
            }
        }
    }
    assert!(
        !spans.is_empty(),
        "miner-0 holds no data shard of 8 segments"
    );
    // Each read in a 16 KiB group of its own (37 is prime to the 128 groups
    // of a shard), so that none is served by the group a read before it
    // decoded: with one such shard, reads 12 KiB apart had mostly hit the
    // cache (a p50 below the bare round trip).
    let group = 16u64 << 10;
    let mut down: Vec<Duration> = (0..100u64)
        .map(|j| {
            let span = spans[j as usize % spans.len()];
            let g = (j / spans.len() as u64 * 37) % ((seg / k) / group);
            let at = span + g * group + (j * 997) % (group - 4096);
            read_at(&http, &net.api, &path, want, at)
        })
        .collect();
    RangedReads {
        p50: percentile(&mut one, 0.5),
        p99: percentile(&mut one, 0.99),
        per_sec_8,
        fetched_per_read,
        holder_down_p50: percentile(&mut down, 0.5),
    }
}

/// One pin and one get of `total` fresh bytes (four files, seeded by
/// `round`) through `net`.
struct PinGet {
    /// MB/s of dataset bytes.
    pin: f64,
    get: f64,
    cpu: CpuPerGib,
    cid: String,
    /// Where the dataset's files were written before the pin.
    data: std::path::PathBuf,
}

/// Pins and gets one dataset of many small files (the shape of an image
/// or text corpus) through `net`: (files, bytes, pin seconds, get seconds).
fn many_small_files(net: &CliDevnet) -> (usize, u64, f64, f64) {
    let root = net.dir.path().join("small-files");
    let files = 5000usize;
    let mut total = 0u64;
    for i in 0..files {
        let p = root.join(format!("d{:02}/f{i:05}.bin", i % 50));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = (i * 4099) % (20 << 10);
        std::fs::write(&p, bytes(len, i as u64 + 1000)).unwrap();
        total += len as u64;
    }
    let t = Instant::now();
    let pin = net.cli(&["pin", root.to_str().unwrap(), "--json"]);
    let pin_secs = t.elapsed().as_secs_f64();
    assert!(pin.status.success(), "pin: {}", stderr(&pin));
    let v: serde_json::Value = serde_json::from_slice(&pin.stdout).unwrap();
    let cid = v["cid"].as_str().unwrap().to_string();
    let out = net.dir.path().join("small-files-back");
    let t = Instant::now();
    let get = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    let get_secs = t.elapsed().as_secs_f64();
    assert!(get.status.success(), "get: {}", stderr(&get));
    let p = format!("d07/f{:05}.bin", 4007);
    assert!(
        std::fs::read(out.join(&p)).unwrap() == std::fs::read(root.join(&p)).unwrap(),
        "{p} differs after get"
    );
    (files, total, pin_secs, get_secs)
}

/// One round of the raw stream (MB/s up and down, the CPU s per GiB of
/// sender and receiver each way) beside a pin and get.
struct Round {
    raw_up: f64,
    raw_down: f64,
    raw_cpu_per_gib: [f64; 4],
    ds: PinGet,
}

fn pin_and_get(net: &CliDevnet, total: u64, round: u64) -> PinGet {
    let cpu = |who: &str| cairn_testkit::bench::cpu_secs(net.pid(who));
    let miners_cpu = || (0..6).map(|i| cpu(&format!("miner-{i}"))).sum::<f64>();
    let dir = net.dir.path();
    let data = dir.join(format!("data-{round}"));
    std::fs::create_dir_all(&data).unwrap();
    let parts = [0.4, 0.3, 0.2, 0.1];
    let mut written = 0u64;
    for (i, share) in parts.iter().enumerate() {
        let len = (total as f64 * share) as usize;
        std::fs::write(
            data.join(format!("part-{i}.bin")),
            bytes(len, round * 16 + i as u64 + 7),
        )
        .unwrap();
        written += len as u64;
    }
    let cli_cpu = cairn_testkit::bench::children_cpu_secs;
    let (g0, m0, c0) = (cpu("gateway"), miners_cpu(), cli_cpu());
    let t = Instant::now();
    let pin = net.cli(&["pin", data.to_str().unwrap(), "--json"]);
    let pin_secs = t.elapsed().as_secs_f64();
    let (g1, m1, c1) = (cpu("gateway"), miners_cpu(), cli_cpu());
    assert!(pin.status.success(), "pin: {}", stderr(&pin));
    let v: serde_json::Value = serde_json::from_slice(&pin.stdout).unwrap();
    let cid = v["cid"].as_str().unwrap().to_string();
    let out = dir.join(format!("out-{round}"));
    let t = Instant::now();
    let get = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    let get_secs = t.elapsed().as_secs_f64();
    let (g2, m2, c2) = (cpu("gateway"), miners_cpu(), cli_cpu());
    let gib = written as f64 / (1u64 << 30) as f64;
    let cpu = CpuPerGib {
        pin_cli: (c1 - c0) / gib,
        pin_gateway: (g1 - g0) / gib,
        pin_miners: (m1 - m0) / gib,
        get_cli: (c2 - c1) / gib,
        get_gateway: (g2 - g1) / gib,
        get_miners: (m2 - m1) / gib,
    };
    assert!(get.status.success(), "get: {}", stderr(&get));
    for i in 0..parts.len() {
        let name = format!("part-{i}.bin");
        assert!(
            std::fs::read(out.join(&name)).unwrap() == std::fs::read(data.join(&name)).unwrap(),
            "{name} differs after get"
        );
    }
    PinGet {
        pin: written as f64 / pin_secs / 1e6,
        get: written as f64 / get_secs / 1e6,
        cpu,
        cid,
        data,
    }
}

/// A dataset bigger than the gateway's memory tier read in order epoch
/// after epoch, as a training job does, beside a local file of the same
/// bytes: with the page cache warm, and cold (the case of a dataset bigger
/// than RAM; needs root to drop the page cache).
struct Epochs {
    /// MB/s reading the local file (1 MiB reads), warm and cold.
    local: f64,
    local_cold: Option<f64>,
    /// MB/s of the same bytes from a server that only writes them to a
    /// loopback HTTP connection: the most any gateway could give here.
    bare_http: f64,
    /// MB/s of epoch 1 (from the miners), epoch 2 (from the cache, warm)
    /// and epoch 3 (from the cache after the page cache was dropped).
    first: f64,
    second: f64,
    /// The gateway's CPU seconds per GiB of epoch 2 (the mean of the rounds).
    second_gateway_cpu_per_gib: f64,
    third_cold: Option<f64>,
    /// Shard bytes the gateway received after epoch 1 (every epoch-2 round
    /// and epoch 3).
    later_received: f64,
    /// The gateway's largest RSS during the epochs, and its memory tier.
    gateway_rss_max: u64,
    memory_tier: u64,
}

/// Drops the page cache; false when this process may not.
fn drop_page_cache() -> bool {
    sync_disks();
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

fn sync_disks() {
    let _ = std::process::Command::new("sync").status();
}

/// How many times epoch 2 is read (each beside the local file and the bare
/// server).
const EPOCH_ROUNDS: usize = 3;
/// Rounds of raw stream, pin and get (the median ratio is reported).
const PIN_GET_ROUNDS: u64 = 3;

/// The index of the median of `v`.
fn median_index(v: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    order[v.len() / 2]
}

fn epochs(total: u64) -> Epochs {
    let memory_tier = 64u64 << 20;
    let net = CliDevnet::with(
        6,
        0,
        &[
            ("CAIRN_CACHE_MEMORY", "64MiB"),
            ("CAIRN_CACHE_DISK", "4GiB"),
        ],
    );
    let dir = net.dir.path().join("epochs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("train.bin");
    let chunk = 64usize << 20;
    let mut want = Vec::with_capacity(total as usize);
    for i in 0..total.div_ceil(chunk as u64) {
        let n = (total - i * chunk as u64).min(chunk as u64) as usize;
        want.extend_from_slice(&bytes(n, 1000 + i));
    }
    std::fs::write(&file, &want).unwrap();
    let pin = net.cli(&["pin", dir.to_str().unwrap(), "--json"]);
    assert!(pin.status.success(), "pin: {}", stderr(&pin));
    let v: serde_json::Value = serde_json::from_slice(&pin.stdout).unwrap();
    let path = format!("/d/{}/train.bin", v["cid"].as_str().unwrap());

    // Every byte read is compared with the original, the same way for the
    // local file and the gateway.
    let local = || {
        use std::io::Read;
        let mut f = std::fs::File::open(&file).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let (t, mut pos) = (Instant::now(), 0usize);
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n] == want[pos..pos + n]);
            pos += n;
        }
        assert_eq!(pos as u64, total);
        total as f64 / t.elapsed().as_secs_f64() / 1e6
    };
    let gateway = net.pid("gateway");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let received = || metric(&net.api, "cairn_shard_bytes_received_total").unwrap();
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(rss_kib(gateway).0);
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        });
        let http = HttpReader::new();
        let epoch = || {
            let (t, mut pos) = (Instant::now(), 0usize);
            let (status, n) = http.stream(&net.api, &path, 1 << 20, |b| {
                assert!(b == &want[pos..pos + b.len()]);
                pos += b.len();
            });
            assert_eq!((status, n), (200, total));
            total as f64 / t.elapsed().as_secs_f64() / 1e6
        };
        let first = epoch();
        // The disk tier is written behind the reader: let it settle.
        let mut last = -1.0;
        loop {
            let now = metric(&net.api, "cairn_cache_disk_bytes").unwrap();
            if now == last {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = received();
        // Epoch 2 three times, each beside a read of the local file and of
        // the bare server: this machine's speed drifts from second to
        // second, so the ratio is taken within a round, and the round with
        // the median ratio is reported.
        let mut gateway_cpu = 0.0;
        let mut rounds: Vec<(f64, f64, f64)> = (0..EPOCH_ROUNDS)
            .map(|_| {
                let local_warm = local();
                let bare_http = {
                    let api = serve_once(s, &want);
                    let (t, mut pos) = (Instant::now(), 0usize);
                    let (status, n) = http.stream(&api, "/", 1 << 20, |b| {
                        assert!(b == &want[pos..pos + b.len()]);
                        pos += b.len();
                    });
                    assert_eq!((status, n), (200, total));
                    total as f64 / t.elapsed().as_secs_f64() / 1e6
                };
                let cpu = cairn_testkit::bench::cpu_secs(gateway);
                let second = epoch();
                gateway_cpu += cairn_testkit::bench::cpu_secs(gateway) - cpu;
                (local_warm, bare_http, second)
            })
            .collect();
        rounds.sort_by(|a, b| (a.2 / a.0).total_cmp(&(b.2 / b.0)));
        let (local_warm, bare_http, second) = rounds[EPOCH_ROUNDS / 2];
        let (local_cold, third_cold) = if drop_page_cache() {
            let l = local();
            drop_page_cache();
            (Some(l), Some(epoch()))
        } else {
            (None, None)
        };
        let later_received = received() - before;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Epochs {
            local: local_warm,
            local_cold,
            bare_http,
            first,
            second,
            second_gateway_cpu_per_gib: gateway_cpu
                / EPOCH_ROUNDS as f64
                / (total as f64 / f64::from(1u32 << 30)),
            third_cold,
            later_received,
            gateway_rss_max: sampler.join().unwrap() << 10,
            memory_tier,
        }
    })
}

/// Answers one HTTP GET on a loopback port with `body` (written from
/// memory, 1 MiB at a time, nothing else done): the transport's ceiling for
/// the epoch rows. A measuring instrument, not a server: one fixed reply.
fn serve_once<'s>(scope: &'s std::thread::Scope<'s, '_>, body: &'s [u8]) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    scope.spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut conn = conn;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        for piece in body.chunks(1 << 20) {
            if conn.write_all(piece).is_err() {
                return;
            }
        }
    });
    addr
}

/// CPU seconds per GiB of dataset bytes, by process.
struct CpuPerGib {
    /// The `cairn` command (reads or writes the files, talks HTTP to the gateway).
    pin_cli: f64,
    pin_gateway: f64,
    pin_miners: f64,
    get_cli: f64,
    get_gateway: f64,
    get_miners: f64,
}

async fn bench() {
    if std::env::var("CAIRN_BENCH_ONLY").as_deref() == Ok("epochs") {
        let mib = env_num("CAIRN_BENCH_EPOCH_MIB", 1024);
        let e = epochs(mib << 20);
        println!(
            "epoch 1 {:.0} MB/s, epoch 2 {:.0} MB/s (gateway {:.3} CPU s/GiB) vs local {:.0} MB/s ({:.2}x) and bare loopback HTTP {:.0} MB/s ({:.2}x), cold: epoch 3 {:?} vs local {:?}, {} bytes from miners after epoch 1, gateway RSS max {:.0} MiB",
            e.first,
            e.second,
            e.second_gateway_cpu_per_gib,
            e.local,
            e.second / e.local,
            e.bare_http,
            e.second / e.bare_http,
            e.third_cold,
            e.local_cold,
            e.later_received,
            e.gateway_rss_max as f64 / 1048576.0
        );
        return;
    }
    let mib = env_num("CAIRN_BENCH_MIB", 256);
    let total = mib << 20;
    let mut rows: Vec<Row> = Vec::new();

    // --- raw QUIC stream between two processes -------------------------------
    let mut sink = std::process::Command::new(std::env::current_exe().unwrap())
        .env("CAIRN_BENCH_ROLE", "raw-sink")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sink.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let mut parts = line.split_whitespace();
    let sink_id: iroh::PublicKey = parts.next().unwrap().parse().unwrap();
    let sink_addr: std::net::SocketAddr = parts.next().unwrap().parse().unwrap();
    let ep = iroh::Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    let conn = ep
        .connect(
            iroh::EndpointAddr::new(sink_id).with_ip_addr(sink_addr),
            RAW_ALPN,
        )
        .await
        .unwrap();
    let buf = vec![1u8; 1 << 20];
    let raw_cpu = || {
        (
            cairn_testkit::bench::own_cpu_secs(),
            cairn_testkit::bench::cpu_secs(sink.id()),
        )
    };
    // A bare 16 KiB request/response round trip: what a ranged read is
    // measured against (before the devnet exists, as it always was).
    let mut rt = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        let mut op = vec![b'd'];
        op.extend_from_slice(&(16u64 << 10).to_le_bytes());
        s.write_all(&op).await.unwrap();
        s.finish().unwrap();
        let mut got = 0usize;
        while let Some(c) = r.read_chunk(1 << 20).await.unwrap() {
            got += c.len();
        }
        assert_eq!(got, 16 << 10);
        rt.push(t.elapsed());
    }
    let rt_p50 = percentile(&mut rt, 0.5);
    // The raw stream and the dataset's pin and get take turns, round after
    // round, on one devnet (6 miner processes + the gateway daemon, k = 4,
    // m = 2, 8 MiB segments): each ratio is taken within a round, so both
    // sides see the same moment of this shared machine, and the round with
    // the median ratio is reported (one raw measure alone moved 20% between
    // runs).
    let net = CliDevnet::up(6);
    let mut rounds = Vec::new();
    for round in 0..PIN_GET_ROUNDS {
        let up0 = raw_cpu();
        let raw_up = {
            let t = Instant::now();
            let (mut s, mut r) = conn.open_bi().await.unwrap();
            let mut op = vec![b'u'];
            op.extend_from_slice(&0u64.to_le_bytes());
            s.write_all(&op).await.unwrap();
            for _ in 0..mib {
                s.write_all(&buf).await.unwrap();
            }
            s.finish().unwrap();
            let mut got = [0u8; 8];
            r.read_exact(&mut got).await.unwrap();
            assert_eq!(u64::from_le_bytes(got), total);
            total as f64 / t.elapsed().as_secs_f64() / 1e6
        };
        let up1 = raw_cpu();
        let raw_down = {
            let t = Instant::now();
            let (mut s, mut r) = conn.open_bi().await.unwrap();
            let mut op = vec![b'd'];
            op.extend_from_slice(&total.to_le_bytes());
            s.write_all(&op).await.unwrap();
            s.finish().unwrap();
            let mut got = 0u64;
            while let Some(c) = r.read_chunk(1 << 20).await.unwrap() {
                got += c.len() as u64;
            }
            assert_eq!(got, total);
            total as f64 / t.elapsed().as_secs_f64() / 1e6
        };
        let down1 = raw_cpu();
        // CPU s per GiB of the bare stream: the transport's own cost, which
        // the dataset rows pay on every byte too.
        let raw_gib = total as f64 / (1u64 << 30) as f64;
        let raw_cpu_per_gib = [
            (up1.0 - up0.0) / raw_gib,
            (up1.1 - up0.1) / raw_gib,
            (down1.1 - up1.1) / raw_gib,
            (down1.0 - up1.0) / raw_gib,
        ];
        let ds = pin_and_get(&net, total, round);
        rounds.push(Round {
            raw_up,
            raw_down,
            raw_cpu_per_gib,
            ds,
        });
    }
    conn.close(0u32.into(), b"done");
    ep.close().await;
    let _ = sink.kill();
    let _ = sink.wait();
    let wire = 6.0 / 4.0;
    let n = rounds.len() as f64;
    let mean = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).sum::<f64>() / n;
    let pin_ratios: Vec<f64> = rounds.iter().map(|r| r.ds.pin * wire / r.raw_up).collect();
    let get_ratios: Vec<f64> = rounds.iter().map(|r| r.ds.get / r.raw_down).collect();
    // The sections below compare against the median raw stream.
    let raw_ups: Vec<f64> = rounds.iter().map(|r| r.raw_up).collect();
    let raw_downs: Vec<f64> = rounds.iter().map(|r| r.raw_down).collect();
    let (raw_up, raw_down) = (
        raw_ups[median_index(&raw_ups)],
        raw_downs[median_index(&raw_downs)],
    );
    let pin_round = &rounds[median_index(&pin_ratios)];
    let get_round = &rounds[median_index(&get_ratios)];
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mbs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
            + " MB/s"
    };
    rows.push(Row(
        format!("raw QUIC stream, upload (1 stream; {PIN_GET_ROUNDS} rounds)"),
        mbs(&raw_ups),
    ));
    rows.push(Row(
        format!("raw QUIC stream, download (1 stream; {PIN_GET_ROUNDS} rounds)"),
        mbs(&raw_downs),
    ));
    rows.push(Row(
        "  CPU s per GiB, raw stream: sender / receiver (up; down), mean".into(),
        format!(
            "{:.2} / {:.2}; {:.2} / {:.2}",
            mean(&|r| r.raw_cpu_per_gib[0]),
            mean(&|r| r.raw_cpu_per_gib[1]),
            mean(&|r| r.raw_cpu_per_gib[2]),
            mean(&|r| r.raw_cpu_per_gib[3])
        ),
    ));
    rows.push(Row(
        format!("cairn pin {mib} MiB dataset, k=4 m=2 on 6 miners (the median round)"),
        format!(
            "{:.0} MB/s of data ({:.0} MB/s of shards) vs raw {:.0} = {:.2} x raw upload (rounds: {})",
            pin_round.ds.pin,
            pin_round.ds.pin * wire,
            pin_round.raw_up,
            pin_round.ds.pin * wire / pin_round.raw_up,
            list(&pin_ratios)
        ),
    ));
    rows.push(Row(
        "cairn get of that dataset (verified, decoded, written; the median round)".into(),
        format!(
            "{:.0} MB/s of data vs raw {:.0} = {:.2} x raw download (rounds: {})",
            get_round.ds.get,
            get_round.raw_down,
            get_round.ds.get / get_round.raw_down,
            list(&get_ratios)
        ),
    ));
    rows.push(Row(
        "  CPU s per GiB of data, pin: cairn / gateway / 6 miners together, mean".into(),
        format!(
            "{:.2} / {:.2} / {:.2}",
            mean(&|r| r.ds.cpu.pin_cli),
            mean(&|r| r.ds.cpu.pin_gateway),
            mean(&|r| r.ds.cpu.pin_miners)
        ),
    ));
    rows.push(Row(
        "  CPU s per GiB of data, get: cairn / gateway / 6 miners together, mean".into(),
        format!(
            "{:.2} / {:.2} / {:.2}",
            mean(&|r| r.ds.cpu.get_cli),
            mean(&|r| r.ds.cpu.get_gateway),
            mean(&|r| r.ds.cpu.get_miners)
        ),
    ));
    let (files, files_bytes, files_pin, files_get) = many_small_files(&net);
    rows.push(Row(
        format!("cairn pin / get of {files} small files (0-20 KiB, one dataset)"),
        format!(
            "{:.2} s / {:.2} s ({:.0} / {:.0} files/s; get {:.0} MB/s = {:.2} x the large files' get)",
            files_pin,
            files_get,
            files as f64 / files_pin,
            files as f64 / files_get,
            files_bytes as f64 / files_get / 1e6,
            files_bytes as f64 / files_get / 1e6 / get_round.ds.get
        ),
    ));
    let first = &rounds[0].ds;
    let want = std::fs::read(first.data.join("part-0.bin")).unwrap();
    let ranged = ranged_reads(&net, &first.cid, "part-0.bin", &want);
    drop(net);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    rows.push(Row(
        "bare QUIC request/response of 16 KiB (p50)".into(),
        format!("{:.2} ms", ms(rt_p50)),
    ));
    rows.push(Row(
        "random 4 KiB Range reads via the gateway, 1 reader (p50 / p99)".into(),
        format!(
            "{:.2} ms / {:.2} ms; p50 = {:.1} x the bare round trip",
            ms(ranged.p50),
            ms(ranged.p99),
            ranged.p50.as_secs_f64() / rt_p50.as_secs_f64()
        ),
    ));
    rows.push(Row(
        "  8 readers at once".into(),
        format!("{:.0} reads/s", ranged.per_sec_8),
    ));
    rows.push(Row(
        "  shard bytes fetched from miners per 4 KiB read".into(),
        format!(
            "{:.0} bytes (the gateway's /metrics)",
            ranged.fetched_per_read
        ),
    ));
    rows.push(Row(
        "  the data shard's holder stopped, 1 reader (p50)".into(),
        format!(
            "{:.2} ms = {:.1} x the bare round trip",
            ms(ranged.holder_down_p50),
            ranged.holder_down_p50.as_secs_f64() / rt_p50.as_secs_f64()
        ),
    ));

    // --- a dataset bigger than memory, read epoch after epoch -----------------
    let epoch_mib = env_num("CAIRN_BENCH_EPOCH_MIB", 1024);
    let e = epochs(epoch_mib << 20);
    rows.push(Row(
        format!("{epoch_mib} MiB read in order via the gateway, epoch 1 (miners)"),
        format!("{:.0} MB/s", e.first),
    ));
    rows.push(Row(
        "  epoch 2 (64 MiB memory tier + disk tier), page cache warm (the median of 3 rounds; CPU: their mean)".into(),
        format!(
            "{:.0} MB/s = {:.2} x a local file ({:.0} MB/s); gateway {:.3} CPU s per GiB",
            e.second,
            e.second / e.local,
            e.local,
            e.second_gateway_cpu_per_gib,
        ),
    ));
    rows.push(Row(
        "  the same bytes from a bare loopback HTTP server (memory, no work)".into(),
        format!(
            "{:.0} MB/s = {:.2} x a local file; epoch 2 = {:.2} x this",
            e.bare_http,
            e.bare_http / e.local,
            e.second / e.bare_http,
        ),
    ));
    rows.push(Row(
        "  epoch 3, page cache dropped first (data > RAM)".into(),
        match (e.third_cold, e.local_cold) {
            (Some(g), Some(l)) => {
                format!("{g:.0} MB/s = {:.2} x a local file ({l:.0} MB/s)", g / l)
            }
            _ => "n/a (dropping the page cache needs root)".into(),
        },
    ));
    rows.push(Row(
        "  shard bytes from miners in epochs 2 and 3".into(),
        format!("{:.0}", e.later_received),
    ));
    rows.push(Row(
        "  gateway RSS at most, both epochs".into(),
        format!(
            "{:.0} MiB = memory tier + {:.0} MiB",
            e.gateway_rss_max as f64 / 1048576.0,
            (e.gateway_rss_max as f64 - e.memory_tier as f64) / 1048576.0
        ),
    ));

    // --- cairn put/get against a miner process ------------------------------
    let net = TestNet::new();
    let miner = net.init("miner", "miner", &["--capacity", "64GiB"]);
    let d = Daemon::start(
        &miner,
        &[
            ("CAIRN_STORAGE_SCRUB_RATE", "0"),
            ("CAIRN_LOG_LEVEL", "warn"),
        ],
    );
    let addr = d.addr().await;
    let (client, _) = net.client(Role::Validator).await;
    let client = Arc::new(client);
    let shard_len = 2usize << 20;
    let count = (total / shard_len as u64) as usize;
    let shards: Vec<(ShardId, Vec<u8>)> = (0..count)
        .map(|i| {
            let b = bytes(shard_len, i as u64 + 1000);
            (shard_id_and_outboard(&b).0, b)
        })
        .collect();
    let shards = Arc::new(shards);
    // sequential puts (each: stream, hash, one fsync, rename, synced commit)
    let put_rate = {
        let t = Instant::now();
        for (id, b) in shards.iter() {
            client.put_shard(&addr, *id, b, None).await.unwrap();
        }
        total as f64 / t.elapsed().as_secs_f64() / 1e6
    };
    let get_rate = {
        let t = Instant::now();
        for (id, b) in shards.iter() {
            let r = client
                .get_shard(&addr, *id, 0, u64::MAX, Some(b.len() as u64))
                .await
                .unwrap();
            assert_eq!(r.bytes.len(), b.len());
        }
        total as f64 / t.elapsed().as_secs_f64() / 1e6
    };
    let get4_rate = {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (client, shards, addr) = (Arc::clone(&client), Arc::clone(&shards), addr.clone());
            tasks.push(tokio::spawn(async move {
                for (id, b) in shards.iter().skip(w).step_by(4) {
                    client
                        .get_shard(&addr, *id, 0, u64::MAX, Some(b.len() as u64))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        total as f64 / t.elapsed().as_secs_f64() / 1e6
    };
    // One 4 KiB range of a shard straight from the miner (the protocol's
    // share of a ranged read through the gateway).
    let mut ranged = Vec::new();
    for i in 0..300u64 {
        let (id, b) = &shards[i as usize % shards.len()];
        let at = (i * 40_961) % (b.len() as u64 - 4096);
        let t = Instant::now();
        let r = client
            .get_shard(&addr, *id, at, 4096, Some(b.len() as u64))
            .await
            .unwrap();
        ranged.push(t.elapsed());
        assert!(r.bytes == b[at as usize..at as usize + 4096]);
    }
    rows.push(Row(
        "4 KiB range of a shard from a miner, verified (p50)".into(),
        format!("{:.2} ms", percentile(&mut ranged, 0.5).as_secs_f64() * 1e3),
    ));
    rows.push(Row(
        format!("cairn put, {count} x 2 MiB shards, sequential"),
        format!("{put_rate:.0} MB/s = {:.2} x raw upload", put_rate / raw_up),
    ));
    rows.push(Row(
        "cairn get (verified), sequential".into(),
        format!(
            "{get_rate:.0} MB/s = {:.2} x raw download",
            get_rate / raw_down
        ),
    ));
    rows.push(Row(
        "cairn get (verified), 4 in parallel".into(),
        format!(
            "{get4_rate:.0} MB/s = {:.2} x raw download",
            get4_rate / raw_down
        ),
    ));

    // --- challenge latency -----------------------------------------------------
    let mut lat = Vec::new();
    let mut verify_us = Vec::new();
    for i in 0..500u32 {
        let (id, b) = &shards[i as usize % shards.len()];
        let mut nonce = [0u8; 32];
        nonce[..4].copy_from_slice(&i.to_le_bytes());
        let ch = Challenge::new(*id, b.len() as u64, nonce, 44).unwrap();
        let t = Instant::now();
        let proof = client.challenge(&addr, &ch).await.unwrap();
        lat.push(t.elapsed());
        let t = Instant::now();
        cairn_proof::verify(&ch, &proof).unwrap();
        verify_us.push(t.elapsed());
    }
    lat.sort();
    verify_us.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    rows.push(Row(
        "challenge c=44 on a 2 MiB shard, answered (p50 / p99)".into(),
        format!(
            "{:.2} ms / {:.2} ms",
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3
        ),
    ));
    rows.push(Row(
        "  of which verification at the validator (p50)".into(),
        format!("{:.2} ms", pct(&verify_us, 0.5).as_secs_f64() * 1e3),
    ));
    let (rss, hwm) = rss_kib(d.child.id());
    rows.push(Row(
        format!("miner RSS after serving {mib} MiB in and out (now / peak)"),
        format!(
            "{:.1} MiB / {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    ));
    drop(d);

    // --- many small shards: idle RSS and time to serving --------------------
    let small = env_num("CAIRN_BENCH_SMALL_SHARDS", 100_000) as usize;
    let many = net.init("many", "miner", &["--capacity", "64GiB"]);
    let env = [
        ("CAIRN_STORAGE_SCRUB_RATE", "0"),
        ("CAIRN_LOG_LEVEL", "warn"),
    ];
    let mut d = Daemon::start(&many, &env);
    let (empty_rss, _) = rss_kib(d.child.id());
    let addr = d.addr().await;
    let t = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, addr, next) = (Arc::clone(&client), addr.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= small {
                    break;
                }
                let mut b = vec![0u8; 4096];
                b[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let (id, _) = shard_id_and_outboard(&b);
                client.put_shard(&addr, id, &b, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fill = t.elapsed();
    let (full_rss, _) = rss_kib(d.child.id());
    assert!(d.terminate().success());
    client.forget(&many.node_id).await;
    let t = Instant::now();
    let mut d = Daemon::start(&many, &env);
    let ready = t.elapsed();
    let (ready_rss, _) = rss_kib(d.child.id());
    d.wait_reconciled();
    let reconciled = t.elapsed();
    // idle: a few seconds of nothing after reconcile
    let idle_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < idle_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (idle_rss, idle_hwm) = rss_kib(d.child.id());
    let addr = d.addr().await;
    let info = client.info(&addr).await.unwrap();
    assert_eq!(info.shards, small as u64);
    rows.push(Row(
        format!("{small} x 4 KiB puts, 32 in parallel"),
        format!(
            "{:.1} s ({:.0} shards/s)",
            fill.as_secs_f64(),
            small as f64 / fill.as_secs_f64()
        ),
    ));
    rows.push(Row(
        "miner RSS: empty, idle".into(),
        format!("{:.1} MiB", empty_rss as f64 / 1024.0),
    ));
    rows.push(Row(
        format!("miner RSS: after {small} puts"),
        format!("{:.1} MiB", full_rss as f64 / 1024.0),
    ));
    rows.push(Row(
        format!("restart with {small} shards: spawn to READY=1"),
        format!(
            "{:.0} ms (RSS {:.1} MiB)",
            ready.as_secs_f64() * 1e3,
            ready_rss as f64 / 1024.0
        ),
    ));
    rows.push(Row(
        "  background reconcile done after".into(),
        format!("{:.2} s", reconciled.as_secs_f64()),
    ));
    rows.push(Row(
        format!("miner RSS idle with {small} shards (now / peak)"),
        format!(
            "{:.1} MiB / {:.1} MiB",
            idle_rss as f64 / 1024.0,
            idle_hwm as f64 / 1024.0
        ),
    ));

    println!("\ncairn node, two processes on loopback, one run");
    for r in &rows {
        println!("  {:<58} {}", r.0, r.1);
    }
}
