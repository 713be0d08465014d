//! The local HTTP API as a boundary: the daemon refuses requests that are
//! not its own (other hosts, other origins, no token), its dashboard shows
//! what others named as text, and the CLI trusts no path an API names.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// A DNS-rebinding page, a cross-site form or script, and a local program
/// without the token are all refused; the node's own caller is not.
#[test]
fn the_local_api_admits_only_its_own_host_origin_and_token() {
    let net = CliDevnet::up(6);
    let api = net.api.clone();
    let (status, body) = http(&api, "GET", "/api/info", &[("Host", "evil.example")]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    let (status, _) = http(&api, "GET", "/api/info", &[]);
    assert_eq!(status, 200, "its own host reads");
    let (status, body) = http(
        &api,
        "GET",
        "/api/pins",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(status, 403, "{body}");
    // A cross-site "simple" POST: text/plain, no token.
    let (status, body) = http(
        &api,
        "POST",
        "/api/pin",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = http(
        &api,
        "DELETE",
        &format!("/api/datasets/cairn1{}", "a".repeat(52)),
        &[],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("token"), "{body}");

    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(100_000, 1)).unwrap();
    let o = net.cli_without_token(&["pin", data.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs the API token"), "{}", stderr(&o));
    let o = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let cid = stdout(&o).trim().to_string();
    // Reads on loopback need no token; security headers on every reply.
    let o = net.cli_without_token(&["get", &format!("{cid}/a.bin"), "-o", "-"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, bytes(100_000, 1));
    let o = net.cli_without_token(&["unpin", &cid]);
    assert!(
        !o.status.success(),
        "an unpin without the token went through"
    );
    // The token file named by the environment, as `--help` offers.
    let token = net.path().join("gateway").join("api.token");
    let o = cairn_env(
        &["unpin", &cid],
        &[
            ("CAIRN_API", net.api.as_str()),
            ("CAIRN_API_TOKEN_FILE", token.to_str().unwrap()),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// Bound beyond loopback (here to every address), the API wants the token
/// for reads too, and `cairn get` sends it on each request it makes: the
/// manifest, a dataset's packed stream, a single file.
#[test]
fn beyond_loopback_reads_want_the_token_and_get_sends_it() {
    let net = CliDevnet::with_gateway_api(6, 0, &[], "0.0.0.0:0");
    assert!(net.api.starts_with("0.0.0.0:"), "{}", net.api);
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let big = bytes(3_000_000, 2);
    std::fs::write(data.join("a.bin"), &big).unwrap();
    std::fs::write(data.join("sub").join("b.txt"), b"hello").unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let cid = stdout(&o).trim().to_string();

    // Without the token nothing is read: not the list, not the packed
    // stream, not a file.
    for path in [
        "/api/pins".to_string(),
        format!("/api/datasets/{cid}/bytes"),
        format!("/d/{cid}/a.bin"),
    ] {
        let (status, body) = http(&net.api, "GET", &path, &[]);
        assert_eq!(status, 403, "{path}: {body}");
    }
    let denied = net.dir.path().join("denied");
    let o = net.cli_without_token(&["get", &cid, "-o", denied.to_str().unwrap()]);
    assert!(!o.status.success(), "a get without the token went through");
    assert!(stderr(&o).contains("needs the API token"), "{}", stderr(&o));
    assert!(!denied.exists(), "a refused get left {}", denied.display());

    // With it, the whole dataset (its packed stream) and one file.
    let out = net.dir.path().join("out");
    let o = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(out.join("sub").join("b.txt")).unwrap(),
        b"hello"
    );
    let o = net.cli(&["get", &format!("{cid}/a.bin"), "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == big, "the single file came back different");
}

/// Clients that open connections and never finish a request cannot take
/// the API: it serves at most 64 connections at once (the rest wait in the
/// kernel's backlog and hold nothing of the daemon's) and closes one whose
/// headers have not come within 10 s; then it answers as before.
#[test]
fn slow_clients_cannot_take_the_api() {
    let net = CliDevnet::up(1);
    let gateway = net.pid("gateway");
    let port: u16 = net.api.rsplit(':').next().unwrap().parse().unwrap();
    // The API connections the gateway holds: its descriptors that are TCP
    // sockets on the API's port, not the listener. Counted by inode, so
    // the gateway's other sockets (QUIC, the devnet's own requests) whose
    // number changes meanwhile do not count.
    let held_by_gateway = || {
        let mut api_inodes = std::collections::HashSet::new();
        for table in ["tcp", "tcp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{gateway}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f[1].rsplit(':').next().unwrap();
                if u16::from_str_radix(local_port, 16) == Ok(port) && f[3] != "0A" {
                    api_inodes.insert(format!("socket:[{}]", f[9]));
                }
            }
        }
        std::fs::read_dir(format!("/proc/{gateway}/fd"))
            .unwrap()
            .flatten()
            .filter(|f| {
                std::fs::read_link(f.path())
                    .is_ok_and(|l| api_inodes.contains(&*l.to_string_lossy()))
            })
            .count()
    };
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = std::net::TcpStream::connect(&net.api).unwrap();
        s.write_all(b"GET /api/info HTTP/1.1\r\nHost: ").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        held.push(s);
    }
    // The event: the gateway has taken as many as it serves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut most = held_by_gateway();
    while most < 64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the API took only {most} of 100 connections in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        most = most.max(held_by_gateway());
    }
    for (i, s) in held.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let ended = std::io::Read::read_to_end(s, &mut rest);
        assert!(ended.is_ok(), "connection {i} was held: {ended:?}");
        most = most.max(held_by_gateway());
    }
    assert!(most <= 64, "the API served {most} connections at once");
    let (status, body) = http(&net.api, "GET", "/api/info", &[]);
    assert_eq!(status, 200, "{body}");
}

/// A reader that stops taking a dataset's bytes is let go after 30 s: the
/// gateway drops the read (and the segments it holds) and ends the
/// response short, instead of holding them as long as the connection lives.
#[test]
fn a_gateway_reader_that_stops_reading_is_let_go() {
    let net = CliDevnet::up(6);
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let len = 64usize << 20;
    std::fs::write(data.join("a.bin"), bytes(len, 4)).unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let cid = stdout(&o).trim().to_string();
    let mut s = std::net::TcpStream::connect(&net.api).unwrap();
    write!(
        s,
        "GET /api/datasets/{cid}/bytes HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        net.api
    )
    .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut first).unwrap();
    // The attack: the reply is left unread for longer than the gateway waits.
    std::thread::sleep(std::time::Duration::from_secs(35));
    let mut rest = Vec::new();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(
        rest.len() < len,
        "a reader that stopped for 35 s was held and got all {} bytes",
        rest.len()
    );
}

/// A pin named like markup shows as text on the dashboard, in a real browser.
#[test]
fn a_pin_name_is_text_on_the_dashboard() {
    let Some(chromium) = chromium() else {
        return;
    };
    let net = CliDevnet::up(6);
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(10_000, 2)).unwrap();
    let name = "<img src=x onerror=alert(1)>";
    let o = net.cli(&["pin", data.to_str().unwrap(), "--name", name]);
    assert!(o.status.success(), "{}", text(&o));
    let dom = chromium_page(
        chromium,
        &format!("http://{}/", net.api),
        net.dir.path(),
        None,
    );
    assert!(
        dom.contains("<td>&lt;img src=x onerror=alert(1)&gt;</td>"),
        "the pin's name is not shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<img"),
        "markup from a pin name reached the page:\n{dom}"
    );
}

/// A page of another site that the operator opens in a real browser embeds
/// the API's calls (images, a script, a frame: requests a browser makes
/// without `Origin`): none of them reaches a handler, so the page cannot make
/// the node ask its validators; a dataset's file embedded the same way is
/// served. Counted by the node's own `/metrics`.
#[test]
fn a_page_of_another_site_cannot_make_the_api_act() {
    let Some(chromium) = chromium() else {
        return;
    };
    let net = CliDevnet::up(6);
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(10_000, 3)).unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let cid = stdout(&o).trim().to_string();
    let api = net.api.clone();
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    // The other site: `localhost` is another site than `127.0.0.1`.
    let page = format!(
        "<!doctype html><title>another site</title>\
         <img src=\"http://{api}/api/dialback\">\
         <img src=\"http://{api}/api/verdicts\">\
         <script src=\"http://{api}/api/pins\"></script>\
         <iframe src=\"http://{api}/api/info\"></iframe>\
         <img src=\"http://{api}/d/{cid}/a.bin\">"
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let site = format!(
        "http://localhost:{}/",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            // A connection the browser opens ahead and leaves idle holds
            // this server for 5 s at most.
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut request = String::new();
            let mut reader = BufReader::new(&stream);
            while reader.read_line(&mut request).is_ok_and(|n| n > 2) {}
            let _ = write!(
                &stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let count = |route: &str, class: &str| {
        metric(
            &api,
            &format!("cairn_http_requests_total{{route=\"{route}\",status=\"{class}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let routes = ["dialback", "verdicts", "pins", "info", "read"];
    let before: Vec<(f64, f64)> = routes
        .iter()
        .map(|r| (count(r, "2xx"), count(r, "4xx")))
        .collect();
    chromium_page(chromium, &site, net.dir.path(), None);
    for (route, (ok_before, refused_before)) in routes.iter().zip(before) {
        let (ok, refused) = (count(route, "2xx"), count(route, "4xx"));
        if *route == "read" {
            assert_eq!(
                ok,
                ok_before + 1.0,
                "the embedded dataset file was not served"
            );
            assert_eq!(
                refused, refused_before,
                "the embedded dataset file was refused"
            );
        } else {
            assert_eq!(
                ok, ok_before,
                "{route}: another site's page reached the handler"
            );
            assert!(
                refused > refused_before,
                "{route}: the browser's request was never seen ({refused_before} -> {refused})"
            );
        }
    }
}

/// An API (hostile, or simply wrong) that names `../evil` or an absolute
/// path makes `get` fail before it writes anything outside its output.
#[test]
fn get_writes_nothing_outside_its_output_whatever_paths_the_api_names() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("evil");
    let absolute = dir.path().join("absolute-target");
    let cid = format!("cairn1{}", "a".repeat(52));
    for bad in [
        "../evil".to_string(),
        absolute.display().to_string(),
        "a/../../evil".into(),
    ] {
        let entries = serde_json::json!([{"path": bad, "kind": "file", "size": 5, "offset": 0,
            "blake3": blake3::hash(b"evil!").to_hex().to_string(), "executable": false}]);
        let out = dir.path().join("out");
        let o = get_from_fake_api(&cid, entries, b"evil!", &out);
        assert!(!o.status.success(), "{bad}: get succeeded");
        assert!(stderr(&o).contains("unsafe path"), "{bad}: {}", stderr(&o));
        assert!(
            !outside.exists() && !absolute.exists(),
            "{bad}: written outside"
        );
        assert!(!out.exists(), "{bad}: a failed get left its output");
    }
}

/// A name holding control characters (here: one that would set the
/// terminal's title, and one that would clear the screen) is refused on
/// both sides: `cairn pin` names the file and sends nothing, `cairn get`
/// writes nothing; neither prints the characters raw.
#[test]
fn names_a_terminal_would_act_on_are_refused_and_never_printed_raw() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("\u{1b}]0;owned\u{7}a.txt"), b"x").unwrap();
    // The directory holding the name, and the file alone.
    for target in [data.clone(), data.join("\u{1b}]0;owned\u{7}a.txt")] {
        let o = cairn(&["--api", "127.0.0.1:9", "pin", target.to_str().unwrap()]);
        refused_for_a_control_character(&o, "pin");
    }

    let cid = format!("cairn1{}", "a".repeat(52));
    let entries = serde_json::json!([{"path": "x\u{1b}[2J.txt", "kind": "file", "size": 5,
        "offset": 0, "blake3": blake3::hash(b"evil!").to_hex().to_string(), "executable": false}]);
    let out = dir.path().join("out");
    let o = get_from_fake_api(&cid, entries, b"evil!", &out);
    refused_for_a_control_character(&o, "get");
    assert!(!out.exists(), "a refused get left its output");
}

/// `o` (of `cairn what`) failed naming a control character, and printed
/// none raw.
fn refused_for_a_control_character(o: &std::process::Output, what: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what} took a name with a control character"
    );
    assert!(err.contains("control character"), "{what}: {err}");
    assert!(!err.contains('\u{1b}'), "{what} printed it raw: {err:?}");
}

/// `cairn get CID -o out` against a fake API (on a port of its own) that
/// lists `entries` (a dataset of several files) and serves `served` for
/// every read.
fn get_from_fake_api(
    cid: &str,
    entries: serde_json::Value,
    served: &[u8],
    out: &Path,
) -> std::process::Output {
    let api = FakeApi::start(cid, entries, false, served);
    cairn(&[
        "--api",
        &api.addr.to_string(),
        "get",
        cid,
        "-o",
        out.to_str().unwrap(),
    ])
}

/// An API (hostile or wrong) on a port of its own: it lists `entries` for
/// `cid` and serves `served` for every read; `seen` holds the header lines
/// of the requests it got, lowercased.
struct FakeApi {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start(cid: &str, entries: serde_json::Value, single_file: bool, served: &[u8]) -> FakeApi {
        Self::with_manifest(cid, entries, single_file, served, None)
    }

    /// As [`FakeApi::start`], answering `/api/datasets/<cid>/manifest` with
    /// `manifest` (without one, 404, as a daemon of an earlier release).
    fn with_manifest(
        cid: &str,
        entries: serde_json::Value,
        single_file: bool,
        served: &[u8],
        manifest: Option<Vec<u8>>,
    ) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes: u64 = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["size"].as_u64().unwrap())
            .sum();
        let view = serde_json::json!({
            "cid": cid, "bytes": bytes, "single_file": single_file, "data_shards": 1,
            "parity_shards": 1, "segment_size": 64, "segments": 1, "placement_version": 1,
            "entries": entries
        })
        .to_string();
        let served = served.to_vec();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || fake_api(listener, &view, &served, manifest.as_deref(), &log));
        FakeApi { addr, seen }
    }

    fn saw(&self, header: &str) -> bool {
        let header = header.to_ascii_lowercase();
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with(&header))
    }
}

/// What `cairn get` writes is the dataset the CID names, whoever answers:
/// the API's listing must be the manifest whose BLAKE3 is the CID. A
/// manifest of another dataset, or a listing that differs from the
/// manifest (another file's bytes and BLAKE3 under the same name), fails
/// the get before anything is written; the true listing passes and says
/// it was checked.
#[test]
fn get_checks_the_listing_against_the_cid() {
    let dir = tempfile::tempdir().unwrap();
    let hash = |b: &[u8]| *blake3::hash(b).as_bytes();
    let manifest = cairn_proto::Manifest {
        owner: cairn_proto::SecretKey::generate().public(),
        data_shards: 1,
        parity_shards: 1,
        segment_size: 64,
        total_len: 5,
        single_file: true,
        entries: vec![cairn_proto::Entry {
            path: "a.bin".into(),
            kind: cairn_proto::EntryKind::File,
            size: 5,
            offset: 0,
            blake3: hash(b"hello"),
            executable: false,
        }],
        segments: vec![cairn_proto::SegmentRecord {
            len: 5,
            blake3: hash(b"hello"),
            shards: vec![cairn_proof::ShardId([1; 32]), cairn_proof::ShardId([2; 32])],
        }],
    };
    let bytes = manifest.encode();
    let cid = manifest.cid().to_string();
    let listing = |content: &[u8]| {
        serde_json::json!([{"path": "a.bin", "kind": "file", "size": 5, "offset": 0,
            "blake3": blake3::hash(content).to_hex().to_string(), "executable": false}])
    };
    let get = |cid: &str, content: &[u8], out: &str| {
        let api = FakeApi::with_manifest(cid, listing(content), true, content, Some(bytes.clone()));
        let out = dir.path().join(out);
        let o = cairn(&[
            "--api",
            &api.addr.to_string(),
            "get",
            cid,
            "-o",
            out.to_str().unwrap(),
        ]);
        (o, out)
    };
    let other = format!("cairn1{}", "a".repeat(52));
    let (o, out) = get(&other, b"hello", "other");
    assert!(!o.status.success(), "another dataset's manifest was taken");
    assert!(stderr(&o).contains("does not hash to it"), "{}", stderr(&o));
    assert!(!out.exists());
    let (o, out) = get(&cid, b"HELLO", "forged");
    assert!(
        !o.status.success(),
        "a listing unlike the manifest was taken"
    );
    assert!(
        stderr(&o).contains("is not what its manifest holds"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // To standard output the bytes cannot be taken back: the exit status
    // says they were wrong.
    let api = FakeApi::with_manifest(&cid, listing(b"hello"), true, b"HELLO", Some(bytes.clone()));
    let o = cairn(&[
        "--api",
        &api.addr.to_string(),
        "get",
        &format!("{cid}/a.bin"),
        "-o",
        "-",
    ]);
    assert!(!o.status.success(), "wrong bytes to stdout passed");
    assert!(
        stderr(&o).contains("a.bin: the bytes written do not match the manifest"),
        "{}",
        stderr(&o)
    );
    let api = FakeApi::with_manifest(&cid, listing(b"hello"), true, b"hello", Some(bytes.clone()));
    let o = cairn(&["--api", &api.addr.to_string(), "get", &cid, "-o", "-"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, b"hello");
    let (o, out) = get(&cid, b"hello", "true");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("the manifest against the CID"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(out).unwrap(), b"hello");
}

/// What the API says a file holds is all that reaches the disk, and a
/// dataset that lists nothing is an error, not a crash: a single-file
/// dataset whose file comes 1 MiB long for 5 bytes announced fails naming
/// it and leaves nothing; one listing no file fails saying so.
#[test]
fn get_keeps_no_more_than_the_manifest_announces() {
    let dir = tempfile::tempdir().unwrap();
    let cid = format!("cairn1{}", "a".repeat(52));
    let entries = serde_json::json!([{"path": "a.bin", "kind": "file", "size": 5,
        "offset": 0, "blake3": blake3::hash(b"hello").to_hex().to_string(),
        "executable": false}]);
    let api = FakeApi::start(&cid, entries, true, &vec![7u8; 1 << 20]);
    let out = dir.path().join("a.bin");
    let o = cairn(&[
        "--api",
        &api.addr.to_string(),
        "get",
        &cid,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "an endless file was taken");
    assert!(
        stderr(&o).contains("a.bin: the API sends more than the manifest's 5 bytes"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a failed get left a file"
    );

    let api = FakeApi::start(&cid, serde_json::json!([]), true, b"");
    let o = std::process::Command::new(cairn_bin())
        .args(["--api", &api.addr.to_string(), "get", &cid])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a dataset of no file was got");
    assert!(stderr(&o).contains("lists no file"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// This node's API token goes to this node's API only: `cairn --api` naming
/// another address (someone else's gateway) sends it no token unless one
/// is named with `--api-token-file`.
#[test]
fn the_node_token_goes_to_no_other_api() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    std::fs::create_dir_all(&data_dir).unwrap();
    let token = data_dir.join("api.token");
    std::fs::write(&token, "7".repeat(64)).unwrap();
    let cid = format!("cairn1{}", "a".repeat(52));
    let entries = serde_json::json!([{"path": "a.bin", "kind": "file", "size": 5,
        "offset": 0, "blake3": blake3::hash(b"hello").to_hex().to_string(),
        "executable": false}]);
    let get = |extra: &[&str], out: &str| {
        let api = FakeApi::start(&cid, entries.clone(), true, b"hello");
        let addr = api.addr.to_string();
        let out = dir.path().join(out);
        let mut args = vec!["--data-dir", data_dir.to_str().unwrap(), "--api", &addr];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["get", &cid, "-o", out.to_str().unwrap()]);
        let o = cairn(&args);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
        api
    };
    let api = get(&[], "one");
    assert!(
        !api.saw("authorization:"),
        "the node's token went to another API"
    );
    let api = get(&["--api-token-file", token.to_str().unwrap()], "two");
    assert!(
        api.saw("authorization: bearer 777"),
        "the named token was not sent"
    );
}

/// A dataset's packed stream that does not match its manifest (a file's
/// bytes differ, the stream is shorter or longer than the files, two files
/// overlap or leave a gap) fails the get, naming what is wrong, and leaves
/// no output behind.
#[test]
fn get_of_a_dataset_checks_every_file_of_the_packed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cid = format!("cairn1{}", "a".repeat(52));
    let hash = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    for (second_at, served, want) in [
        (
            5,
            &b"helloWORLD"[..],
            "b.bin: the bytes received do not match",
        ),
        (
            5,
            &b"hello"[..],
            "sends 5 bytes for a dataset whose files hold 10",
        ),
        (
            5,
            &b"helloworld!"[..],
            "sends 11 bytes for a dataset whose files hold 10",
        ),
        (
            3,
            &b"helloworld"[..],
            "b.bin: the manifest puts it at byte 3",
        ),
        (
            7,
            &b"hello..world"[..],
            "b.bin: the manifest puts it at byte 7",
        ),
    ] {
        let entries = serde_json::json!([
            {"path": "a.bin", "kind": "file", "size": 5, "offset": 0,
             "blake3": hash(b"hello"), "executable": false},
            {"path": "b.bin", "kind": "file", "size": 5, "offset": second_at,
             "blake3": hash(b"world"), "executable": false}]);
        let out = dir.path().join("out");
        let o = get_from_fake_api(&cid, entries, served, &out);
        assert!(!o.status.success(), "{want}: get succeeded");
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
        assert!(!out.exists(), "{want}: a failed get left its output");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{want}: a partial directory was left"
        );
    }
}

/// Serves any number of requests: the manifest view for `/api/...`, the
/// bytes for `/d/...` and a dataset's packed stream, one connection at a
/// time; each request's header lines go to `seen`.
fn fake_api(
    listener: TcpListener,
    view: &str,
    file: &[u8],
    manifest: Option<&[u8]>,
    seen: &Mutex<Vec<String>>,
) {
    for stream in listener.incoming().take(8).flatten() {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            seen.lock().unwrap().push(h.trim_end().to_ascii_lowercase());
        }
        let (status, body): (&str, &[u8]) = if line.contains(" /d/") || line.contains("/bytes ") {
            ("200 OK", file)
        } else if line.contains("/manifest ") {
            match manifest {
                Some(m) => ("200 OK", m),
                None => ("404 Not Found", br#"{"error": "no route"}"#),
            }
        } else {
            ("200 OK", view.as_bytes())
        };
        let mut s = stream;
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
    }
}
