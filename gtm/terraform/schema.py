"""Schema pieces the ``tf`` package lacks: nested attributes and write-only attributes.

``tf`` 1.2.0 has no object type and no single nested blocks. Protocol v6 has *nested
attributes* (an attribute whose value is an object, a list or a set of objects, each
field with its own optional/computed flags), which is what users of the official
providers write (``endpoints = [{ name = "a", ipv4 = "..." }]``), so they are built here
on tf's Attribute. Write-only attributes (Terraform 1.11+: in the configuration, never
in plan or state) are marked with the protocol's field 11, which tf's generated
messages predate.
"""

from __future__ import annotations

from typing import Any

from tf.gen import tfplugin_pb2 as pb
from tf.schema import Attribute
from tf.types import TfType, Unknown

WRITE_ONLY_FIELD = b"\x58\x01"  # Schema.Attribute field 11 (write_only), varint true
NESTING = {"single": pb.Schema.Object.SINGLE, "list": pb.Schema.Object.LIST,
           "set": pb.Schema.Object.SET}


class Plain(TfType):
    """A value that travels as it is (objects and lists of them decode to dicts/lists).

    Comparison for the state's sake is done by the resources, which know what a value
    means; here, equal means equal."""

    def __init__(self, pattern: bytes):
        self.pattern = pattern

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, value: Any) -> Any:
        return value

    def tf_type(self) -> bytes:
        return self.pattern


class Nested(Attribute):
    """An attribute holding an object (``single``), or a list or set of objects."""

    def __init__(self, name: str, nesting: str, fields: list[Attribute], **flags: Any):
        super().__init__(name, Plain(b'"dynamic"'), **flags)
        self.nesting = nesting
        self.fields = fields

    def to_pb(self) -> pb.Schema.Attribute:
        message = super().to_pb()
        message.ClearField("type")
        message.nested_type.CopyFrom(pb.Schema.Object(
            attributes=[f.to_pb() for f in self.fields], nesting=NESTING[self.nesting]))
        return message


class WriteOnly(Attribute):
    """An attribute Terraform hands to the provider from the configuration only; plan and
    state hold null (gtm.terraform.servicer passes the value on to plan and apply)."""

    def to_pb(self) -> pb.Schema.Attribute:
        message = super().to_pb()
        message.MergeFromString(WRITE_ONLY_FIELD)
        return message


def has_unknown(value: Any) -> bool:
    if value is Unknown:
        return True
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_unknown(v) for v in value)
    return False
