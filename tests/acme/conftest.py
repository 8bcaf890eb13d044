"""The ACME tests run real servers: the integration fixtures apply here too."""

from tests.integration.conftest import gtm_server  # noqa: F401  (a fixture, used by name)
