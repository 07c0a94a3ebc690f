"""Webhook throughput and latency over TLS with keep-alive, against a bare aiohttp TLS endpoint in the same run.

- Throughput: wrk (C, one thread, 16 keep-alive connections, 10 s) posting a real AdmissionReview, for /validate,
  /mutate and the baseline. Target: at least 0.8 of the baseline's requests/s.
- Latency at a fixed 200 requests/s: vegeta (Go, `hack/vegeta.sh` builds it from Go modules and caches it) in its
  open-loop mode: requests leave on a schedule whether or not earlier ones were answered; p50/p99. Target p99 under
  5 ms. Neither load generator is Python, so what is measured is the server.
- Where the webhook's time goes: py-spy samples the webhook process during a second wrk run against /validate; the
  functions with the most samples of their own, and the share of the whole, go into the results.
- Kubernetes API requests per admission once the StatefulSet cache is warm (target 0), from the webhook's own
  counter of API calls made while answering.
The webhook runs as the real `dbb-webhook` process against a real kube-apiserver, answering from its watch cache.
Before anything is timed, one answer from each target is checked: `allowed` (a denial is an HTTP 200 too) and the
request's uid.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from certs.serving import ensure_serving_certificate
from hack.harness.controlplane import ROOT, ControlPlane, free_port
from tests.bench.results import table
from tests.fixtures import admission_review, databasebackup, statefulset

DURATION = 10
RATE = 200
CONNECTIONS = 16


def main() -> str:
    _ensure_wrk()
    vegeta = subprocess.run(
        ["bash", str(ROOT / "hack" / "vegeta.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as folder, ControlPlane.start() as plane:
        work = Path(folder)
        ensure_serving_certificate(work / "tls", ["127.0.0.1"])
        plane.kubectl("create", "namespace", "shop")
        sts = statefulset(namespace="shop")
        del sts["status"]
        plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
        body = work / "review.json"
        body.write_text(json.dumps(admission_review(databasebackup(namespace="shop"))))
        webhook_port, baseline_port = free_port(), free_port()
        webhook = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dbb-webhook"),
                f"--kubeconfig={plane.kubeconfig}",
                f"--cert-dir={work / 'tls'}",
                "--host=127.0.0.1",
                f"--port={webhook_port}",
                "--no-metrics-auth",
                "--log-level=warning",
            ],
        )
        baseline = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.baseline_webhook", str(baseline_port), str(work / "tls")], cwd=ROOT
        )
        try:
            context = ssl.create_default_context(cafile=str(work / "tls" / "ca.crt"))
            _wait_ready(f"https://127.0.0.1:{webhook_port}/readyz", context)
            _wait_ready(f"https://127.0.0.1:{baseline_port}/readyz", context, method="POST")
            api_before = _api_requests(webhook_port, context)
            rows: dict[str, dict[str, float]] = {}
            targets = {
                "baseline (bare aiohttp TLS)": f"https://127.0.0.1:{baseline_port}/validate",
                "dbb-webhook /validate": f"https://127.0.0.1:{webhook_port}/validate",
                "dbb-webhook /mutate": f"https://127.0.0.1:{webhook_port}/mutate",
            }
            review = json.loads(body.read_text())
            for label, url in targets.items():
                # The baseline answers every request with the same fixed uid.
                _expect_allowed(url, review, context, same_uid="dbb-webhook" in label)
            answered = 0
            for label, url in targets.items():
                throughput, requests = _wrk(url, body, work)
                p50, p99, sent = _fixed_rate(vegeta, url, body, work)
                rows[label] = {"rps": throughput, "p50": p50, "p99": p99}
                if "dbb-webhook" in label:
                    answered += requests + sent
            api_requests = _api_requests(webhook_port, context) - api_before
            profile = _profile(webhook.pid, targets["dbb-webhook /validate"], body, work)
        finally:
            for process in (webhook, baseline):
                process.terminate()
                process.wait(15)
    return _report(rows, api_requests, answered, profile)


def _report(rows: dict[str, dict[str, float]], api_requests: float, answered: int, profile: str) -> str:
    ceiling = rows["baseline (bare aiohttp TLS)"]["rps"]
    lines = [
        [label, f"{r['rps']:,.0f}", f"{r['rps'] / ceiling:.2f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}"]
        for label, r in rows.items()
    ]
    worst_ratio = min(r["rps"] / ceiling for label, r in rows.items() if "dbb" in label)
    worst_p99 = max(r["p99"] for label, r in rows.items() if "dbb" in label)
    verdict = [
        f"- throughput: {worst_ratio:.2f} of the baseline at worst (target ≥ 0.80): "
        f"{'met' if worst_ratio >= 0.8 else 'MISSED'}",
        f"- p99 at {RATE} req/s: {worst_p99:.2f} ms at worst (target < 5 ms): {'met' if worst_p99 < 5 else 'MISSED'}",
        f"- Kubernetes API requests per admission with a warm cache: {api_requests / max(answered, 1):.4f} "
        f"({api_requests:.0f} in {answered:,} admissions; target 0)",
    ]
    return "\n".join(
        [
            f"wrk: 1 thread, {CONNECTIONS} keep-alive connections, {DURATION} s per target; latency: vegeta, open "
            f"loop at {RATE} req/s for {DURATION} s. Same machine for client and server.",
            "",
            table(["target", "requests/s (wrk)", "ratio to baseline", f"p50 ms @{RATE}/s", f"p99 ms @{RATE}/s"], lines),
            "",
            *verdict,
            "",
            profile,
        ]
    )


def _wrk(url: str, body: Path, work: Path) -> tuple[float, int]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local f = io.open({json.dumps(str(body))}, 'rb')\nwrk.body = f:read('*a')\nf:close()\n"
    )
    result = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=DURATION + 30,
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise RuntimeError(f"wrk saw errors against {url}:\n{result.stdout}")
    return rps, total


def _fixed_rate(vegeta: str, url: str, body: Path, work: Path) -> tuple[float, float, int]:
    """p50 and p99 in ms of RATE requests/s for DURATION s, open loop, and how many were sent."""
    targets = work / "targets.txt"
    targets.write_text(f"POST {url}\nContent-Type: application/json\n@{body}\n")
    attack = subprocess.run(
        [
            vegeta,
            "attack",
            f"-targets={targets}",
            f"-rate={RATE}/s",
            f"-duration={DURATION}s",
            f"-root-certs={work / 'tls' / 'ca.crt'}",
            f"-connections={CONNECTIONS}",
        ],
        capture_output=True,
        check=True,
        timeout=DURATION + 60,
    )
    report = subprocess.run(
        [vegeta, "report", "-type=json"], input=attack.stdout, capture_output=True, check=True, timeout=60
    )
    found = json.loads(report.stdout)
    if found["success"] < 1 or set(found["status_codes"]) != {"200"}:
        raise RuntimeError(f"vegeta saw failures against {url}: {found['status_codes']} {found.get('errors')}")
    latencies = found["latencies"]
    return latencies["50th"] / 1e6, latencies["99th"] / 1e6, int(found["requests"])


def _profile(pid: int, url: str, body: Path, work: Path) -> str:
    """py-spy's samples of the webhook during a wrk run: the functions with the most samples of their own."""
    output = work / "profile.txt"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            f"--pid={pid}",
            f"--duration={DURATION}",
            "--format=raw",
            f"--output={output}",
            "--rate=200",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wrk(url, body, work)
    spy.wait(DURATION + 60)
    own: dict[str, int] = {}
    layers: dict[str, int] = {}
    total = 0
    for line in output.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        leaf = stack.rsplit(";", 1)[-1]
        own[_frame(leaf)] = own.get(_frame(leaf), 0) + int(count)
        layers[_layer(stack)] = layers.get(_layer(stack), 0) + int(count)
    top = sorted(own.items(), key=lambda item: -item[1])[:12]
    lines = [[name, f"{count / max(total, 1):.1%}"] for name, count in top]
    by_layer = [[name, f"{count / max(total, 1):.1%}"] for name, count in sorted(layers.items(), key=lambda i: -i[1])]
    return "\n".join(
        [
            f"Where /validate's time goes under wrk: py-spy, 200 samples/s for {DURATION} s, {total:,} samples of the "
            "busy process. By layer (a sample counts for the first of these its stack passes through):",
            "",
            table(["layer", "share of samples"], by_layer),
            "",
            "The functions with the most samples of their own:",
            "",
            table(["function (file)", "share of samples"], lines),
        ]
    )


LAYERS = (
    ("JSON decoding and encoding (the standard library's json)", ("json/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("the admission itself (webhook/, common/: parse, validate, default, patch)", ("webhook/", "common/")),
)


def _layer(stack: str) -> str:
    """Which layer a py-spy stack (`frame;frame;...`, outermost first) belongs to: the first of LAYERS any of its
    frames' files is in, else the HTTP server, TLS and event loop."""
    files = [frame.rpartition(" (")[2] for frame in stack.split(";")]  # py-spy: paths from the import root
    for name, markers in LAYERS:
        if any(path.startswith(markers) for path in files):
            return name
    return "HTTP, TLS and the event loop (aiohttp, asyncio, ssl)"


def _frame(leaf: str) -> str:
    """`function (path/to/file.py:123)` as `function (file.py)`."""
    name, _, where = leaf.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(where).name})" if where else name


def _api_requests(port: int, context: ssl.SSLContext) -> float:
    import urllib.request

    url = f"https://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dbb_webhook_kube_requests_total")
    )


def _expect_allowed(url: str, review: dict[str, Any], context: ssl.SSLContext, *, same_uid: bool) -> None:
    """One answer checked before timing: a denial is also a 200, and a benchmark of denials measures nothing."""
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - https to our own loopback server
        url, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, context=context, timeout=5) as answer:  # noqa: S310
        response = json.loads(answer.read()).get("response") or {}
    expected_uid = review["request"]["uid"]
    if response.get("allowed") is not True:
        raise RuntimeError(f"{url} does not allow the benchmark's DatabaseBackup: {response.get('status')}")
    if same_uid and response.get("uid") != expected_uid:
        raise RuntimeError(f"{url} answered for uid {response.get('uid')!r}, not {expected_uid!r}")


def _wait_ready(url: str, context: ssl.SSLContext, method: str = "GET") -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)  # noqa: S310
            with urllib.request.urlopen(request, context=context, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within 60 s")


def _ensure_wrk() -> None:
    subprocess.run(["bash", "-c", f"source {ROOT / 'hack' / 'lib.sh'} && apt_install wrk"], check=True)
