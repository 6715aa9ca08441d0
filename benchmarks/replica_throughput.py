"""Throughput of 1, 2 and 3 backend processes behind the HTTPS proxy, on this machine.

For each replica count it starts that many backends (`python main.py`, each its own process,
all on one throwaway PostgreSQL database), puts the project's Caddy entrypoint in front
(proxy/Caddyfile, natively, through tests/support/https_proxy.py; BACKEND_UPSTREAM lists every
replica, so Caddy balances across them), and drives `POST /api/predict` (stored: the real
write path) with closed-loop HTTPS clients at rising concurrency for a fixed time each.

It prints requests per second, latency, requests per second per machine core, and the CPU
each part spent per request (backends, Caddy, this load generator), read from /proc, so the
numbers can be read on a machine shared with other work. The point where more concurrency
stops adding throughput is the saturation point; the machine's load average is printed next
to every table, because other processes take cores from the same pool.

    .venv/bin/python benchmarks/replica_throughput.py --model-dir artifacts/model \
        [--replicas 1,2,3] [--concurrency 1,2,4,8,16] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from Database_connection.db import drop_database, ensure_database, migrate  # noqa: E402
from utils.settings import get_settings  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
# A stored prediction whose slot wait is long still counts: throughput, not rejections, is measured.
BACKEND_ENV = {
    "MODEL_SOURCE": "local",
    "MLFLOW_TRACKING_URI": "",
    "AIRFLOW_URL": "",
    "RETRAIN_THRESHOLD": str(10**9),
    "LOG_LEVEL": "WARNING",
    "PREDICTION_QUEUE_S": "60",
    "RATE_LIMIT_PREDICT": "0",
    "RATE_LIMIT_PREVIEW": "0",
    "UNLABELLED_IMAGE_RETENTION_DAYS": "0",
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / CLK_TCK


def postgres_pids(db_url: str) -> list[int]:
    """The PostgreSQL server processes serving the backends' connections to the benchmark database."""
    import psycopg

    from Database_connection.db import libpq_url

    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(libpq_url(db_url)) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
        ).fetchall()
    return [r[0] for r in rows]


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, for the share of it in use meanwhile."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def photos(n: int) -> list[tuple[str, bytes]]:
    """`n` different dataset photos (both datasets, every class), as users would send them."""
    dirs = get_settings().dataset_dirs
    pools = [sorted(p for p in (d / label).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
             for d in dirs for label in ("rock", "paper", "scissors")]  # fmt: skip
    picked = [pools[i % len(pools)][i // len(pools)] for i in range(n)]
    return [(p.name, p.read_bytes()) for p in picked]


@dataclass
class Step:
    replicas: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    backend_cpu_s: float
    postgres_cpu_s: float
    proxy_cpu_s: float
    client_cpu_s: float
    machine_busy: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def per_request_ms(self, cpu_s: float) -> float:
        return 1000 * cpu_s / max(self.requests, 1)


def drive(url: str, verify: str | bool, images: list[tuple[str, bytes]], concurrency: int, seconds: float):
    """Closed loop: `concurrency` clients, each sending its next request when the last answered."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        i = k
        with httpx.Client(base_url=url, verify=verify, timeout=120) as http:
            while time.monotonic() < stop:
                name, data = images[i % len(images)]
                i += concurrency
                start = time.perf_counter()
                try:
                    ok = http.post("/api/predict", files={"file": (name, data)}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def measure(
    replicas: int, backend_pids: list[int], proxy_pid: int, db_url: str, url: str, verify, images, concurrency, seconds
):
    before = [cpu_seconds(p) for p in backend_pids], cpu_seconds(proxy_pid), time.process_time(), machine_busy()
    pg_before = cpu_of(postgres_pids(db_url))
    start = time.monotonic()
    latencies, errors = drive(url, verify, images, concurrency, seconds)
    elapsed = time.monotonic() - start
    pg_after = cpu_of(list(pg_before))
    busy0, total0 = before[3]
    busy1, total1 = machine_busy()
    return Step(
        replicas=replicas,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        latencies_ms=latencies,
        backend_cpu_s=sum(cpu_seconds(p) for p in backend_pids) - sum(before[0]),
        postgres_cpu_s=sum(pg_after[p] - pg_before[p] for p in pg_after),
        proxy_cpu_s=cpu_seconds(proxy_pid) - before[1],
        client_cpu_s=time.process_time() - before[2],
        machine_busy=(busy1 - busy0) / max(total1 - total0, 1),
    )


def db_writes(db_url: str, images: list[tuple[str, bytes]], writers: int, seconds: float) -> dict[str, float]:
    """The stored-prediction path alone (`record_prediction`: image + prediction + the derived
    counter under its advisory lock, one transaction), from `writers` threads: the ceiling every
    replica shares, whatever the number of backends."""
    import hashlib

    from Database_connection import repository as repo
    from Database_connection.db import make_pool

    pool = make_pool(db_url, 1, writers + 1)
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    lock = threading.Lock()
    with pool.connection() as conn:
        size0 = repo.database_size_bytes(conn)

    def writer(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            name, data = images[i % len(images)]
            sha = hashlib.sha256(f"{uuid.uuid4()}".encode() + data).hexdigest()  # a new photo each time
            i += writers
            start = time.perf_counter()
            with pool.connection() as conn:
                repo.record_prediction(
                    conn, sha256=sha, content=data, fmt="png", width=300, height=200, original_name=name,
                    label="rock", confidence=0.9, probabilities={"rock": 0.9, "paper": 0.05, "scissors": 0.05},
                    model_version="bench", latency_ms=1.0, threshold=10**9,
                )  # fmt: skip
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    with pool.connection() as conn:
        grown = repo.database_size_bytes(conn) - size0
    pool.close()
    return {
        "writers": writers,
        "writes_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p95_ms": float(np.percentile(latencies, 95)),
        "bytes_per_write": grown / max(len(latencies), 1),
    }


def start_backends(n: int, db_url: str, model_dir: Path, workdir: Path) -> list[tuple[str, subprocess.Popen]]:
    from tests.support.procs import free_port, wait_http

    started = []
    for i in range(n):
        port = free_port()
        env = {**os.environ, **BACKEND_ENV, "DATABASE_URL": db_url, "MODEL_DIR": str(model_dir),
               "BACKEND_PORT": str(port), "ARTIFACTS_DIR": str(workdir / f"artifacts{i}")}  # fmt: skip
        log = (workdir / f"backend{i}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append((f"127.0.0.1:{port}", proc))
    for address, _proc in started:
        wait_http(f"http://{address}/ready", 120)
    return started


def report(steps: list[Step]) -> None:
    columns = ("replicas", "clients", "req/s", "req/s/core", "p50 ms", "p95 ms", "errors")
    cpu = ("CPU ms/req: backend", "postgres", "proxy", "client", "machine busy")
    print("\n" + " ".join(f"{c:>{max(len(c), 7)}}" for c in (*columns, *cpu)))
    for s in steps:
        p50 = statistics.median(s.latencies_ms) if s.latencies_ms else float("nan")
        p95 = float(np.percentile(s.latencies_ms, 95)) if s.latencies_ms else float("nan")
        print(
            f"{s.replicas:>8} {s.concurrency:>7} {s.rps:>7.1f} {s.rps / CORES:>10.1f} {p50:>7.1f} {p95:>7.1f} "
            f"{s.errors:>7} {s.per_request_ms(s.backend_cpu_s):>19.1f} {s.per_request_ms(s.postgres_cpu_s):>8.2f} "
            f"{s.per_request_ms(s.proxy_cpu_s):>7.1f} {s.per_request_ms(s.client_cpu_s):>7.1f} {s.machine_busy:>12.0%}"
        )


def saturation(steps: list[Step]) -> tuple[Step, Step]:
    """The best step, and the first step within 10% of it: where more clients stop helping."""
    best = max(steps, key=lambda s: s.rps)
    first = next(s for s in sorted(steps, key=lambda s: s.concurrency) if s.rps >= 0.9 * best.rps)
    return best, first


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=get_settings().model_dir)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--db-writers", default="1,4,16", help="the PostgreSQL write path alone; empty: skip")
    args = parser.parse_args()
    from tests.support.https_proxy import start_https_proxy

    replica_counts = [int(x) for x in args.replicas.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    images = photos(args.images)
    base = get_settings()
    db_url = base.database_url.rsplit("/", 1)[0] + f"/rps_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url)
    migrate(db_url)
    print(f"{CORES} cores; model {args.model_dir}; {len(images)} photos; {args.seconds:g} s per step")
    print(f"start: {load_average()}")
    mean_kb = statistics.mean(len(d) for _, d in images) / 1024
    for writers in [int(x) for x in args.db_writers.split(",") if x]:
        w = db_writes(db_url, images, writers, args.seconds)
        print(
            f"PostgreSQL write path, {writers:>2} writers: {w['writes_per_s']:.0f} stored predictions/s, p50"
            f" {w['p50_ms']:.1f} ms, p95 {w['p95_ms']:.1f} ms, {w['bytes_per_write'] / 1024:.0f} KiB on disk each"
            f" (photos {mean_kb:.0f} KiB on average)"
        )
    summary: list[tuple[int, Step, Step]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rps-replicas-") as tmp:
            for n in replica_counts:
                work = Path(tmp) / f"r{n}"
                work.mkdir()
                backends = start_backends(n, db_url, args.model_dir, work)
                proxy = start_https_proxy(
                    work / "proxy",
                    {"BACKEND": " ".join(a for a, _ in backends), "STREAMLIT": backends[0][0]},
                    operator_password=uuid.uuid4().hex,
                )
                try:
                    verify = str(proxy.cert)
                    drive(proxy.url, verify, images, 2, 3.0)  # warm every replica and connection
                    steps = []
                    for c in levels:
                        pids = [p.pid for _, p in backends]
                        steps.append(
                            measure(n, pids, proxy.proc.popen.pid, db_url, proxy.url, verify, images, c, args.seconds)
                        )
                    report(steps)
                    print(f"  {load_average()}")
                    best, first = saturation(steps)
                    summary.append((n, best, first))
                finally:
                    proxy.proc.stop()
                    for _, p in backends:
                        p.terminate()
                    for _, p in backends:
                        p.wait(30)
    finally:
        drop_database(db_url)

    print("\nsaturation (the fewest clients within 10% of the best throughput):")
    one = summary[0][1].rps if summary else 1.0
    for n, best, first in summary:
        print(
            f"  {n} replica(s): {best.rps:.1f} req/s ({best.rps / CORES:.1f} per core, {best.rps / one:.2f}x one"
            f" replica) at {best.concurrency} clients, reached from {first.concurrency} clients; p50"
            f" {statistics.median(best.latencies_ms):.0f} ms; backends busy {best.backend_cpu_s / best.seconds:.2f}"
            f" cores ({1000 / best.per_request_ms(best.backend_cpu_s):.0f} req/s per fully used backend core),"
            f" machine {best.machine_busy:.0%}"
        )
    print(f"end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
