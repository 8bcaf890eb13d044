"""/metrics on every long-running process, scraped for real, and what depends on the names.

One process of each kind runs for the whole module: a DNS node of two workers (`gtm serve
--metrics`), a balancer of two workers (`gtm lb serve` with `[lb] metrics` and an admin
API), a control API (`gtm api`) and `gtm up`. Their scrapes are checked by `promtool check
metrics`; the alert rules by `promtool check rules` and their unit tests; and every metric
name a dashboard or an alert uses must be in one of the real scrapes.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import pytest
import yaml

from tests.integration.servers import REPO, GtmServer, start_gtm, wait_until
from tests.integration.test_up_health_view import region_file
from tests.lb.process import GTM, LbProcess

DEPLOY = REPO / "deploy"
METRICS_URL = re.compile(r"metrics on (http://\S+/metrics)")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? (\S+)$')


# ---- tools and scrapes -----------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is missing: apt-get install -y prometheus (it ships promtool)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str, token: str | None = None) -> str:
    status, text = get(url, token)
    assert status == 200, text
    return text


def value(text: str, metric: str, missing_is_zero: bool = False, /, **labels: str) -> float:
    """The sum of a series' samples whose labels include the given ones."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None or match.group(1) != metric:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
            found = True
    assert found or missing_is_zero, f"no {metric}{labels} in the scrape"
    return total


def exposed_names(text: str) -> set[str]:
    """Every name a query can use: sample names and the families' declared names."""
    names = {m.group(1) for line in text.splitlines() if (m := SAMPLE.match(line))}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def log_match(lines: list[str], pattern: re.Pattern[str]) -> str:
    for line in lines:
        match = pattern.search(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no {pattern.pattern!r} in:\n" + "".join(lines))


# ---- the processes ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dns_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GtmServer, str]]:
    logs = tmp_path_factory.mktemp("dns-node")
    server = start_gtm(["serve", "--zones", str(REPO / "zones"), "--listen", "127.0.0.1:0",
                        "--workers", "2", "--metrics", "127.0.0.1:0"], logs / "gtm.log")
    try:
        yield server, log_match(server.log().splitlines(), METRICS_URL)
    finally:
        server.stop()


class Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LbProcess, str, str]]:
    """`gtm lb serve` with 2 workers: (process, listener address, metrics URL)."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    config = tmp_path_factory.mktemp("lb") / "lb.toml"
    config.write_text(f"""[lb]
admin = "127.0.0.1:0"
admin_token = "metrics-test-token"
metrics = "127.0.0.1:0"
region = "eu-west"
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:0"
mode = "http"
pool = "app"
[[lb.pools]]
name = "app"
backends = ["127.0.0.1:{backend.server_address[1]}"]
""")
    process = LbProcess(config, workers=2)
    try:
        listener = process.wait_for_log(r"listener web on (\S+):(\d+)")
        url = process.wait_for_log(METRICS_URL.pattern).group(1)
        process.wait_for_log(r"admin API on (\S+):(\d+)")
        yield process, f"{listener.group(1)}:{listener.group(2)}", url
    finally:
        process.stop()
        backend.shutdown()
        backend.server_close()


@pytest.fixture(scope="module")
def control_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`gtm api` on SQLite: (base URL, admin token)."""
    state = tmp_path_factory.mktemp("api")
    process = subprocess.Popen(
        [*GTM, "api", "--listen", "127.0.0.1:0",
         "--store", f"sqlite://{state / 'gtm.db'}", "--state-dir", str(state)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(state / "log").open("wb"))
    try:
        def started() -> str | None:
            match = re.search(r"control plane API on (\S+)", (state / "log").read_text())
            return match.group(1) if match else None

        url = wait_until(started, 10, "the API to start", lambda: (state / "log").read_text())
        yield url, (state / "admin.token").read_text().strip()
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def gtm_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GtmServer, str, str]]:
    """`gtm up` with a balancer for region eu-west on ports of its own: (server, --metrics
    URL, API URL)."""
    root = tmp_path_factory.mktemp("up")
    region = region_file(root / "eu-west.toml")
    server = start_gtm(["up", "--zones", str(REPO / "zones"), "--listen", "127.0.0.1:0",
                        "--api-listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                        "--region", str(region), "--state-dir", str(root / "var")],
                       root / "gtm.log", cwd=REPO)
    try:
        text = server.wait_for_log(r"metrics to scrape \(the whole process, one target\): "
                                   r"http://\S+ \(no token\)", timeout=10)
        url = re.search(r"metrics to scrape .*?: (http://\S+/metrics) \(no token\)", text)
        api = re.search(r"metrics: also (http://\S+)/metrics \(a viewer token", text)
        assert url and api, text
        yield server, url.group(1), api.group(1)
    finally:
        server.stop()


# ---- DNS node --------------------------------------------------------------------------

def test_a_dns_node_of_two_workers_is_scraped_whole(dns_node: tuple[GtmServer, str]) -> None:
    server, url = dns_node
    before = scrape(url)
    # Each query from a socket of its own: SO_REUSEPORT spreads them over both workers.
    for _ in range(20):
        assert server.query("www.example.test.", "A").answer
    for _ in range(4):
        assert server.query("www.example.test.", "A", tcp=True).answer
    assert server.query("nothing-here.example.test.", "A").rcode() == 3  # NXDOMAIN
    assert server.query("www.example.test.", "NULL").rcode() == 0        # a type not named
    ecs = dns.edns.ECSOption("81.2.69.0", 24)
    steered = server.query("www.gslb.example.test.", "A", use_edns=0, options=[ecs])
    assert steered.answer
    after = scrape(url)

    def delta(metric: str, **labels: str) -> float:
        # A labelled series appears with its first count: absent before is 0.
        return value(after, metric, **labels) - value(before, metric, True, **labels)

    assert value(after, "gtm_metrics_workers", state="answered") == 2
    assert value(after, "gtm_metrics_workers", state="missing") == 0
    assert delta("gtm_dns_queries_total", transport="udp") == 23
    assert delta("gtm_dns_queries_total", transport="tcp") == 4
    assert delta("gtm_dns_answers_total", rcode="NXDOMAIN") == 1
    assert delta("gtm_dns_answers_total", qtype="other") == 1
    assert value(after, "gtm_dns_steered_answers_total", name="www.gslb.example.test.",
                 decision="steered") >= 1
    # Every query ends in one outcome: the outcomes add up to the queries.
    assert sum(delta("gtm_dns_responses_total", outcome=o) for o in (
        "answered", "cache_hit", "formerr", "notimp", "servfail", "dropped")) == 27
    assert value(after, "gtm_dns_answer_seconds_count") >= delta("gtm_dns_responses_total",
                                                                  outcome="answered")


# ---- balancer --------------------------------------------------------------------------

def test_a_balancer_of_two_workers_is_scraped_whole_with_and_without_the_token(
        balancer: tuple[LbProcess, str, str]) -> None:
    process, address, url = balancer
    host, port = address.rsplit(":", 1)
    for _ in range(16):  # a connection each: the kernel spreads them over the workers
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b" 200 " in client.recv(65536)
    open_scrape = scrape(url)
    assert value(open_scrape, "gtm_lb_backend_requests_total", pool="app") == 16
    assert value(open_scrape, "gtm_metrics_workers", state="answered") == 2
    admin = process.wait_for_log(r"admin API on (\S+):(\d+)")
    admin_url = f"http://{admin.group(1)}:{admin.group(2)}/metrics"
    assert get(admin_url)[0] == 401
    token_scrape = scrape(admin_url, "metrics-test-token")
    assert value(token_scrape, "gtm_lb_backend_requests_total", pool="app") == 16
    # The tokenless listener serves /metrics only, never the admin API.
    assert get(url.replace("/metrics", "/pools"))[0] == 404


# ---- control API -----------------------------------------------------------------------

def test_the_control_api_serves_metrics_to_a_viewer_and_counts_route_templates(
        control_api: tuple[str, str]) -> None:
    base, admin = control_api
    assert get(f"{base}/metrics")[0] == 401
    request = urllib.request.Request(
        f"{base}/v1/tokens", data=json.dumps({"name": "prometheus", "role": "viewer"}).encode(),
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        viewer = json.loads(response.read())["token"]
    assert get(f"{base}/v1/config/zones/no-such-zone.test", viewer)[0] == 404
    text = scrape(f"{base}/metrics", viewer)
    assert value(text, "gtm_api_requests_total", route="/v1/config/zones/{name}",
                 status="404") == 1
    assert "no-such-zone" not in text  # a route template, never the raw path
    assert value(text, "gtm_dependency_up", dependency="store") == 1
    assert value(text, "gtm_config_head_version") >= 0


# ---- gtm up ----------------------------------------------------------------------------

def test_gtm_up_prints_one_url_to_scrape_and_names_the_others_as_the_same_process(
        gtm_up: tuple[GtmServer, str, str]) -> None:
    """One process, one registry: every /metrics of gtm up serves all of it, so gtm up
    announces exactly one target (what deploy/prometheus/gtm-up.yml scrapes) and names
    the others as the same data; a Prometheus that scrapes what it is told to counts
    nothing twice."""
    server, url, api = gtm_up
    log = server.log()
    assert len(re.findall(r"metrics to scrape", log)) == 1, log
    assert re.search(r"metrics: also http://\S+:\d+/metrics \(region eu-west's admin "
                     r"token\): the same process, not another target", log), log
    example = yaml.safe_load((DEPLOY / "prometheus" / "gtm-up.yml").read_text())
    targets = [t for job in example["scrape_configs"] for group in job["static_configs"]
               for t in group["targets"]]
    assert targets == ["127.0.0.1:9153"]  # `gtm up --metrics 127.0.0.1:9153`: that one
    token = (Path(server.log_path).parent / "var" / "control" / "admin.token").read_text()

    def with_region_reports() -> str | None:
        text = scrape(f"{api}/metrics", token.strip())
        return text if 'gtm_health_region_up{region="eu-west"}' in text else None

    text = wait_until(with_region_reports, 10, "a region report in the scrape")
    assert value(text, "gtm_health_region_up", region="eu-west") == 1
    assert value(scrape(url), "gtm_config_follower_version") >= 1


# ---- promtool, alert rules, dashboards -------------------------------------------------

@pytest.fixture(scope="module")
def scrapes(dns_node: tuple[GtmServer, str], balancer: tuple[LbProcess, str, str],
            control_api: tuple[str, str], gtm_up: tuple[GtmServer, str, str]) -> dict[str, str]:
    up_server, up_url, up_api = gtm_up
    token = (Path(up_server.log_path).parent / "var" / "control" / "admin.token").read_text()
    base, admin = control_api
    return {"dns node": scrape(dns_node[1]), "balancer": scrape(balancer[2]),
            "control api": scrape(f"{base}/metrics", admin),
            "gtm up": scrape(up_url), "gtm up api": scrape(f"{up_api}/metrics", token.strip())}


def test_promtool_accepts_every_scrape(scrapes: dict[str, str]) -> None:
    tool = promtool()
    for kind, text in scrapes.items():
        result = subprocess.run([tool, "check", "metrics"], input=text, text=True,
                                capture_output=True, timeout=20)
        assert result.returncode == 0 and not result.stdout.strip() \
            and not result.stderr.strip(), f"{kind}:\n{result.stdout}{result.stderr}"


def test_alert_rules_pass_promtool_and_their_unit_tests(tmp_path: Path) -> None:
    tool = promtool()
    prometheus = DEPLOY / "prometheus"
    checks = [[tool, "check", "rules", str(prometheus / "rules" / "gtm.rules.yml")],
              [tool, "test", "rules", str(prometheus / "tests" / "gtm.rules.test.yml")]]
    # The scrape configs too, from a copy with the token file they name in place.
    copy = shutil.copytree(prometheus, tmp_path / "prometheus")
    (copy / "secrets").mkdir()
    (copy / "secrets" / "gtm-viewer.token").write_text("a-viewer-token\n")
    checks.append([tool, "check", "config", str(copy / "gtm-up.yml"),
                   str(copy / "terraform.yml")])
    for command in checks:
        result = subprocess.run(command, text=True, capture_output=True, timeout=30)
        assert result.returncode == 0, " ".join(command) + "\n" + result.stdout + result.stderr


# PromQL words that are not metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "time", "abs", "clamp_min", "clamp_max", "vector",
    "scalar", "absent", "changes", "resets", "label_replace", "label_join", "round",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "predict_linear", "timestamp", "sort", "sort_desc", "inf", "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in braces or after by/without/on), durations or template variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)        # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)                  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)                 # ranges ($__rate_interval)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1",
                  text)                                      # label lists
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()[:1]
        if word.lower() in PROMQL_WORDS or following == "(" or text[:match.start()].endswith("$"):
            continue
        names.add(word)
    return names


def expressions() -> list[tuple[str, str]]:
    found = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            found += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "gtm.rules.yml").read_text())
    for group in rules["groups"]:
        found += [(f"alert {rule['alert']}", rule["expr"]) for rule in group["rules"]]
    return found


def test_the_promql_tokenizer_finds_names_and_nothing_else() -> None:
    expr = ('histogram_quantile(0.95, sum by (pool, le) (rate(gtm_lb_x_bucket{class="5xx",'
            'le!="+Inf"}[$__rate_interval]))) / on (pool) group_left sum without (backend) '
            '(gtm_y) > 0.5 and min by (region) (gtm_z) - time() < 14 * 86400')
    assert promql_metric_names(expr) == {"gtm_lb_x_bucket", "gtm_y", "gtm_z"}


def test_every_metric_in_the_dashboards_and_alerts_is_in_a_real_scrape(
        scrapes: dict[str, str]) -> None:
    exposed = set().union(*(exposed_names(text) for text in scrapes.values()))
    found = expressions()
    assert len(found) > 40  # every dashboard panel and every alert was read
    missing = [f"{where}: {name}" for where, expr in found
               for name in sorted(promql_metric_names(expr)) if name not in exposed]
    assert missing == []
    uids = [json.loads(p.read_text())["uid"]
            for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")]
    assert sorted(uids) == ["gtm-balancers", "gtm-dns", "gtm-overview"]
