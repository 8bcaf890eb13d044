"""The balancer's HTTP/2 settings: ``[lb.http2]``. Documented with every other key in
regional_lb.config; what each limit does is in regional_lb.l7.http2."""

from __future__ import annotations

from dataclasses import dataclass

from gtm.config_reader import Reader


@dataclass(frozen=True)
class Http2Settings:
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS
    initial_window_size: int = 65535   # bytes a client may send ahead on a stream
    max_resets: int = 100              # streams the client resets per window, then GOAWAY
    max_control_frames: int = 1000     # SETTINGS, PING, PRIORITY, unknown frames per window
    abuse_window: float = 10.0         # seconds the two counts above run over


def http2_settings(reader: Reader) -> Http2Settings:
    """``[lb.http2]`` (its keys checked by the caller: the fields of Http2Settings)."""
    return Http2Settings(
        max_concurrent_streams=reader.integer("max_concurrent_streams", 100, low=1,
                                              high=10000),
        # RFC 9113 6.5.2: at most 2^31 - 1. Never below the default: a client may send
        # 65535 bytes before it has our SETTINGS, and h2 would call that a violation.
        initial_window_size=reader.integer("initial_window_size", 65535, low=65535,
                                           high=2**31 - 1),
        max_resets=reader.integer("max_resets", 100, low=1, high=10**6),
        max_control_frames=reader.integer("max_control_frames", 1000, low=10, high=10**7),
        abuse_window=reader.number("abuse_window", 10.0, low=0.1, high=3600),
    )
