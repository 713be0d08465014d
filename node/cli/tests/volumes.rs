//! Several disks on one miner, with real mounts: a `cairn run` process whose
//! shards go to two volumes (`[[storage.volume]]`), each a mount point on a
//! tmpfs of its own, and one of them unmounted while the node serves, as an
//! unplugged USB disk would be.
//!
//! Needs root for `mount` (CI is); without it the test says so and skips,
//! which `CAIRN_REQUIRE_EXTERNAL=1` (CI) turns into a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_node::config::Role;
use cairn_proof::{ShardId, shard_id_and_outboard};
use cairn_proto::ShardState;
use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// Mounts made by the test, unmounted (lazily) however it ends.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn run(args: &[&str]) {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn tmpfs(&mut self, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        Self::run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=256m",
            "cairn-test",
            p(at),
        ]);
        self.0.push(at.to_path_buf());
    }

    fn bind(&mut self, from: &Path, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        Self::run(&["mount", "--bind", p(from), p(at)]);
        self.0.push(at.to_path_buf());
    }

    /// A clean unmount, as an operator does it (the node holds nothing
    /// open there between requests; a look at the marker in that instant
    /// makes it busy, so it is tried a few times).
    fn unmount(&mut self, at: &Path) {
        for _ in 0..50 {
            if Command::new("umount")
                .arg(p(at))
                .status()
                .unwrap()
                .success()
            {
                self.0.retain(|m| m != at);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} stayed busy", at.display());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").args(["-l", p(m)]).status();
        }
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn can_mount() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        assert!(
            std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
            "the volume test needs root (mount)"
        );
        eprintln!("SKIPPED: the volume test needs root (mount)");
    }
    root
}

/// Waits until the node's `/api/info` says volume `path` is `present`.
fn wait_volume(api: &str, path: &Path, present: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http(api, "GET", "/api/info", &[]);
        assert_eq!(status, 200, "{body}");
        let info: serde_json::Value = serde_json::from_str(&body).unwrap();
        let v = info["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["path"] == p(path))
            .unwrap_or_else(|| panic!("no volume {} in {info}", path.display()))
            .clone();
        if v["present"] == present {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "volume {} never became present={present}: {v}",
            path.display()
        );
        // The node looks for its volumes every 5 s: poll its state.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn doctor_volume_findings(dir: &Path, api: &str, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let o = cairn_env(
        &["--data-dir", p(dir), "--api", api, "doctor", "--json"],
        env,
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", stderr(&o)));
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "volume")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_disk_is_reported_lost_and_the_node_serves_the_rest() {
    if !can_mount() {
        return;
    }
    let net = TestNet::new();
    let root = net.dir.path();
    // Two "disks" (directories on a tmpfs of their own, so each mount point
    // is on another device than its parent), mounted where the config says.
    let mut mounts = Mounts(Vec::new());
    let disks = root.join("disks");
    mounts.tmpfs(&disks);
    let (disk_a, disk_b) = (disks.join("a"), disks.join("b"));
    std::fs::create_dir_all(&disk_a).unwrap();
    std::fs::create_dir_all(&disk_b).unwrap();
    let (vol_a, vol_b) = (root.join("mnt/a"), root.join("mnt/b"));
    mounts.bind(&disk_a, &vol_a);
    mounts.bind(&disk_b, &vol_b);

    // No shards in the data directory (an SD card): capacity 0 there.
    let miner = net.init("miner", "miner", &["--capacity", "0"]);
    let volumes = format!(
        "[{{ path = {:?}, capacity = \"64MiB\" }}, {{ path = {:?}, capacity = \"64MiB\" }}]",
        p(&vol_a),
        p(&vol_b)
    );
    let env = [
        ("CAIRN_STORAGE_VOLUME", volumes.as_str()),
        ("CAIRN_STORAGE_SCRUB_RATE", "0"),
    ];
    let mut d = Daemon::start(&miner, &env);
    d.wait_reconciled();
    let addr = d.addr().await;
    let api = d.member().await.api.unwrap().to_string();
    let (client, _) = net.client(Role::Client).await;

    // Shards spread over both disks, none in the data directory.
    let mut stored: Vec<(ShardId, Vec<u8>)> = Vec::new();
    for i in 0..16u64 {
        let data = bytes(200_000 + i as usize * 1000, i);
        let (id, _) = shard_id_and_outboard(&data);
        client.put_shard(&addr, id, &data, None).await.unwrap();
        stored.push((id, data));
    }
    let (on_a, on_b) = (shard_files(&disk_a).1, shard_files(&disk_b).1);
    assert_eq!(on_a.len() + on_b.len(), 16, "a {on_a:?} b {on_b:?}");
    assert!(
        on_a.len() >= 4 && on_b.len() >= 4,
        "spread by free space: a {} b {}",
        on_a.len(),
        on_b.len()
    );
    assert!(shard_files(&miner.path).1.is_empty());
    assert!(disk_a.join(cairn_node::VOLUME_MARKER).is_file());
    let doctor = doctor_volume_findings(&miner.path, &api, &env);
    assert!(
        doctor.len() == 2 && doctor.iter().all(|f| f["level"] == "ok"),
        "{doctor:#?}"
    );

    // Unplug disk b while the node serves.
    mounts.unmount(&vol_b);
    wait_volume(&api, &vol_b, false);
    // Its shards are reported lost (validators repair them elsewhere) and
    // answer "not stored"; disk a's are served as before, byte-exact.
    let inventory = client.inventory_all(&addr).await.unwrap();
    for (id, data) in &stored {
        let state = inventory.iter().find(|e| e.id == *id).unwrap().state;
        let got = client.get_shard(&addr, *id, 0, u64::MAX, None).await;
        if on_b.contains(&id.to_hex()) {
            assert_eq!(state, ShardState::Lost, "{id}");
            let Err(e) = got else {
                panic!("shard {id} of the unplugged disk was served");
            };
            assert!(e.to_string().contains("not stored"), "{e}");
        } else {
            assert_eq!(state, ShardState::Present, "{id}");
            assert_eq!(&got.unwrap().bytes, data);
        }
    }
    // New shards go to disk a only; the empty mount point stays empty.
    for i in 100..104u64 {
        let data = bytes(150_000, i);
        let (id, _) = shard_id_and_outboard(&data);
        client.put_shard(&addr, id, &data, None).await.unwrap();
        assert!(shard_files(&disk_a).1.contains(&id.to_hex()));
    }
    // A repair puts a lost shard back: it lands on disk a and is served.
    let (lost_id, lost_data) = stored
        .iter()
        .find(|(id, _)| on_b.contains(&id.to_hex()))
        .unwrap();
    client
        .put_shard(&addr, *lost_id, lost_data, None)
        .await
        .unwrap();
    assert_eq!(
        &client
            .get_shard(&addr, *lost_id, 0, u64::MAX, None)
            .await
            .unwrap()
            .bytes,
        lost_data
    );
    assert_eq!(
        std::fs::read_dir(&vol_b).unwrap().count(),
        0,
        "something was written into the empty mount point"
    );
    // The operator sees it: the dashboard's data, /metrics and doctor.
    let metrics = http(&api, "GET", "/metrics", &[]).1;
    assert!(
        metrics.contains(&format!(
            "cairn_volume_present{{volume=\"2\",path=\"{}\"}} 0",
            p(&vol_b)
        )),
        "{metrics}"
    );
    let doctor = doctor_volume_findings(&miner.path, &api, &env);
    let missing = doctor
        .iter()
        .find(|f| f["found"].as_str().unwrap().contains(p(&vol_b)))
        .unwrap();
    assert_eq!(missing["level"], "fail", "{missing}");
    assert!(
        missing["fix"].as_str().unwrap().contains("mount its disk"),
        "{missing}"
    );
    assert!(d.log().contains("volume missing"), "no warning in the log");
    // And the page: the Disks table (headless Chromium) says which is gone.
    if let Some(chromium) = chromium() {
        let dom = chromium_page(chromium, &format!("http://{api}/"), root, None);
        let table = dom
            .split("<table id=\"volumes\">")
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap_or_else(|| panic!("no Disks table on the page: {dom}"));
        let row_b = table
            .split("<tr")
            .find(|r| r.contains(p(&vol_b)))
            .unwrap_or_else(|| panic!("disk b not on the page: {table}"));
        assert!(
            row_b.contains("MISSING: its shards are reported lost"),
            "{row_b}"
        );
        let row_a = table.split("<tr").find(|r| r.contains(p(&vol_a))).unwrap();
        assert!(row_a.contains(">present<"), "{row_a}");
        let png = root.join("dashboard-miner-volumes.png");
        chromium_page(chromium, &format!("http://{api}/"), root, Some(&png));
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
        let _ = std::fs::copy(
            &png,
            std::env::temp_dir().join("dashboard-miner-volumes.png"),
        );
    }

    // Restarted with the disk still unplugged: it starts, the volume missing.
    d.terminate();
    let mut d = Daemon::start(&miner, &env);
    d.wait_reconciled();
    wait_volume(&api_of(&d).await, &vol_b, false);
    assert_eq!(std::fs::read_dir(&vol_b).unwrap().count(), 0);

    // Plugged back in: its shards are served again, byte-exact; the copy
    // replaced meanwhile is an orphan there, removed.
    mounts.bind(&disk_b, &vol_b);
    let api = api_of(&d).await;
    let addr = d.addr().await;
    client.forget(&d.node_id).await;
    // A put notices it first, most likely (it looks before choosing a
    // disk); the node reconciles once whoever noticed.
    let data = bytes(120_000, 999);
    let (id, _) = shard_id_and_outboard(&data);
    client.put_shard(&addr, id, &data, None).await.unwrap();
    wait_volume(&api, &vol_b, true);
    for (id, data) in &stored {
        assert_eq!(
            &client
                .get_shard(&addr, *id, 0, u64::MAX, None)
                .await
                .unwrap()
                .bytes,
            data,
            "{id}"
        );
    }
    let inventory = client.inventory_all(&addr).await.unwrap();
    assert!(inventory.iter().all(|e| e.state == ShardState::Present));
    // The reconcile after the disk came back removed the replaced copy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while shard_files(&disk_b).1.contains(&lost_id.to_hex()) {
        assert!(
            Instant::now() < deadline,
            "the replaced copy on disk b was never removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = client.info(&addr).await.unwrap();
    let on_disks = shard_files(&disk_a).1.len() + shard_files(&disk_b).1.len();
    assert_eq!(info.shards as usize, on_disks, "records and files agree");
    d.terminate();
}

async fn api_of(d: &Daemon) -> String {
    d.member().await.api.unwrap().to_string()
}
