"""ACME (RFC 8555): a client of our own, the order flow, and challenge solvers.

``jws`` signs requests, ``client`` speaks the protocol (nonces, problems, polling),
``flow`` runs one order from identifiers to a certificate chain, and the solvers
publish what a challenge needs: ``dns01`` through the control plane (this project's
authoritative servers answer the ``_acme-challenge`` TXT), HTTP-01 through the
balancer (regional_lb.acme).
"""
