"""How a node's workers add up at scrape time (gtm.metrics_export.merge)."""

from __future__ import annotations

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
