"""Global traffic manager: authoritative steering DNS and regional load balancers."""

__version__ = "0.1.0"
