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

from tf import types
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


class Num(types.Number):
    """A number as Python has it: Terraform's msgpack sends a number that a float64
    cannot hold exactly (53.35) as its decimal text."""

    def decode(self, value: Any) -> Any:
        if isinstance(value, str):
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
        return value


class ZoneName(types.String):
    """A zone's name: with or without its final dot, in any case, the same zone (so a
    spelling is never a replacement)."""

    def semantically_equal(self, a_decoded: Any, b_decoded: Any) -> bool:
        def normal(value: Any) -> Any:
            return value.rstrip(".").lower() if isinstance(value, str) else value

        return bool(normal(a_decoded) == normal(b_decoded))


class Objects(Plain):
    """The value of a nested attribute: each object's fields decoded by their types."""

    def __init__(self, fields: list[Attribute]):
        super().__init__(b'"dynamic"')
        self.fields = {f.name: f for f in fields}

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode_object(v) for v in value]
        return self.decode_object(value)

    def decode_object(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: self.fields[k].type.decode(v) if k in self.fields and v is not None
                and v is not Unknown else v for k, v in value.items()}


class Nested(Attribute):
    """An attribute holding an object (``single``), or a list or set of objects."""

    def __init__(self, name: str, nesting: str, fields: list[Attribute], **flags: Any):
        super().__init__(name, Objects(fields), **flags)
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
