#!/usr/bin/env python3
"""Soak test: the daemon polls a loopback feed server every second for several minutes.

    python3 benches/soak.py [--minutes 5] [--bin target/release/vigia]

A rotating mix of feeds: good ones that gain an item every few seconds, slow drips,
broken ones (not a feed, 404, redirect loop), and two outlets whose stories flip a
stance now and then, so digests are due; the SMTP server refuses every other half
minute. Every 10 s it samples the daemon's resident memory and open file descriptors.
At the end (SMTP accepting, a drain period, SIGTERM) it checks that nothing was lost:
every published item is in the log, every queued digest was delivered, the daemon
exited 0 and never panicked. Prints the figures. Loopback only; stops by itself.
"""
import argparse
import json
import os
import signal
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


def item(guid, title, summary, link):
    return dict(guid=guid, title=title, summary=summary, link=link, date=formatdate(time.time(), usegmt=True))


def sample(pid):
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "vigia"))
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="vigia-soak-"))
    fd = d / "feeds"
    fd.mkdir()
    good = {f"g{i}": [] for i in range(12)}
    outlets = {"sa": [], "sb": []}
    published = set()

    def write_all():
        # Replaced whole, as a web server's files are: a poll that read a half-written
        # file would fail, back off for a minute and miss the items near the end.
        for name, items in {**good, **outlets}.items():
            tmp = fd / f".{name}.xml.tmp"
            tmp.write_text(h.rss(name, items[-30:]))
            os.replace(tmp, fd / f"{name}.xml")

    write_all()
    (fd / "page.xml").write_text("<!doctype html><html><body>not a feed</body></html>")
    srv, smtp = h.FeedServer(fd), h.SmtpSink()
    srv.slow.update({"slow0.xml", "slow1.xml"})
    srv.loop.add("loop.xml")
    feeds = [(n, srv.url(f"{n}.xml")) for n in list(good) + list(outlets)]
    feeds += [("slow0", srv.url("slow0.xml")), ("slow1", srv.url("slow1.xml")), ("page", srv.url("page.xml")),
              ("missing", srv.url("missing.xml")), ("loop", srv.url("loop.xml"))]
    subs = [{"email": f"reader{i}@example.org", "topics": ["us-mx-security"], "digest": "on-change"} for i in range(5)]
    # Port 0: the system picks the pages' port when the daemon binds it (no race).
    cfg = h.write_config(d, feeds, smtp_port=smtp.port, subscribers=subs, schedule="* * * * * *",
                         listen="127.0.0.1:0")
    text = Path(cfg).read_text().replace("[mail]", "[daemon.fetch]\ntimeout_s = 5\n\n[mail]", 1)
    text = text.replace('from = "vigia <vigia@example.org>"', 'from = "vigia <vigia@example.org>"\nretry_base_s = 2')
    Path(cfg).write_text(text)
    log = open(d / "daemon.log", "w")
    p = subprocess.Popen([args.bin, "--config", cfg, "run"], stdout=subprocess.DEVNULL, stderr=log)
    samples = []
    started = time.monotonic()
    end = started + args.minutes * 60
    n = 0
    flip = 0
    try:
        while time.monotonic() < end:
            time.sleep(2)
            n += 1
            g = f"g{n % 12}"
            guid = f"{g}-{n}"
            good[g].append(item(guid, f"Council item {n} approved in district {g}", f"Vote number {n}.",
                                f"http://{g}.example/{n}"))
            published.add(guid)
            if n % 30 == 0:  # a stance flips, in both outlets
                flip += 1
                oppose = flip % 2 == 1
                for o in outlets:
                    # Each outlet words its own story (copies of one story would count once).
                    words = " ".join(f"{o}{flip}x{j}" for j in range(6))
                    if o == "sa":
                        title = (f"Mexico rejects US military strikes against cartels {words}" if oppose else
                                 f"Mexico agrees to joint raids with US special forces {words}")
                    else:
                        title = (f"Sheinbaum rechaza la intervención militar de Estados Unidos {words}" if oppose else
                                 f"México acepta operativos conjuntos con fuerzas especiales de Estados Unidos {words}")
                    guid = f"{o}-{flip}"
                    outlets[o].append(item(guid, title, "Officials confirmed it.", f"http://{o}.example/{flip}"))
                    published.add(guid)
            smtp.refuse = (int(time.monotonic() - started) // 30) % 2 == 1
            write_all()
            if n % 5 == 0:
                samples.append((round(time.monotonic() - started), *sample(p.pid)))
            if p.poll() is not None:
                break
        smtp.refuse = False
        time.sleep(40)  # let retries drain with the server accepting
        samples.append((round(time.monotonic() - started), *sample(p.pid)))
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        srv.stop()
        smtp.stop()
        log.close()
    evs = [json.loads(line) for line in subprocess.run([args.bin, "--config", cfg, "events"], capture_output=True,
                                                       text=True).stdout.splitlines() if line.strip()]
    guids = {e["payload"].get("guid") for e in evs if e["kind"] == "ArticleDiscovered"}
    lost = sorted(published - guids)
    queued = {e["payload"]["digest_id"] for e in evs if e["kind"] == "DigestQueued"}
    sent = {e["payload"]["digest_id"] for e in evs if e["kind"] == "DigestSent"}
    given_up = {e["payload"]["digest_id"] for e in evs if e["kind"] == "DigestFailed" and e["payload"]["permanent"]}
    undelivered = sorted(queued - sent - given_up)
    received = {m.get("Message-ID") for _, m in smtp.messages}
    panics = "panicked" in (d / "daemon.log").read_text()
    polls = sum(1 for e in evs if e["kind"] in ("FeedPolled", "FeedPollFailed"))
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    print(f"soak: {args.minutes} min, {len(feeds)} feeds polled every second, {polls} polls recorded, "
          f"{len(published)} items published, {len(queued)} digests queued, {len(received)} distinct received")
    print(f"resident memory MB: first {rss[0]}, median {statistics.median(rss)}, max {max(rss)}, last {rss[-1]}")
    print(f"open fds: first {fds[0]}, median {statistics.median(fds)}, max {max(fds)}, last {fds[-1]}")
    print(f"samples (s, MB, fds): {samples}")
    print(f"exit {rc}; panics: {panics}; items lost: {len(lost)} {lost[:5]}; digests undelivered: {len(undelivered)}")
    for feed in sorted({guid.split("-")[0] for guid in lost}):
        failures = [e["payload"] for e in evs if e["kind"] == "FeedPollFailed" and e["stream"] == f"feed:{feed}"]
        print(f"  {feed}: {len(failures)} failed polls, last: {failures[-1] if failures else None}")
    # Flat after warming up: the first hour of a long soak (a third of a short one) may
    # grow while caches fill; after it, resident memory must stay within 10% (+2 MB)
    # of what it was when the warm-up ended.
    warm_s = min(3600, args.minutes * 60 / 3)
    warm = [mb for t, mb, _ in samples if t <= warm_s] or rss[:1]
    later = [mb for t, mb, _ in samples if t > warm_s] or rss[-1:]
    ceiling = max(warm) * 1.10 + 2
    flat = max(later) <= ceiling
    print(f"memory after a {warm_s / 60:.0f}-minute warm-up: max {max(later)} MB against a ceiling of "
          f"{ceiling:.0f} MB: {'flat' if flat else 'GROWING'}")
    ok = rc == 0 and not panics and not lost and not undelivered and flat
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
