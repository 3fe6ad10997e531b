#!/usr/bin/env python3
"""Ingestion benchmark: 1,000 feeds x 20 items (about 900 bytes each) served by nginx
on loopback, gzip on, as in issue 14's measurement.

Per run, on a fresh database:
  cold   `vigia run --once` with every feed new (20,000 articles);
  304    the same again: every feed answers 304 Not Modified;
  new    100 feeds gain one item each (the others answer 304);
and, in the same sitting, the floor: `curl --parallel` fetching the same 1,000 URLs.
Each run's wall time and peak resident memory (GNU time), then the database's size
against the article text it holds (title + summary + content, in bytes), and where the
bytes go (SQLite's dbstat, by table and index). Medians over --runs.

    python3 benches/ingest_cycle.py [--runs 3] [--bin target/release/vigia] [--learned]
    python3 benches/ingest_cycle.py --articles 1000000

--articles N instead grows one database to N articles, a cold cycle of 20,000 fresh
items at a time, and reports the size ratio at that scale and how the cycle's time and
memory moved from the first cycle to the last.

The config is the acceptance harness's: the project's topics with the bench's feeds.
Its topic's examples path does not resolve from the bench's folder, so the topic is
read by its rules alone; --learned points it at config/examples/ so the learned reader
(loaded, and run on every article) is in the measurement too.

Uses ../shared/acceptance/harness.py for nginx (it installs nginx-light when missing).
"""
import argparse
import sqlite3
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

FEEDS, ITEMS, CHANGED = 1000, 20, 100

WORDS = ("council budget roads lighting review members debate vote spending district "
         "committee report mayor schools parks transit water housing plan hearing").split()


def item(i, j, rnd=0):
    # About 900 bytes of text, different for every item (so nothing dedupes it away).
    words = [WORDS[(i * 7 + j * 13 + rnd * 5 + k * k) % len(WORDS)] for k in range(120)]
    tag = f"-r{rnd}" if rnd else ""
    return dict(guid=f"f{i}-{j}{tag}", title=f"Outlet {i}: council votes on budget line {j}{tag} after a long debate",
                summary=f"Item {j}{tag} of outlet {i}. " + " ".join(words).capitalize() + ".",
                link=f"http://outlet{i}.example/local/{j}?utm_source=rss",
                date=formatdate(time.time() - j * 3600, usegmt=True))


def write_feed(folder, i, items, rnd=0):
    (folder / f"f{i}.xml").write_text(h.rss(f"outlet {i}", [item(i, j, rnd) for j in range(items)]))


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


def sizes(db):
    """(database bytes, article text bytes, {table or index: bytes}) after a checkpoint."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    columns = {row[1] for row in con.execute("PRAGMA table_info(articles)")}
    # The text of each article's current version, where the log holds it (or, in a
    # database from before the text was stored once, where the projection copied it).
    old = ("SELECT COALESCE(SUM(length(CAST(title AS BLOB)) + length(CAST(summary AS BLOB)) "
           "+ length(CAST(content AS BLOB))), 0) FROM articles")
    text = con.execute(old).fetchone()[0] if "body_seq" not in columns else con.execute(
        "SELECT COALESCE(SUM(length(CAST(json_extract(e.payload, '$.title') AS BLOB)) "
        "+ length(CAST(COALESCE(json_extract(e.payload, '$.summary'), '') AS BLOB)) "
        "+ length(CAST(COALESCE(json_extract(e.payload, '$.content'), '') AS BLOB))), 0) "
        "FROM articles a JOIN events e ON e.seq = a.body_seq").fetchone()[0]
    try:
        parts = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    except sqlite3.OperationalError:
        parts = {}
    con.close()
    return Path(db).stat().st_size, text, parts


def config(d, urls, learned):
    cfg = h.write_config(d, [(f"f{i}", u) for i, u in enumerate(urls)], mail_dir=d / "out")
    text = Path(cfg).read_text().replace("[mail]", "[daemon.fetch]\nmax_per_host = 64\nmax_concurrent = 64\n\n[mail]", 1)
    if learned:
        text = text.replace('examples = "examples/', f'examples = "{ROOT}/config/examples/')
    Path(cfg).write_text(text)
    return cfg


def grow(args, work, feeds, urls):
    d = work / "grow"
    d.mkdir()
    cfg = config(d, urls, args.learned)
    vigia = [args.bin, "--config", cfg, "-q", "run", "--once"]
    cycles = []
    for rnd in range(max(1, args.articles // (FEEDS * ITEMS))):
        for i in range(FEEDS):
            write_feed(feeds, i, ITEMS, rnd)
        cycles.append(timed(vigia))
        if rnd % 10 == 0:
            print(f"cycle {rnd + 1}: {cycles[-1][0]:.2f} s, peak {cycles[-1][1]:.0f} MB", flush=True)
    db, article_text, parts = sizes(d / "vigia.db")
    con = sqlite3.connect(d / "vigia.db")
    articles, events = (con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("articles", "events"))
    con.close()
    first, last = cycles[:3], cycles[-3:]
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    print(f"{articles} articles, {events} events, {len(cycles)} cold cycles of {FEEDS * ITEMS} new articles")
    print(f"cold cycle, median of the first 3: {med(first, 0):.2f} s, peak {med(first, 1):.0f} MB; "
          f"of the last 3: {med(last, 0):.2f} s, peak {med(last, 1):.0f} MB")
    print(f"database / article text: {db / max(article_text, 1):.2f} ({db / 1e6:.0f} MB for {article_text / 1e6:.0f} MB of text)")
    for name, b in sorted(parts.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {name:<40} {b / 1e6:7.1f} MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "vigia"))
    ap.add_argument("--learned", action="store_true", help="use the shipped examples and model")
    ap.add_argument("--articles", type=int, help="grow one database to this many articles")
    args = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        subprocess.run("apt-get install -y -qq time", shell=True)
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-"))
    feeds = work / "feeds"
    feeds.mkdir()
    nginx = h.Nginx(feeds)
    try:
        urls = [nginx.url(f"f{i}.xml") for i in range(FEEDS)]
        listing = work / "urls.txt"
        listing.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
        if args.articles:
            return grow(args, work, feeds, urls)
        cold, warm, new, curl, ratio = [], [], [], [], []
        for run in range(args.runs):
            for i in range(FEEDS):
                write_feed(feeds, i, ITEMS)
            d = work / f"run{run}"
            d.mkdir()
            cfg = config(d, urls, args.learned)
            vigia = [args.bin, "--config", cfg, "-q", "run", "--once"]
            t = time.monotonic()
            subprocess.run(["curl", "-s", "--no-progress-meter", "--parallel", "--parallel-max", "64", "--compressed", "-K", str(listing)],
                           check=True)
            curl.append(time.monotonic() - t)
            cold.append(timed(vigia))
            db, article_text, parts = sizes(d / "vigia.db")
            ratio.append(db / max(article_text, 1))
            warm.append(timed(vigia))
            time.sleep(1.1)  # a new Last-Modified second for the changed files
            for i in range(CHANGED):
                write_feed(feeds, i, ITEMS + 1)
            new.append(timed(vigia))
        med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
        floor = statistics.median(curl)
        size = sum(p.stat().st_size for p in feeds.iterdir()) / FEEDS / 1024
        reader = "rules and the learned reader" if args.learned else "rules alone"
        print(f"{FEEDS} feeds x {ITEMS} items, {size:.1f} KB a feed, read by {reader}, median of {args.runs} runs")
        print(f"curl --parallel     : {floor:.2f} s (the floor)")
        print(f"cold run --once     : {med(cold, 0):.2f} s ({med(cold, 0) / floor:.0f}x the floor), peak {med(cold, 1):.0f} MB")
        print(f"{CHANGED} new items      : {med(new, 0):.2f} s, peak {med(new, 1):.0f} MB")
        print(f"all 304 run --once  : {med(warm, 0):.2f} s ({med(warm, 0) / floor:.1f}x the floor), peak {med(warm, 1):.0f} MB")
        print(f"database / article text: {statistics.median(ratio):.2f} "
              f"({db / 1e6:.1f} MB for {article_text / 1e6:.1f} MB of text, last run)")
        for name, b in sorted(parts.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {name:<40} {b / 1e6:7.1f} MB")
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
