//! `/metrics` of every role read by a reference parser (the strict
//! OpenMetrics parser of the `prometheus_client` Python package), and its
//! counters moving as the test pins, gets and a validator challenges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// Parses the exposition on stdin; prints every sample as
/// `name{label=value,...}: value` in JSON, and every family as `#name: 0`.
const PARSE: &str = r##"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out["#" + family.name] = 0
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"##;

type Samples = BTreeMap<String, f64>;

fn scrape(py: &Path, api: &str) -> Samples {
    let (status, body) = http(api, "GET", "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    let mut child = Command::new(py)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the parser refused /metrics of {api}: {}\n{body}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn at(s: &Samples, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

/// A sample summed over several nodes' scrapes.
fn sum(scrapes: &[Samples], key: &str) -> f64 {
    scrapes.iter().map(|s| at(s, key)).sum()
}

#[test]
fn metrics_parse_and_count_pins_gets_and_challenges() {
    let Some(py) = python_with("prometheus_client") else {
        return;
    };
    let net = CliDevnet::with(
        6,
        1,
        &[
            ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "20"),
            ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "5"),
        ],
    );
    let api = |name: &str| {
        net.member(name)
            .api
            .expect("the node published its API")
            .to_string()
    };
    let miners: Vec<String> = (0..6).map(|i| api(&format!("miner-{i}"))).collect();
    let scrape_miners = || -> Vec<Samples> { miners.iter().map(|m| scrape(&py, m)).collect() };
    let put_ok = "cairn_requests_total{kind=put_shard,outcome=ok}";
    let get_ok = "cairn_requests_total{kind=get_shard,outcome=ok}";
    let challenge_ok = "cairn_requests_total{kind=challenge,outcome=ok}";
    let pinned = "cairn_http_requests_total{route=pin,status=2xx}";

    let gateway0 = scrape(&py, &net.api);
    let miners0 = scrape_miners();
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(3 << 20, 7)).unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cid = v["cid"].as_str().unwrap().to_string();

    let gateway1 = scrape(&py, &net.api);
    let miners1 = scrape_miners();
    assert_eq!(at(&gateway1, pinned), at(&gateway0, pinned) + 1.0);
    assert!(
        sum(&miners1, put_ok) >= sum(&miners0, put_ok) + 4.0,
        "shard puts not counted: {miners1:#?}"
    );
    let stored = "cairn_transfer_bytes_total{direction=in,kind=shard}";
    assert!(sum(&miners1, stored) >= (3 << 20) as f64, "{miners1:#?}");
    let commits = "cairn_store_commit_duration_seconds_count";
    assert!(sum(&miners1, commits) >= sum(&miners0, commits) + 4.0);
    assert!(
        at(
            &gateway1,
            "cairn_http_request_duration_seconds_count{route=pin}"
        ) >= 1.0,
        "{gateway1:#?}"
    );

    let out = net.dir.path().join("out");
    let o = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let miners2 = scrape_miners();
    assert!(
        sum(&miners2, get_ok) >= sum(&miners1, get_ok) + 4.0,
        "shard reads not counted: {miners2:#?}"
    );
    let served = "cairn_transfer_bytes_total{direction=out,kind=shard}";
    assert!(sum(&miners2, served) > sum(&miners1, served));
    let gateway2 = scrape(&py, &net.api);
    assert!(
        at(&gateway2, "cairn_shard_bytes_received_total")
            > at(&gateway1, "cairn_shard_bytes_received_total")
    );

    // The validator challenges: miners count the answers, the validator
    // its verdicts per miner.
    net.wait_report("a few challenges", Duration::from_secs(120), |r| {
        r.challenges >= 8
    });
    let miners3 = scrape_miners();
    assert!(sum(&miners3, challenge_ok) >= 1.0, "{miners3:#?}");
    assert!(
        sum(
            &miners3,
            "cairn_transfer_bytes_total{direction=out,kind=proof}"
        ) > 0.0
    );
    assert!(
        sum(
            &miners3,
            "cairn_request_duration_seconds_count{kind=challenge}"
        ) >= 1.0
    );
    let validator = scrape(&py, &api("validator-0"));
    assert!(
        at(&validator, "cairn_validator_challenges_total") >= 8.0,
        "{validator:#?}"
    );
    let passes: f64 = (0..6)
        .map(|i| {
            let id = net.node_id(&format!("miner-{i}"));
            at(
                &validator,
                &format!("cairn_validator_audits_total{{miner={id},outcome=pass}}"),
            )
        })
        .sum();
    assert!(passes >= 8.0, "{validator:#?}");
    // A refused request is counted with its error code: an unknown shard.
    let o = cairn(&[
        "--data-dir",
        net.path().join("gateway").to_str().unwrap(),
        "shard",
        "get",
        &"00".repeat(32),
        "--peer",
        &net.node_id("miner-0").to_string(),
    ]);
    assert!(!o.status.success());
    let after = scrape(&py, &miners[0]);
    assert!(
        at(
            &after,
            "cairn_requests_total{kind=get_shard,outcome=not_found}"
        ) >= 1.0,
        "{after:#?}\n{}",
        text(&o)
    );
    // Every metric the packaged Grafana dashboard plots exists (the chain's
    // call errors only on chain; a family shows once it counted something,
    // as the store errors do after the refusal above).
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/grafana-dashboard.json"),
    )
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let scrapes: Vec<&Samples> = miners3
        .iter()
        .chain([&gateway2, &validator, &after])
        .collect();
    let mut plotted: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("cairn_"))
        .collect();
    plotted.sort();
    plotted.dedup();
    assert!(plotted.len() >= 15, "{plotted:?}");
    for name in plotted {
        if name == "cairn_chain_call_errors_total" {
            continue;
        }
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            scrapes
                .iter()
                .any(|s| s.contains_key(&format!("#{family}"))
                    || s.contains_key(&format!("#{name}"))),
            "the Grafana dashboard plots {name}, which no node exports"
        );
    }
}
