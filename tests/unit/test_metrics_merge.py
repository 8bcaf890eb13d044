"""How a node's workers add up at scrape time (gtm.metrics_export.merge)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gtm.metrics import HealthCollector, HealthSample
from gtm.metrics_export import exposition, merge


def test_counters_add_up_gauges_follow_their_rule_and_created_keeps_the_earliest() -> None:
    worker0 = [
        ("gtm_dns_queries", "counter", "Queries.", [
            ("gtm_dns_queries_total", {"transport": "udp"}, 5.0),
            ("gtm_dns_queries_created", {"transport": "udp"}, 100.0)]),
        ("gtm_config_follower_version", "gauge", "Version.", [
            ("gtm_config_follower_version", {}, 7.0)]),
        ("gtm_health_isolated", "gauge", "Isolated.", [("gtm_health_isolated", {}, 0.0)]),
        ("gtm_lb_backend_in_flight", "gauge", "In flight.", [
            ("gtm_lb_backend_in_flight", {"pool": "app", "backend": "b:1"}, 2.0)]),
    ]
    worker1 = [
        ("gtm_dns_queries", "counter", "Queries.", [
            ("gtm_dns_queries_total", {"transport": "udp"}, 3.0),
            ("gtm_dns_queries_total", {"transport": "tcp"}, 1.0),
            ("gtm_dns_queries_created", {"transport": "udp"}, 90.0)]),
        ("gtm_config_follower_version", "gauge", "Version.", [
            ("gtm_config_follower_version", {}, 6.0)]),
        ("gtm_health_isolated", "gauge", "Isolated.", [("gtm_health_isolated", {}, 1.0)]),
        ("gtm_lb_backend_in_flight", "gauge", "In flight.", [
            ("gtm_lb_backend_in_flight", {"backend": "b:1", "pool": "app"}, 3.0)]),
    ]
    merged = {name: {(s, tuple(sorted(labels.items()))): v for s, labels, v in samples}
              for name, _kind, _doc, samples in merge([worker0, worker1])}
    assert merged["gtm_dns_queries"] == {
        ("gtm_dns_queries_total", (("transport", "udp"),)): 8.0,
        ("gtm_dns_queries_created", (("transport", "udp"),)): 90.0,
        ("gtm_dns_queries_total", (("transport", "tcp"),)): 1.0}
    # A node serves a version once every worker does; a flag is up if any worker's is.
    assert merged["gtm_config_follower_version"] == {("gtm_config_follower_version", ()): 6.0}
    assert merged["gtm_health_isolated"] == {("gtm_health_isolated", ()): 1.0}
    # Any other gauge adds up (label order does not matter).
    assert merged["gtm_lb_backend_in_flight"] == {
        ("gtm_lb_backend_in_flight", (("backend", "b:1"), ("pool", "app"))): 5.0}
    text = exposition(merge([worker0, worker1])).decode()
    assert 'gtm_dns_queries_total{transport="udp"} 8.0' in text
    assert "# TYPE gtm_dns_queries_total counter" in text


def health_view(quorum: int, zone: str, up: bool, region_up: bool,
                room: float) -> HealthSample:
    sample = HealthSample(quorum)
    sample.endpoints = [(zone, "192.0.2.1", "eu-west", up, 2)]
    sample.observations = [(zone, "192.0.2.1", "node-a", up, 0.01 if up else 0.2)]
    sample.regions = [("eu-west", region_up, room)]
    return sample


def test_every_health_service_of_a_process_is_exported_once_per_series() -> None:
    collector = HealthCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.sources.append(lambda: health_view(1, "a.test.", True, True, 0.8))
    collector.sources.append(lambda: health_view(2, "b.test.", False, False, 0.3))
    text = generate_latest(registry).decode()
    # The second service's zone is there too (it used to be left out).
    assert 'gtm_health_endpoint_up{endpoint="192.0.2.1",region="eu-west",zone="a.test."} 1.0' \
        in text
    assert 'gtm_health_endpoint_up{endpoint="192.0.2.1",region="eu-west",zone="b.test."} 0.0' \
        in text
    assert 'gtm_health_observation_up{endpoint="192.0.2.1",observer="node-a",zone="b.test."} ' \
        '0.0' in text
    # A series both views have is merged, never exported twice: down wins, the lower
    # headroom, the higher quorum.
    assert text.count('gtm_health_region_up{region="eu-west"}') == 1
    assert 'gtm_health_region_up{region="eu-west"} 0.0' in text
    assert 'gtm_health_region_headroom_ratio{region="eu-west"} 0.3' in text
    assert "gtm_health_quorum 2.0" in text
