"""``[lb.acme]``: the certificates the balancer obtains from an ACME CA (regional_lb.acme).

Documented with every other key in regional_lb.config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gtm.config_reader import Listen, Reader, existing_path, relative_path

if TYPE_CHECKING:
    from regional_lb.config import ListenerSpec


@dataclass(frozen=True)
class AcmeCertificate:
    name: str
    domains: tuple[str, ...]
    challenge: str = "http-01"       # http-01 | dns-01


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    certificates: tuple[AcmeCertificate, ...]
    output: Path | None              # store = "directory": where NAME.pem goes
    state_dir: Path
    store: str = "directory"         # directory | control (PUT /v1/certificates/NAME)
    contact: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    renew_before_days: float = 30.0
    check_interval: float = 3600.0
    retry_interval: float = 60.0
    key_type: str = "ec256"
    timeout: float = 120.0
    control_api: str | None = None   # the control plane: dns-01 TXT records, store = control
    control_token_file: Path | None = None
    control_ca: Path | None = None   # CA bundle for an https control_api (else the system's)
    eab_kid: str | None = None       # external account binding, for CAs that require it
    eab_hmac_key_file: Path | None = None
    dns_servers: tuple[Listen, ...] = ()

    @property
    def tokens_dir(self) -> Path:
        """Where HTTP-01 tokens are (every worker answers them; worker 0 writes them)."""
        return self.state_dir / "http-01"


STORES = ("directory", "control")
ACME_KEYS = ("directory", "contact", "ca_bundle", "state_dir", "output", "store",
              "renew_before_days", "check_interval", "retry_interval", "key_type", "timeout",
             "control_api", "control_token_file", "control_ca", "eab_kid",
             "eab_hmac_key_file", "dns_servers", "certificates")
ACME_CERT_KEYS = ("name", "domains", "challenge")
_PAIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
ACME_KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")


def acme_names(reader: Reader | None) -> frozenset[str]:
    """Pair names [lb.acme] will write (checked properly by parse_acme)."""
    certificates = reader.value("certificates", None) if reader is not None else None
    if not isinstance(certificates, list):
        return frozenset()
    return frozenset(c["name"] for c in certificates
                     if isinstance(c, dict) and isinstance(c.get("name"), str))


def parse_acme(reader: Reader, listeners: tuple[ListenerSpec, ...]) -> AcmeSettings:
    """``[lb.acme]`` (any table: its keys are checked here)."""
    reader.only(ACME_KEYS)
    directory = reader.text("directory", None)
    if directory is None or not directory.startswith(("https://", "http://")):
        raise reader.fail("directory", "is required: the CA's directory URL (https://...)")
    certs = tuple(_acme_certificate(item)
                  for item in reader.tables("certificates", ACME_CERT_KEYS))
    if not certs:
        raise reader.fail("certificates", "needs at least one [[lb.acme.certificates]]")
    for i, cert in enumerate(certs):
        if cert.name in [c.name for c in certs[:i]]:
            raise reader.fail(f"certificates[{i}].name", f"{cert.name!r} is used twice")
    _check_http01_listener(reader, certs, listeners)
    store = reader.choice("store", STORES, "directory")
    control_api, token_file = _control_plane(reader, certs, store)
    return AcmeSettings(
        directory=directory, certificates=certs,
        output=_acme_output(reader, listeners) if store == "directory" else None, store=store,
        state_dir=relative_path(reader, "state_dir", "acme"),
        contact=tuple(str(c) for c in reader.list("contact")),
        ca_bundle=existing_path(reader, "ca_bundle"),
        renew_before_days=reader.number("renew_before_days", 30.0, low=0, high=365),
        check_interval=reader.number("check_interval", 3600.0, low=1, high=86400),
        retry_interval=reader.number("retry_interval", 60.0, low=0.1, high=86400),
        key_type=reader.choice("key_type", ACME_KEY_TYPES, "ec256"),
        timeout=reader.number("timeout", 120.0, low=1, high=3600),
        control_api=control_api, control_token_file=token_file,
        control_ca=existing_path(reader, "control_ca"),
        eab_kid=reader.text("eab_kid", None), eab_hmac_key_file=_eab_key_file(reader),
        dns_servers=reader.addresses("dns_servers"),
    )


def _acme_certificate(reader: Reader) -> AcmeCertificate:
    name = reader.text("name", None)
    if name is None or not _PAIR_NAME.fullmatch(name):
        raise reader.fail("name", "is required: a file name (letters, digits, . _ -)")
    challenge = reader.choice("challenge", ("http-01", "dns-01"), "http-01")
    domains = []
    for place, domain in reader.items("domains"):
        if not isinstance(domain, str) or not _is_host(domain.lower()):
            raise place.fail("must be a host name (a wildcard only as the first label, "
                             "*.example.com)")
        if domain.startswith("*.") and challenge != "dns-01":
            raise place.fail("a wildcard can only be proved by dns-01")
        domains.append(domain.lower())
    if not domains:
        raise reader.fail("domains", "needs at least one name")
    return AcmeCertificate(name, tuple(dict.fromkeys(domains)), challenge)


def _is_host(name: str) -> bool:
    labels = name.removeprefix("*.").rstrip(".").split(".")
    return len(labels) >= 2 and len(name) <= 253 and all(
        _HOST_LABEL.fullmatch(label) for label in labels)


def _check_http01_listener(reader: Reader, certs: tuple[AcmeCertificate, ...],
                           listeners: tuple[ListenerSpec, ...]) -> None:
    if any(c.challenge == "http-01" for c in certs) and not any(
            spec.mode == "http" and spec.tls is None for spec in listeners):
        raise reader.fail("certificates", "http-01 needs a plain http listener: the CA "
                          "fetches the token over HTTP (port 80 on the Internet)")


def _acme_output(reader: Reader, listeners: tuple[ListenerSpec, ...]) -> Path:
    if "output" in reader:
        return relative_path(reader, "output", "")
    for spec in listeners:
        if spec.tls is not None and spec.tls.certificates is not None:
            return spec.tls.certificates
    raise reader.fail("output", "is required when no listener has tls (where pairs go)")


def _control_plane(reader: Reader, certs: tuple[AcmeCertificate, ...], store: str
                   ) -> tuple[str | None, Path | None]:
    """The control API and its token file, required by dns-01 and by store = "control"."""
    api = reader.text("control_api", None)
    # Read at each use: in `gtm up` the control plane writes it after the balancers start.
    token = relative_path(reader, "control_token_file", "") \
        if "control_token_file" in reader else None
    needs = "dns-01" if any(c.challenge == "dns-01" for c in certs) else \
        'store = "control"' if store == "control" else None
    if needs is not None and (api is None or token is None):
        raise reader.fail("control_api", f"{needs} needs control_api and control_token_file "
                          "(the control plane's API and a token: editor for dns-01, admin "
                          "to store certificates)")
    if api is not None and not api.startswith(("http://", "https://")):
        raise reader.fail("control_api", "must be the control plane's URL (http://HOST:PORT)")
    return api, token


def _eab_key_file(reader: Reader) -> Path | None:
    path = existing_path(reader, "eab_hmac_key_file")
    if (path is None) != ("eab_kid" not in reader):
        raise reader.fail("eab_kid", "eab_kid and eab_hmac_key_file go together (both from "
                          "the CA)")
    return path
