#!/usr/bin/env python3
"""Ingestion benchmark: 1,000 feeds x 20 items (~10 KB each) served by nginx on loopback.

Measures the wall time and peak memory of a cold `vigia run --once` on a fresh database,
then of a second one where every feed answers 304, and beside them the time a bare
parallel client (curl --parallel) takes to fetch the same URLs. Medians over N runs.

    python3 benches/ingest_cycle.py [--runs 3] [--bin target/release/vigia]

Uses ../shared/acceptance/harness.py for nginx (it installs nginx-light when missing).
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT.parent / "shared" / "acceptance"))
import harness as h  # noqa: E402

FEEDS, ITEMS = 1000, 20


def make_feeds(folder):
    for i in range(FEEDS):
        items = [dict(guid=f"f{i}-{j}", title=f"Outlet {i}: council votes on budget line {j} after long debate",
                      summary="The city council voted on Tuesday to approve the item after a short debate, "
                              "with several members asking for a review of spending on roads and lighting.",
                      link=f"http://outlet{i}.example/local/{j}?utm_source=rss",
                      date=formatdate(time.time() - j * 3600, usegmt=True)) for j in range(ITEMS)]
        (folder / f"f{i}.xml").write_text(h.rss(f"outlet {i}", items))


def timed(cmd):
    """(wall seconds, peak RSS in MB) of one run."""
    t = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "peak-kb %M"] + cmd, capture_output=True, text=True)
    wall = time.monotonic() - t
    if r.returncode != 0:
        print(r.stderr[-2000:])
        sys.exit(f"failed: {cmd}")
    peak = int([ln for ln in r.stderr.splitlines() if ln.startswith("peak-kb")][-1].split()[1]) / 1024
    return wall, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "vigia"))
    args = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        subprocess.run("apt-get install -y -qq time", shell=True)
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-"))
    feeds = work / "feeds"
    feeds.mkdir()
    make_feeds(feeds)
    size = sum(p.stat().st_size for p in feeds.iterdir()) / FEEDS / 1024
    nginx = h.Nginx(feeds)
    try:
        urls = [nginx.url(f"f{i}.xml") for i in range(FEEDS)]
        cold, warm, curl = [], [], []
        for run in range(args.runs):
            d = work / f"run{run}"
            d.mkdir()
            cfg = h.write_config(d, [(f"f{i}", u) for i, u in enumerate(urls)], mail_dir=d / "out")
            text = Path(cfg).read_text().replace("[mail]", "[daemon.fetch]\nmax_per_host = 64\nmax_concurrent = 64\n\n[mail]", 1)
            Path(cfg).write_text(text)
            cold.append(timed([args.bin, "--config", cfg, "-q", "run", "--once"]))
            warm.append(timed([args.bin, "--config", cfg, "-q", "run", "--once"]))
            listing = work / "urls.txt"
            listing.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
            t = time.monotonic()
            subprocess.run(["curl", "-s", "--parallel", "--parallel-max", "64", "--compressed", "-K", str(listing)],
                           check=True)
            curl.append(time.monotonic() - t)
        med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
        print(f"{FEEDS} feeds x {ITEMS} items, {size:.1f} KB a feed, median of {args.runs} runs")
        print(f"cold run --once : {med(cold, 0):.2f} s, peak {med(cold, 1):.0f} MB")
        print(f"304  run --once : {med(warm, 0):.2f} s, peak {med(warm, 1):.0f} MB")
        print(f"curl --parallel : {statistics.median(curl):.2f} s")
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
