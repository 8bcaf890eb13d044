"""TLS termination: a certificate store chosen by SNI, listener contexts, rotation.

``certs`` reads and checks one certificate/key pair (the checks are gtm.tlscerts);
``control`` follows the control plane's certificates (``control_cache`` keeps the last
copy, keys sealed); ``store`` indexes a directory's and the control plane's pairs by name
and builds SSL contexts lazily; ``listener`` is what a TLS listener holds (its front
context, its SNI callback, its handshake counters); ``inventory`` is ``gtm certs list``.
"""

# The issuer of the self-signed stand-in regional_lb.acme writes until the CA's
# certificate arrives: the store does not warn about its (short) expiry.
PLACEHOLDER_ISSUER_CN = "gtm placeholder awaiting ACME"
