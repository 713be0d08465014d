//! Each role's dashboard in a real browser (headless Chromium) against a
//! devnet with a validator: a miner whose disk lost bytes sees its failed
//! challenges, with the validator's reason and what to do, on its own page;
//! the validator's page lists every miner it scores. Screenshots are saved
//! in the test's target directory (`CARGO_TARGET_TMPDIR`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_api::ApiClient;
use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// The rows of table `id` in a dumped DOM, each as its cells' text
/// (entities decoded).
fn rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = format!("<table id=\"{id}\">");
    let Some(at) = dom.find(&start) else {
        return Vec::new();
    };
    let table = &dom[at + start.len()..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    table
        .split("<tr")
        .skip(1)
        .map(|tr| {
            tr.split(['<', '>'])
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0] == "td" || w[0] == "th")
                .map(|w| {
                    w[1].replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&quot;", "\"")
                        .replace("&amp;", "&")
                })
                .collect()
        })
        .collect()
}

/// What a miner logs for each challenge a validator failed.
const FAILED_CHALLENGE: &str = "a validator failed a challenge of this node";

#[test]
fn each_role_sees_on_its_dashboard_what_it_needs() {
    let Some(chromium) = chromium() else {
        return;
    };
    let net = CliDevnet::with(
        6,
        1,
        &[
            ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "10"),
            ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "1"),
            ("CAIRN_VALIDATOR_SAMPLES", "10"),
            ("CAIRN_VALIDATOR_REPAIR", "false"),
        ],
    );
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("weights.bin"), bytes(8 << 20, 3)).unwrap();
    let o = net.cli(&[
        "pin",
        data.to_str().unwrap(),
        "--name",
        "model <b>weights</b>",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Every fourth 16 KiB group of each shard zeroed.
    let every_fourth: Vec<usize> = (0..1024).step_by(4).collect();
    assert!(zero_shard_groups(&net.path().join("miner-0"), 0, &every_fourth) > 0);
    let lossy = net.node_id("miner-0").to_string();
    net.wait_report("miner-0 failing", Duration::from_secs(120), |r| {
        r.miners
            .iter()
            .any(|m| m.node_id == lossy && m.failures >= 2)
    });
    let api_of = |name: &str| net.member(name).api.expect("published its API");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));

    // The miner's page fills its verdict table from the validator's answers.
    let url = format!("http://{}/", api_of("miner-0"));
    let started = Instant::now();
    let (dom, verdict_rows) = loop {
        let dom = chromium_page(chromium, &url, net.dir.path(), None);
        let r = rows(&dom, "verdicts");
        // The page reads /api/info (with the problems logged) before the
        // verdicts it makes the node fetch: wait for both on one page.
        if r.iter()
            .any(|row| row.get(2).is_some_and(|o| o == "wrong-proof"))
            && rows(&dom, "problems")
                .iter()
                .any(|row| row[3].starts_with(FAILED_CHALLENGE))
        {
            break (dom, r);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no failed challenge on miner-0's dashboard:\n{dom}"
        );
    };
    let api = ApiClient::new(api_of("miner-0")).verdicts().unwrap();
    assert_eq!(
        verdict_rows[0],
        [
            "validator",
            "when",
            "outcome",
            "latency",
            "deadline",
            "shard",
            "why",
            "what to do"
        ]
    );
    let shown = &verdict_rows[1..];
    let all: Vec<_> = api.validators.iter().flat_map(|v| &v.verdicts).collect();
    assert!(!shown.is_empty() && shown.len() <= 50);
    // Every failed row is one of the validator's verdicts (the page shows
    // the same reason and advice as the API), newest first.
    for row in shown.iter().filter(|r| r[2] == "wrong-proof") {
        assert!(
            all.iter()
                .any(|v| v.outcome == row[2] && v.reason == row[6] && v.advice == row[7]),
            "row {row:?} is not among the API's verdicts {all:#?}"
        );
    }
    // Its own standing in the registry, and its last problems: the WARN it
    // logged for each failed challenge, with the advice, as the API has it.
    let info = rows(&dom, "info");
    let registry = info
        .iter()
        .find(|r| r[0] == "registry")
        .expect("a registry row");
    assert_eq!(registry[1], "local: registered; published addresses match");
    let problems = rows(&dom, "problems");
    let failed = problems
        .iter()
        .find(|r| r[3].starts_with(FAILED_CHALLENGE))
        .unwrap_or_else(|| panic!("the failed challenge is not among the problems: {problems:?}"));
    let api_info = ApiClient::new(api_of("miner-0")).info().unwrap();
    let logged = api_info
        .problems
        .iter()
        .find(|p| p.message == FAILED_CHALLENGE)
        .expect("the API lists the problem");
    assert_eq!(logged.level, "warn");
    assert_eq!(failed[4], logged.advice);
    assert!(
        all.iter().any(|v| v.advice == logged.advice),
        "the logged advice is a verdict's: {logged:?}"
    );
    // Traffic and who is connected: the validator that challenges it, as an
    // incoming peer with its role, as the API lists it.
    let validator = net.node_id("validator-0").to_string();
    let traffic = info
        .iter()
        .find(|r| r[0] == "bytes in / out")
        .expect("a traffic row");
    // "X MiB / Y MiB", from the API's counters (which the test checks
    // moved: proofs out, the pinned shards in).
    let both: Vec<f64> = traffic[1]
        .split(" / ")
        .map(|v| v.strip_suffix(" MiB").unwrap().parse().unwrap())
        .collect();
    assert_eq!(both.len(), 2, "{traffic:?}");
    let network = api_info.network.as_ref().unwrap();
    assert!(network.bytes_in > 0 && network.bytes_out > 0, "{network:?}");
    assert!(
        network
            .incoming
            .iter()
            .any(|p| p.node_id == validator && p.role == "validator"),
        "the validator is not among the API's incoming peers: {:?}",
        network.incoming
    );
    let peers = rows(&dom, "peers");
    assert!(
        peers
            .iter()
            .any(|r| r[0] == validator[..12] && r[1] == "validator" && r[2] == "in"),
        "the validator is not among the page's peers: {peers:?}"
    );
    let standing = rows(&dom, "standing");
    assert_eq!(standing.len(), 2, "one validator: {standing:?}");
    assert_eq!(standing[1][0], validator[..12]);
    chromium_page(
        chromium,
        &url,
        net.dir.path(),
        Some(&shots.join("dashboard-miner.png")),
    );

    // The validator's page: every miner it scores, the lossy one failing.
    let url = format!("http://{}/", api_of("validator-0"));
    let dom = chromium_page(chromium, &url, net.dir.path(), None);
    let scores = rows(&dom, "scores");
    let report = net.report();
    assert_eq!(scores.len(), report.miners.len() + 1, "{scores:?}");
    for m in &report.miners {
        let row = scores
            .iter()
            .find(|r| r[0] == m.node_id[..12])
            .unwrap_or_else(|| panic!("miner {} not on the page: {scores:?}", m.node_id));
        // the page was read before the report: it cannot show more audits
        let audits: u64 = row[4].parse().unwrap();
        assert!(audits <= m.audits, "{row:?} vs {m:?}");
    }
    let lossy_row = scores.iter().find(|r| r[0] == lossy[..12]).unwrap();
    assert!(lossy_row[12].contains("wrong proof"), "{lossy_row:?}");
    chromium_page(
        chromium,
        &url,
        net.dir.path(),
        Some(&shots.join("dashboard-validator.png")),
    );

    // A pin in progress on the gateway: the header and a quarter of the
    // file sent, the rest held back, so it stays in progress.
    let name = "slow <i>pin</i>";
    let size = 4u64 << 20;
    let header = cairn_api::encode_pin_header(&cairn_api::PinRequest {
        name: name.into(),
        files: vec![cairn_api::FileSpec {
            path: "x.bin".into(),
            size,
            executable: false,
            dir: false,
        }],
        single_file: true,
        data_shards: None,
        parity_shards: None,
        segment_size: None,
    })
    .unwrap();
    let token = std::fs::read_to_string(net.path().join("gateway").join("api.token")).unwrap();
    let mut slow = std::net::TcpStream::connect(&net.api).unwrap();
    write!(
        slow,
        "POST /api/pin HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        net.api,
        token.trim(),
        header.len() as u64 + size
    )
    .unwrap();
    slow.write_all(&header).unwrap();
    slow.write_all(&bytes(1 << 20, 9)).unwrap();
    let gateway_api = ApiClient::new(net.api.parse().unwrap());
    let started = Instant::now();
    let moving = loop {
        // Listed once the gateway has read the header: no event to wait on.
        if let Some(t) = gateway_api
            .transfers()
            .unwrap()
            .into_iter()
            .find(|t| t.kind == "pin")
        {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pin in progress is never listed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(moving.what, name);
    assert_eq!(moving.total, Some(size));
    assert!(moving.done <= 1 << 20, "{moving:?}");

    // The gateway's page: the pin, its name as text.
    let url = format!("http://{}/", net.api);
    let dom = chromium_page(chromium, &url, net.dir.path(), None);
    let pins = rows(&dom, "pins");
    assert!(
        pins.iter().any(|r| r[0] == "model <b>weights</b>"),
        "{pins:?}"
    );
    assert!(!dom.contains("<b>weights"), "markup reached the page");
    // The miners it sees (the API's list, one row each) and its edge cache.
    let seen = rows(&dom, "miners");
    let api_miners = ApiClient::new(net.api.parse().unwrap()).miners().unwrap();
    assert_eq!(api_miners.len(), 6, "{api_miners:?}");
    assert_eq!(seen.len(), api_miners.len() + 1, "{seen:?}");
    for m in &api_miners {
        assert!(
            seen.iter()
                .any(|r| r[0] == m.node_id[..12] && r[2] == m.addrs.join(" ")),
            "miner {} not on the gateway's page: {seen:?}",
            m.node_id
        );
    }
    let transfers = rows(&dom, "transfers");
    assert!(
        transfers
            .iter()
            .any(|r| r[0] == "pin" && r[1] == name && r[3].ends_with("of 4.0 MiB")),
        "the pin in progress is not on the page: {transfers:?}"
    );
    let cache = rows(&dom, "info");
    let cache = cache
        .iter()
        .find(|r| r[0] == "edge cache")
        .expect("an edge cache row");
    assert!(cache[1].contains("hit ratio"), "{cache:?}");
    chromium_page(
        chromium,
        &url,
        net.dir.path(),
        Some(&shots.join("dashboard-gateway.png")),
    );
    drop(slow);
    for png in [
        "dashboard-miner.png",
        "dashboard-validator.png",
        "dashboard-gateway.png",
    ] {
        let len = std::fs::metadata(shots.join(png)).unwrap().len();
        assert!(len > 10_000, "{png}: {len} bytes");
        println!("screenshot: {}", shots.join(png).display());
    }
}
