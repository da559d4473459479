"""The Grafana dashboard and the alert rules work on what streamer really exports.

There is no Grafana server to be had here, so the dashboard is checked the way Grafana would use it:
a real Prometheus (Debian's ``prometheus``, on 127.0.0.1) scrapes a running ``streamer run`` (real
Kafka broker, Milvus Lite, the bundled model) every second while a few hundred real headlines and
a few malformed messages go through it and a re-clustering run happens. Then every template
variable query and every panel query of dashboards/streamer.json is evaluated in that Prometheus:
each must return at least one series, and each must have had a finite value at some point of the
run (a panel that would only ever show "No data" or NaN fails). The alert rules are loaded into the
same Prometheus and must evaluate without error; promtool checks the config and unit-tests the rules.

Tools: tools/install-deploy-tools.sh installs prometheus and promtool.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.streamer_fixtures import free_port
from tests.sample_data import sample_rows

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "streamer.json"
PROM_DIR = REPO / "deploy" / "prometheus"
N_VALID = 300
# Values Grafana would put in place of its built-in variables.
BUILTINS = {"__rate_interval": "30s", "__interval": "15s", "__range": "5m", "__range_s": "300", "__range_ms": "300000"}
MALFORMED = [
    b"not json at all",
    b"[1, 2, 3]",
    b"",
    b'{"id": "no-title"}',
    b"\xff\xfe\xfd",
    b'{"id": "bad-title", "title": 42}',
]


def _binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run tools/install-deploy-tools.sh", pytrace=False)
    return found


# ---------------------------------------------------------------------------------------------
# promtool
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    res = subprocess.run([_binary("promtool"), *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------------------------------------
# a real Prometheus
# ---------------------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "streamer", "static_configs": [{"targets": targets}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> Prometheus:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                _binary("prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout_s}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}"
        data = urllib.parse.urlencode(params).encode() if params else None
        try:
            with urllib.request.urlopen(url, data=data, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, **({"time": at} if at else {}))
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def make(targets: list[str], rule_files: list[Path]) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        prom = Prometheus(workdir, targets, rule_files)
        started.append(prom)
        return prom.start()

    try:
        yield make
    finally:
        for prom in started:
            prom.stop()


# ---------------------------------------------------------------------------------------------
# the dashboard
# ---------------------------------------------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus query of the dashboard."""
    out = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((panel["title"], target.get("refId", "?"), target["expr"]))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace $var, ${var} and ${var:format} as Grafana does; fail on any unknown variable."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise AssertionError(f"unknown variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def resolve_variables(dashboard: dict[str, Any], prom: Prometheus) -> dict[str, str]:
    """Evaluate the template variables in order, the way Grafana fills them with 'All'."""
    variables = dict(BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var["type"] == "datasource":
            assert var["query"] == "prometheus"
            variables[var["name"]] = "prometheus"
            continue
        assert var["type"] == "query", f"variable {var['name']}: type {var['type']} is not handled"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(query, variables).strip())
        assert m, f"variable {var['name']}: {query!r} is not label_values(selector, label)"
        selector, label = m.groups()
        values = sorted({s["metric"][label] for s in prom.query(selector) if label in s["metric"]})
        assert values, f"variable {var['name']}: {query} returned no value"
        if var.get("includeAll"):
            # Grafana escapes regex metacharacters for PromQL strings: "127.0.0.1" -> "127\\.0\\.0\\.1"
            escaped = [re.escape(v).replace("\\", "\\\\") for v in values]
            all_value = var.get("allValue") or "(" + "|".join(escaped) + ")"
            variables[var["name"]] = all_value
        else:
            variables[var["name"]] = values[0]
    return variables


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
    exprs = " ".join(e for _, _, e in dashboard_targets(dashboard))
    # the panels the operators asked for
    for needed in (
        "streamer_messages_consumed_total",
        "streamer_messages_processed_total",
        "streamer_messages_dead_lettered_total",
        "histogram_quantile(0.5, sum by (le) (rate(streamer_end_to_end_latency_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(streamer_end_to_end_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(streamer_end_to_end_latency_seconds_bucket",
        "streamer_stage_duration_seconds_bucket",
        "streamer_consumer_lag_messages",
        "streamer_clusters_alive",
        "streamer_noise_ratio",
        "streamer_window_headlines",
        "streamer_recluster_duration_seconds_bucket",
        "streamer_recluster_runs_total",
        "streamer_lifecycle_events_total",
        "streamer_errors_total",
        "streamer_retries_total",
        "streamer_ready",
    ):
        assert needed in exprs, f"no panel queries {needed}"
    ds_file = REPO / "dashboards" / "provisioning" / "datasources" / "prometheus.yaml"
    (ds,) = yaml.safe_load(ds_file.read_text())["datasources"]
    ds_var = next(v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS")
    assert ds_var["current"]["value"] == ds["uid"]
    provider = yaml.safe_load((REPO / "dashboards" / "provisioning" / "dashboards" / "streamer.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"


def _headlines(n: int) -> list[dict[str, Any]]:
    """Real titles from the bundled UCI sample: topic groups first (40 headlines from each of its five
    largest stories, so HDBSCAN finds clusters), then the rest of the file."""
    rows = [r for r in sample_rows() if r["TITLE"].strip()]
    stories = collections.Counter(r["STORY"] for r in rows)
    chosen: dict[str, dict[str, str]] = {}
    for story, _ in stories.most_common(5):
        for r in [r for r in rows if r["STORY"] == story][:40]:
            chosen.setdefault(r["ID"], r)
    for r in rows:
        if len(chosen) >= n:
            break
        chosen.setdefault(r["ID"], r)
    base_ms = 1_714_000_000_000
    return [
        {"id": f"uci-{r['ID']}", "title": r["TITLE"], "source": r["PUBLISHER"], "published_at": base_ms + i * 60_000}
        for i, r in enumerate(list(chosen.values())[:n])
    ]


async def _produce(bootstrap: str, topic: str, valid: list[dict[str, Any]], malformed: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        every = max(1, len(valid) // len(malformed))
        bad = iter(malformed)
        for i, item in enumerate(valid):
            await producer.send(topic, json.dumps(item).encode(), key=item["id"].encode())
            if i % every == every // 2:  # spread the malformed ones over the run
                raw = next(bad, None)
                if raw is not None:
                    await producer.send(topic, raw, key=f"bad-{i}".encode())
        for raw in bad:
            await producer.send(topic, raw, key=b"bad-tail")
        await producer.flush()
    finally:
        await producer.stop()


def _wait(predicate: Any, timeout_s: float, what: str, detail: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{detail()}")


def test_every_panel_query_returns_data(
    kafka_bootstrap_servers: str, service_factory: Any, prometheus_factory: Any, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    run = uuid.uuid4().hex[:10]
    settings = {
        "kafka": {
            "bootstrap_servers": kafka_bootstrap_servers,
            "group_id": f"dash-{run}",
            "input_topic": f"dash-in-{run}",
            "assignments_topic": f"dash-assign-{run}",
            "cluster_events_topic": f"dash-events-{run}",
            "dead_letter_topic": f"dash-dlq-{run}",
            "partitions": 2,
        },
        "milvus": {"uri": str(tmp_path / "m.db")},
        "embedding": {"threads": 2},
        "clustering": {"min_points": 50},
        "tracking": {"recluster_every_n": 100, "window_s": 1e9, "state_topic": f"dash-state-{run}"},
        "service": {"log_level": "INFO"},
    }
    svc = service_factory(settings, name="dashboard").start(ready_timeout_s=150)
    prom = prometheus_factory([f"127.0.0.1:{svc.http_port}"], [PROM_DIR / "rules.yml"])
    started = time.time()
    _wait(lambda: prom.value('up{job="streamer"}') == 1, 30, "the first scrape", lambda: prom.log_path.read_text())

    valid = _headlines(N_VALID)
    asyncio.run(_produce(kafka_bootstrap_servers, settings["kafka"]["input_topic"], valid, MALFORMED))

    def service_done() -> bool:
        return (
            svc.metric_value("streamer_messages_processed_total") >= N_VALID
            and svc.metric_value("streamer_messages_dead_lettered_total") >= len(MALFORMED)
            and svc.metric_value("streamer_recluster_runs_total", 'outcome="ok"') >= 1
            and svc.metric_value("streamer_lifecycle_events_total") >= 1
        )

    _wait(service_done, 120, "streamer to process the headlines and re-cluster", svc.log_tail)

    # Prometheus has the final state, including the lag gauge (reported every 5 s)
    def prometheus_caught_up() -> bool:
        return (
            prom.value("sum(streamer_messages_processed_total)") >= N_VALID
            and prom.value('sum(streamer_recluster_runs_total{outcome="ok"})') >= 1
            and prom.value("sum(streamer_lifecycle_events_total)") >= 1
            and prom.value("count(streamer_consumer_lag_messages)") >= 2
        )

    _wait(prometheus_caught_up, 30, "Prometheus to scrape the final values")
    time.sleep(2)  # a couple more scrapes, so rate() windows have samples after the last change
    ended = time.time()

    variables = resolve_variables(dashboard, prom)
    empty, never_finite = [], []
    targets = dashboard_targets(dashboard)
    assert len(targets) >= 20
    for title, ref, raw in targets:
        expr = substitute(raw, variables)
        if not prom.query(expr):
            empty.append(f"{title} [{ref}]: {expr}")
            continue
        series = prom.query_range(expr, started, ended, 1.0)
        if not any(math.isfinite(float(v)) for s in series for _, v in s["values"]):
            never_finite.append(f"{title} [{ref}]: {expr}")
    assert not empty, "panel queries with no series:\n" + "\n".join(empty)
    assert not never_finite, "panel queries never finite during the run:\n" + "\n".join(never_finite)

    # What the run produced is visible the way the panels slice it.
    reasons = {s["metric"]["reason"] for s in prom.query("sum by (reason) (streamer_messages_dead_lettered_total)")}
    assert {"invalid_json", "not_an_object", "empty", "invalid_fields", "invalid_utf8"} <= reasons
    partitions = {s["metric"]["partition"] for s in prom.query("streamer_consumer_lag_messages")}
    assert partitions == {"0", "1"}
    assert prom.value("max(streamer_clusters_alive)") >= 1
    assert prom.value("max(streamer_window_headlines)") >= 50

    # The alert rules evaluate on the real series without error, and none fires on a healthy run.
    def rules_evaluated() -> bool:
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(r.get("lastEvaluation", "").startswith("20") for r in rules)

    _wait(rules_evaluated, 30, "the alert rules to be evaluated")
    groups = prom.api("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    with (PROM_DIR / "rules.yml").open() as f:
        expected = {r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    assert set(rules) == expected
    bad = {name: r.get("lastError") for name, r in rules.items() if r["health"] != "ok"}
    assert not bad, f"rules failing to evaluate: {bad}"
    firing = {name for name, r in rules.items() if r["state"] == "firing"}
    assert not firing, f"alerts firing on a healthy run: {firing}"
