"""What every resource shares: the API, diagnostics instead of tracebacks, state that
keeps the user's spelling, and the document edit every entry resource makes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    ImportContext,
    ReadContext,
    Resource,
    UpdateContext,
    UpgradeContext,
)
from tf.schema import Attribute, Schema
from tf.types import Unknown
from tf.utils import Diagnostics

from gtm.errors import ConfigError
from gtm.terraform.api import Api, Document, NoChange, ProviderError

if TYPE_CHECKING:
    from gtm.terraform.provider import GtmProvider

T = TypeVar("T")
State = dict[str, Any]

# The document's sections (gtm.config.document.ZONES, gtm.config.steering.STEERING and
# STATE), named here rather than imported: Terraform starts the provider several times
# per command, mostly for its schemas, and those modules load the whole DNS core. The
# product's own parsers are imported where a value is checked.
ZONES = "zones"
STEERING = "steering"
STATE = "state"


def report(diagnostics: Diagnostics, error: ProviderError) -> None:
    path = [error.attribute] if error.attribute else None
    diagnostics.add_error(error.summary, error.detail, path=path)


def guarded(diagnostics: Diagnostics, work: Callable[[], T]) -> T | None:
    """Run ``work``; a ProviderError becomes an error diagnostic (never a traceback)."""
    try:
        return work()
    except ProviderError as exc:
        report(diagnostics, exc)
        return None
    except ConfigError as exc:
        diagnostics.add_error(exc.reason, str(exc))
        return None


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Described:
    """What resources and data sources of this provider share: their provider, their
    name (``kind``: ``zone`` is ``gtm_zone``) and a schema made from ``attributes``."""

    kind: ClassVar[str]
    attributes: ClassVar[list[Attribute]]
    description: ClassVar[str] = ""

    def __init__(self, provider: GtmProvider):
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return cls.kind

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(attributes=cls.attributes, description=cls.description)


class GtmResource(Described, Resource):
    """A resource of this provider."""

    def upgrade(self, ctx: UpgradeContext, version: int, old: State) -> State | None:
        # One schema version so far, which grows: an attribute added since the state was
        # written (gtm_steered_name.simulated_answers) starts null, as Terraform requires
        # every attribute of the schema; one no longer in it is dropped.
        return {a.name: old.get(a.name) for a in self.attributes}

    @classmethod
    def decoded(cls, config: Config) -> State:
        """The raw configuration ValidateResourceConfig gets, decoded by the schema's
        types as every other operation gets it (53.35 arrives as the text "53.35")."""
        types = {a.name: a.type for a in cls.attributes}
        return {k: types[k].decode(v) if k in types and v is not None and v is not Unknown
                else v for k, v in config.items()}

    @property
    def api(self) -> Api:
        return self.provider.connection()

    def type_name(self) -> str:
        return f"gtm_{self.kind}"

    def message(self, entry_id: str, verb: str) -> str:
        # The protocol does not tell a provider the resource's address (gtm_pool.web),
        # so the message names the type and the ID, which `terraform import` also takes.
        return f"terraform: {self.type_name()} {entry_id} {verb}"

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        """Do two values of ``attribute`` mean the same? Resources widen this."""
        return bool(old == new)

    def keep_spelling(self, prior: State | None, fresh: State) -> State:
        """``fresh`` with each value the user wrote kept where it means the same."""
        if prior is None:
            return fresh
        out = {}
        for key, value in fresh.items():
            old = prior.get(key, Unknown)
            keep = old is not Unknown and self.same(key, old, value, fresh)
            out[key] = old if keep else value
        return out


class EntryResource(GtmResource):
    """A resource that is one entry of the document (a zone, a pool, a listener...).

    Subclasses say where the entry is (``find``), what state it gives (``state_of``),
    how to write and remove it, and how an import ID names it."""

    import_format: ClassVar[str]

    def entry_id(self, state: State) -> str:
        raise NotImplementedError

    def find(self, document: Document, state: State) -> Any:
        """The entry as the document holds it, or None."""
        raise NotImplementedError

    def state_of(self, document: Document, state: State) -> State | None:
        """The full state for the entry ``state`` names, from the document."""
        raise NotImplementedError

    def put(self, document: Document, state: State) -> None:
        raise NotImplementedError

    def remove(self, document: Document, state: State) -> None:
        raise NotImplementedError

    def replace(self, document: Document, current: State, planned: State) -> None:
        """The entry ``current`` names, made ``planned`` (an update)."""
        self.remove(document, current)
        self.put(document, planned)

    def from_import_id(self, text: str) -> State:
        raise NotImplementedError

    def unchanged(self, document: Document, state: State) -> bool:
        current = self.state_of(document, state)
        return current is not None and all(
            self.same(k, current[k], v, state) for k, v in state.items()
            if k in current and v is not Unknown)

    # ---- the protocol's operations ----

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        return guarded(ctx.diagnostics, lambda: self._create(planned))

    def _create(self, planned: State) -> State | None:
        entry_id = self.entry_id(planned)

        def change(document: Document) -> None:
            if self.find(document, planned) is not None:
                raise ProviderError(
                    f"{self.type_name()} {entry_id} already exists",
                    f"Another resource or another tool made it. To manage it with this "
                    f"resource, import it: terraform import {self.type_name()}.<name> "
                    f"{entry_id}")
            self.put(document, planned)

        self.api.edit(change, self.message(entry_id, "created"))
        return self._after_write(planned)

    def _after_write(self, planned: State) -> State | None:
        _version, document = self.api.document()
        fresh = self.state_of(document, planned)
        if fresh is None:
            raise ProviderError(f"{self.type_name()} {self.entry_id(planned)} vanished "
                                "right after it was written (someone removed it)")
        return self.keep_spelling(planned, fresh)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        def work() -> State | None:
            _version, document = self.api.document()
            fresh = self.state_of(document, current)
            return None if fresh is None else self.keep_spelling(current, fresh)

        return guarded(ctx.diagnostics, work)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        return guarded(ctx.diagnostics, lambda: self._update(current, planned))

    def _update(self, current: State, planned: State) -> State | None:
        entry_id = self.entry_id(planned)

        def change(document: Document) -> None:
            if self.find(document, current) is None:
                raise ProviderError(f"{self.type_name()} {entry_id} was removed outside "
                                    "Terraform", "Run `terraform apply` again to create it.")
            if self.unchanged(document, planned):
                raise NoChange
            self.replace(document, current, planned)

        self.api.edit(change, self.message(entry_id, "updated"))
        return self._after_write(planned)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        def change(document: Document) -> None:
            if self.find(document, current) is None:
                raise NoChange
            self.remove(document, current)

        message = self.message(self.entry_id(current), "deleted")
        guarded(ctx.diagnostics, lambda: self.api.edit(change, message))

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        def work() -> State | None:
            wanted = self.from_import_id(id)
            _version, document = self.api.document()
            fresh = self.state_of(document, wanted)
            if fresh is None:
                raise ProviderError(f"no {self.type_name()} {id} in the live configuration",
                                    f"Import IDs of {self.type_name()}: {self.import_format}")
            return fresh

        return guarded(ctx.diagnostics, work)


def split_id(text: str, parts: int, import_format: str) -> list[str]:
    pieces = text.split("/")
    if len(pieces) != parts or not all(pieces):
        raise ProviderError(f"not an import ID of this resource: {text!r}",
                            f"Use {import_format}")
    return pieces


def table(document: Document, *path: str, create: bool = False) -> dict[str, Any] | None:
    """The object at ``path`` in the document (made on the way when ``create``)."""
    node: Any = document
    for key in path:
        if not isinstance(node, dict):
            return None
        if key not in node:
            if not create:
                return None
            node[key] = {}
        node = node[key]
    return node if isinstance(node, dict) else None


def prune(document: Document, *path: str) -> None:
    """Remove the objects along ``path`` that an edit left empty, deepest first, so that
    destroying what Terraform made leaves the document as it was before."""
    for depth in range(len(path), 0, -1):
        parent = table(document, *path[:depth - 1])
        if parent is None:
            continue
        child = parent.get(path[depth - 1])
        if isinstance(child, dict) and not child:
            del parent[path[depth - 1]]


def without_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
