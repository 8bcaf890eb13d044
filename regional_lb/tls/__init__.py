"""TLS termination: a certificate store chosen by SNI, listener contexts, rotation.

``certs`` reads and checks one certificate/key pair; ``store`` indexes a directory of
them by name and builds SSL contexts lazily; ``listener`` is what a TLS listener holds
(its front context, its SNI callback, its handshake counters); ``inventory`` is
``gtm certs list``.
"""

# The issuer of the self-signed stand-in regional_lb.acme writes until the CA's
# certificate arrives: the store does not warn about its (short) expiry.
PLACEHOLDER_ISSUER_CN = "gtm placeholder awaiting ACME"
