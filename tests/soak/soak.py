#!/usr/bin/env python3
"""A soak: a devnet with a validator under a mixed load for a given time.

    tests/soak/soak.py --minutes 60 [--cairn target/release/cairn] [--miners 8]

Load, all at once, for the whole time:
  - pins: many small datasets (tens of small files) and now and then a large
    one (one file of --large-mib);
  - reads: random `Range` reads of pinned files through the gateway, each
    compared with the file on disk, and now and then a whole `cairn get`;
  - unpins: a random small dataset now and then (it must then be gone);
  - chaos: every --kill-every seconds a random miner is killed (kill -9)
    and started again --down seconds later, long enough for the validator's
    grace to run out, so its shards are repaired elsewhere;
  - the validator challenges at a high rate.

Every --sample-every seconds it records each process's RSS and open file
descriptors. At the end it starts every miner, waits for repair to catch
up, and checks: every byte of every pinned dataset reads back (`cairn get`,
BLAKE3-free: byte comparison with the source); no segment lost; no unpinned
dataset readable; RSS and descriptors flat after warm-up (the last quarter
against the first sample after warm-up); no ERROR line in any log that the
chaos does not explain. It prints the table over time and exits non-zero
when a check fails.

Real processes, real disks, real kill -9; stdlib only.
"""

import argparse
import calendar
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

KIB = 1024
MIB = 1024 * KIB


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Devnet:
    def __init__(self, cairn, root, miners, validators, env):
        self.cairn = cairn
        self.dir = os.path.join(root, "net")
        self.miners = miners
        self.env = dict(os.environ, **env)
        out = self.run(
            "devnet", "up", "--miners", str(miners), "--validators", str(validators),
            "--capacity", "8GiB", "--gateway-api", "127.0.0.1:0", "--dir", self.dir,
            cli=False,
        )
        if out.returncode != 0:
            sys.exit(f"devnet up failed: {out.stdout}{out.stderr}")
        with open(os.path.join(self.dir, "api")) as f:
            self.api = f.read().strip()
        self.token = os.path.join(self.dir, "gateway", "api.token")
        self.lock = threading.Lock()
        self.down = set()

    def run(self, *args, cli=True, timeout=900):
        cmd = [self.cairn]
        if cli:
            cmd += ["--api", self.api, "--api-token-file", self.token]
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)

    def devnet(self, *args):
        out = self.run("devnet", *args, "--dir", self.dir, cli=False)
        if out.returncode != 0:
            raise RuntimeError(f"devnet {' '.join(args)}: {out.stdout}{out.stderr}")

    def nodes(self):
        return sorted(n for n in os.listdir(self.dir)
                      if os.path.isfile(os.path.join(self.dir, n, "pid")))

    def pid(self, name):
        try:
            with open(os.path.join(self.dir, name, "pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def stop_miner(self, i):
        with self.lock:
            self.devnet("stop-miner", str(i))
            self.down.add(i)

    def start_miner(self, i):
        with self.lock:
            self.devnet("start-miner", str(i))
            self.down.discard(i)

    def read_range(self, cid, path, start, end):
        url = f"http://{self.api}/d/{cid}/{urllib.request.quote(path)}"
        req = urllib.request.Request(url, headers={"Range": f"bytes={start}-{end - 1}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()


def proc_stats(pid):
    """RSS in KiB and open descriptors of a process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except (OSError, StopIteration):
        return None


def make_dataset(root, name, rng, large_bytes=None):
    d = os.path.join(root, name)
    os.makedirs(d)
    files = {}
    if large_bytes:
        p = os.path.join(d, "large.bin")
        with open(p, "wb") as f:
            left = large_bytes
            while left:
                n = min(left, 4 * MIB)
                f.write(rng.randbytes(n))
                left -= n
        files["large.bin"] = large_bytes
    else:
        for i in range(rng.randint(10, 60)):
            rel = f"part-{i // 16}/item-{i:04d}.bin"
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            size = rng.choice([0, 1, 100, 4 * KIB, 16 * KIB + 1, rng.randint(1, 200 * KIB)])
            with open(os.path.join(d, rel), "wb") as f:
                f.write(rng.randbytes(size))
            files[rel] = size
    return d, files


def same_tree(a, b):
    for dirpath, _, names in os.walk(a):
        for n in names:
            pa = os.path.join(dirpath, n)
            pb = os.path.join(b, os.path.relpath(pa, a))
            if not os.path.isfile(pb) or digest(pa) != digest(pb):
                return os.path.relpath(pa, a)
    return None


def digest(path):
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = args.dir or tempfile.mkdtemp(prefix="cairn-soak-")
        self.src = os.path.join(self.work, "src")
        os.makedirs(self.src, exist_ok=True)
        env = {
            "CAIRN_VALIDATOR_CHALLENGES_PER_SEC": str(args.challenges_per_sec),
            "CAIRN_VALIDATOR_PER_MINER_PER_SEC": "5",
            "CAIRN_VALIDATOR_DEADLINE_SECS": "5",
            # Unanswered challenges are asked again after 2, 8 and 32 s, so a
            # silence is scored within about 40 s and a miner down for
            # --down seconds is repaired around (the default, 60 s, waits
            # about 21 min before scoring a silence).
            "CAIRN_VALIDATOR_REASK_SECS": str(args.reask),
            "CAIRN_VALIDATOR_GRACE_SECS": str(args.grace),
            "CAIRN_VALIDATOR_REFRESH_SECS": "5",
            "CAIRN_VALIDATOR_WEIGHTS_INTERVAL_SECS": "30",
        }
        log(f"devnet of {args.miners} miners, 1 validator, gateway in {self.work}")
        self.net = Devnet(args.cairn, self.work, args.miners, 1, env)
        self.miner_ids = [self.node_id(f"miner-{i}") for i in range(args.miners)]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.pinned = {}  # cid -> (src dir, {path: size})
        self.unpinned = []
        self.partial = []  # unpinned while a holder was down: unpin again at the end
        self.counts = {k: 0 for k in ["pins", "large_pins", "reads", "read_bytes", "gets",
                                      "unpins", "kills", "restarts"]}
        self.failures = []
        self.samples = []  # (elapsed s, {node: (rss KiB, fds)})
        self.kills = []  # (time since start, miner)
        self.restarts = []  # (epoch time, miner)
        self.t0 = time.time()

    def node_id(self, name):
        out = self.net.run("id", "--json", "--data-dir", os.path.join(self.net.dir, name), cli=False)
        return json.loads(out.stdout)["node_id"]

    def fail(self, what):
        with self.lock:
            self.failures.append(f"{time.time() - self.t0:7.0f}s {what}")
        log(f"FAIL {what}")

    def bump(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    # --- the load ---------------------------------------------------------

    def pinner(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            large = i % self.args.large_every == 0
            name = f"ds-{i:05d}"
            d, files = make_dataset(self.src, name, self.rng,
                                    self.args.large_mib * MIB if large else None)
            out = self.net.run("pin", d, "--json", "--name", name)
            if out.returncode != 0:
                # A pin may fail while miners are down (not enough of them);
                # that is an answer, not a loss: nothing was acknowledged.
                log(f"pin {name} refused: {out.stderr.strip()[-300:]}")
                shutil.rmtree(d)
            else:
                cid = json.loads(out.stdout)["cid"]
                with self.lock:
                    self.pinned[cid] = (d, files)
                self.bump("large_pins" if large else "pins")
            self.stop.wait(self.args.pin_pause)

    def reader(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            with self.lock:
                choices = [(c, d, f) for c, (d, f) in self.pinned.items()]
            if not choices:
                self.stop.wait(1)
                continue
            cid, d, files = rng.choice(choices)
            sized = [(p, s) for p, s in files.items() if s > 0]
            if not sized:
                continue
            path, size = rng.choice(sized)
            start = rng.randrange(size)
            end = min(size, start + rng.choice([1, 4 * KIB, 64 * KIB, 1 * MIB]))
            try:
                status, body = self.net.read_range(cid, path, start, end)
            except (urllib.error.URLError, OSError) as e:
                with self.lock:
                    still = cid in self.pinned
                if still:
                    # The gateway's reason is in the body of its error reply.
                    why = ""
                    if isinstance(e, urllib.error.HTTPError):
                        why = " (" + e.read()[:600].decode(errors="replace") + ")"
                    self.fail(f"range {cid[:16]}/{path} {start}-{end}: {e}{why}")
                continue
            with open(os.path.join(d, path), "rb") as f:
                f.seek(start)
                want = f.read(end - start)
            if body != want:
                self.fail(f"range {cid[:16]}/{path} {start}-{end}: wrong bytes (status {status})")
            self.bump("reads")
            self.bump("read_bytes", len(body))

    def getter(self):
        while not self.stop.wait(self.args.get_every):
            with self.lock:
                choices = list(self.pinned.items())
            if not choices:
                continue
            cid, (d, _) = self.rng.choice(choices)
            self.check_get(cid, d)

    def check_get(self, cid, d):
        out_dir = os.path.join(self.work, "get", cid)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        out = self.net.run("get", cid, "-o", out_dir)
        with self.lock:
            still = cid in self.pinned
        if out.returncode != 0:
            if still:
                self.fail(f"get {cid[:16]}: {out.stderr.strip()[-300:]}")
            return False
        bad = same_tree(d, out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        if bad:
            self.fail(f"get {cid[:16]}: {bad} differs")
            return False
        self.bump("gets")
        return True

    def unpinner(self):
        while not self.stop.wait(self.args.unpin_every):
            with self.lock:
                small = [c for c, (_, f) in self.pinned.items() if "large.bin" not in f]
                if len(small) < 4:
                    continue
                cid = self.rng.choice(small)
                d, files = self.pinned.pop(cid)
            out = self.net.run("unpin", cid)
            if out.returncode != 0:
                said = out.stdout + out.stderr
                if "unpinned" not in said:
                    log(f"unpin {cid[:16]} refused: {said.strip()[-300:]}")
                    with self.lock:
                        self.pinned[cid] = (d, files)
                    continue
                # Unpinned, with shards left on miners that are down: the
                # CLI says to run it again once they are back (settle does).
                self.partial.append(cid)
            self.unpinned.append(cid)
            shutil.rmtree(d, ignore_errors=True)
            self.bump("unpins")

    def chaos(self):
        while not self.stop.wait(self.args.kill_every):
            i = self.rng.randrange(self.args.miners)
            log(f"kill -9 miner-{i} for {self.args.down}s")
            self.net.stop_miner(i)
            self.kills.append((time.time() - self.t0, i))
            self.bump("kills")
            if self.stop.wait(self.args.down):
                break
            self.net.start_miner(i)
            self.restarts.append((time.time(), i))
            self.bump("restarts")

    def sampler(self):
        while True:
            row = {}
            for name in self.net.nodes():
                pid = self.net.pid(name)
                st = proc_stats(pid) if pid else None
                row[name] = st
            self.samples.append((time.time() - self.t0, row))
            if self.stop.wait(self.args.sample_every):
                break

    # --- the end ----------------------------------------------------------

    def settle(self):
        for i in sorted(self.net.down):
            self.net.start_miner(i)
        log(f"all miners up; waiting (at most {self.args.settle}s) for repair to catch up")
        deadline = time.time() + self.args.settle
        pending = dict(self.pinned)
        while pending and time.time() < deadline:
            for cid in list(pending):
                out = self.net.run("status", cid, "--json")
                if out.returncode == 0:
                    st = json.loads(out.stdout)
                    if st["lost"] == 0 and st["degraded"] == 0:
                        del pending[cid]
            if pending:
                time.sleep(5)
        for cid in pending:
            out = self.net.run("status", cid, "--json")
            self.fail(f"repair did not catch up on {cid[:16]}: {out.stdout.strip()[:300]}")
        log(f"checking every byte of {len(self.pinned)} datasets")
        for cid, (d, _) in sorted(self.pinned.items()):
            self.check_get(cid, d)
        for cid in self.partial:
            out = self.net.run("unpin", cid)
            if out.returncode != 0:
                self.fail(f"unpin {cid[:16]} again with every miner up: {out.stderr.strip()[-300:]}")
        for cid in self.unpinned:
            out = self.net.run("get", cid, "-o", os.path.join(self.work, "gone"))
            if out.returncode == 0:
                self.fail(f"unpinned {cid[:16]} still reads")

    def repaired_around(self):
        """Each miner killed for the whole --down was repaired around: the
        validator rebuilt shards it held elsewhere while it was down."""
        p = os.path.join(self.net.dir, "validator-0", "daemon.log")
        repairs = []  # (epoch, short id of the holder it replaced)
        pat = re.compile(r"^(\S+)Z .*repaired shard .* from=([0-9a-f]+)")
        with open(p, errors="replace") as f:
            for line in f:
                m = pat.match(line)
                if m:
                    t = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
                    repairs.append((t, m.group(2)))
        done = []
        for (k, i), (r, j) in zip(self.kills, self.restarts):
            assert i == j
            killed = self.t0 + k
            short = self.miner_ids[i][:10]
            n = sum(1 for t, who in repairs if who == short and killed <= t <= r + 60)
            done.append((round(k), i, n))
            if n == 0:
                self.fail(f"miner-{i} killed at {k:.0f}s for {r - killed:.0f}s: nothing repaired around it")
        return done

    def flat(self):
        """RSS and descriptors after warm-up: the peak of the second half
        must not exceed the peak of the first by much. A plateau (a cache
        filling to its budget, repair's buffers reused) passes; growth that
        goes on (a leak) does not. Miners are judged since their last start."""
        warm = [s for s in self.samples if s[0] >= self.args.warmup]
        if len(warm) < 4:
            self.fail(f"only {len(warm)} samples after warm-up; run longer")
            return
        half = len(warm) // 2
        names = sorted({n for _, r in warm for n in r})
        for name in names:
            a = [r[name] for _, r in warm[:half] if r.get(name)]
            b = [r[name] for _, r in warm[half:] if r.get(name)]
            if name.startswith("miner"):
                # A restarted miner starts again from nothing, so its halves
                # do not compare: it is held to absolute bounds instead.
                peak = max((x for x in a + b), default=(0, 0))
                if peak[0] > 192 * KIB or peak[1] > 128:
                    self.fail(f"{name} peaked at {peak[0]} KiB RSS, {peak[1]} descriptors")
                continue
            if not a or not b:
                continue
            rss_a, rss_b = max(x[0] for x in a), max(x[0] for x in b)
            fd_a, fd_b = max(x[1] for x in a), max(x[1] for x in b)
            if rss_b > rss_a * 1.25 + 16 * KIB:
                self.fail(f"{name} RSS still growing after warm-up: peak {rss_a} KiB, then {rss_b} KiB")
            if fd_b > fd_a + 16:
                self.fail(f"{name} descriptors still growing after warm-up: peak {fd_a}, then {fd_b}")

    def logs(self):
        """ERROR lines not explained by the chaos."""
        explained = re.compile(
            r"connection|timed out|timeout|refused|reset|closed|unreachable|"
            r"no route|lost|stopped|busy|not found|peer|dial|repair|miner-\d|"
            r"aborted|cancel|deadline|handshake",
            re.I,
        )
        unexplained = {}
        counted = {}
        for name in self.net.nodes():
            p = os.path.join(self.net.dir, name, "daemon.log")
            try:
                with open(p, errors="replace") as f:
                    lines = [l for l in f if " ERROR " in l or "\tERROR\t" in l or l.startswith("ERROR")]
            except OSError:
                continue
            counted[name] = len(lines)
            bad = [l.strip() for l in lines if not explained.search(l)]
            if bad:
                unexplained[name] = bad
        for name, bad in unexplained.items():
            for l in bad[:5]:
                self.fail(f"unexplained error in {name}: {l[:300]}")
        return counted

    def table(self):
        names = sorted({n for _, r in self.samples for n in r})
        print("\nRSS MiB / open descriptors per process over time")
        print("  time  " + " ".join(f"{n:>13}" for n in names))
        step = max(1, len(self.samples) // 30)
        for t, row in self.samples[::step] + ([self.samples[-1]] if len(self.samples) % step else []):
            cells = []
            for n in names:
                v = row.get(n)
                cells.append(f"{v[0] / 1024:7.1f}/{v[1]:<5}" if v else f"{'down':>13}")
            print(f"{t / 60:5.1f}m " + " ".join(f"{c:>13}" for c in cells))

    def go(self):
        threads = [threading.Thread(target=self.sampler, daemon=True),
                   threading.Thread(target=self.pinner, daemon=True),
                   threading.Thread(target=self.getter, daemon=True),
                   threading.Thread(target=self.unpinner, daemon=True),
                   threading.Thread(target=self.chaos, daemon=True)]
        threads += [threading.Thread(target=self.reader, args=(s,), daemon=True)
                    for s in range(self.args.readers)]
        for t in threads:
            t.start()
        end = self.t0 + self.args.minutes * 60
        while time.time() < end and not self.failures:
            time.sleep(min(30, max(0.1, end - time.time())))
            with self.lock:
                c = dict(self.counts)
            log(f"{(time.time() - self.t0) / 60:.1f} min: {c}, {len(self.pinned)} pinned, "
                f"{len(self.net.down)} miner(s) down")
        self.stop.set()
        for t in threads:
            t.join(timeout=900)
        self.settle()
        counted = self.logs()
        around = self.repaired_around()
        self.flat()
        self.table()
        with open(os.path.join(self.work, "samples.json"), "w") as f:
            json.dump({"samples": self.samples, "kills": self.kills}, f)
        print(f"\nload: {self.counts}")
        print(f"datasets pinned at the end: {len(self.pinned)}, unpinned: {len(self.unpinned)}")
        print(f"miners killed (time s, index, shards repaired around it): {around}")
        print(f"ERROR lines per log (all explained unless listed below): {counted}")
        if self.failures:
            print(f"\n{len(self.failures)} check(s) failed:")
            for f in self.failures:
                print("  " + f)
        else:
            print("\nsoak: every pinned byte read back, repair caught up, RSS and descriptors flat, "
                  "no unexplained error")
        return not self.failures

    def down(self):
        try:
            self.net.devnet("down")
        except Exception as e:  # noqa: BLE001 - best effort at the end
            log(f"devnet down: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--cairn", default=os.environ.get("CAIRN_BIN", "target/release/cairn"))
    ap.add_argument("--dir", help="work directory (default: a new temporary one, removed on success)")
    ap.add_argument("--miners", type=int, default=8)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=48)
    ap.add_argument("--large-every", type=int, default=10, help="every Nth pin is large")
    ap.add_argument("--pin-pause", type=float, default=2)
    ap.add_argument("--get-every", type=float, default=20)
    ap.add_argument("--unpin-every", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=180)
    ap.add_argument("--down", type=float, default=75)
    ap.add_argument("--reask", type=float, default=2)
    ap.add_argument("--grace", type=int, default=20)
    ap.add_argument("--challenges-per-sec", type=float, default=20)
    ap.add_argument("--sample-every", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=300,
                    help="seconds before RSS counts: long enough for the first repair")
    ap.add_argument("--settle", type=float, default=600)
    ap.add_argument("--seed", type=int, default=75)
    args = ap.parse_args()
    args.cairn = os.path.abspath(args.cairn)
    if not os.access(args.cairn, os.X_OK):
        sys.exit(f"no cairn binary at {args.cairn}: build it (cargo build --release) or pass --cairn")
    soak = Soak(args)
    ok = False
    try:
        ok = soak.go()
    finally:
        soak.down()
        if ok and not args.dir:
            shutil.rmtree(soak.work, ignore_errors=True)
        elif not ok:
            print(f"work directory kept: {soak.work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
