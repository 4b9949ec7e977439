"""Event rows as the Storage Write API takes them: protocol buffers whose message type is built at
run time from a table's columns (BigQuery matches the fields to the columns by name).

Values are checked and converted here, before anything is sent: a payload value that does not fit
its typed column is a `ValueError` naming the column, so the exporter quarantines exactly that
event without asking BigQuery to find it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]

Field = descriptor_pb2.FieldDescriptorProto
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_DAY = dt.date(1970, 1, 1)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError("not a string")


def _int64(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("not an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        value = int(value.strip())
    if not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("not a 64-bit integer")
    return value


def _float64(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("not a number")
    return float(value)


def _numeric(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("not a number")
    try:
        number = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite():
        raise ValueError("not a finite number")
    return str(number)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("not a boolean")


def _timestamp(value: Any) -> int:
    """Microseconds since the epoch: ISO 8601 text (naive means UTC), or seconds as a number."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        moment = dt.datetime.fromisoformat(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1_000_000)
    else:
        raise ValueError("not a timestamp")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def _date(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("not a date")
    return (dt.date.fromisoformat(value.strip()) - EPOCH_DAY).days


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not base64 text") from None


# BigQuery column type -> the proto field type BigQuery takes for it, and the conversion to it.
TYPES: dict[str, tuple[int, Callable[[Any], Any]]] = {
    "STRING": (Field.TYPE_STRING, _string),
    "INT64": (Field.TYPE_INT64, _int64),
    "INTEGER": (Field.TYPE_INT64, _int64),
    "FLOAT64": (Field.TYPE_DOUBLE, _float64),
    "FLOAT": (Field.TYPE_DOUBLE, _float64),
    "NUMERIC": (Field.TYPE_STRING, _numeric),
    "BIGNUMERIC": (Field.TYPE_STRING, _numeric),
    "BOOL": (Field.TYPE_BOOL, _bool),
    "BOOLEAN": (Field.TYPE_BOOL, _bool),
    "TIMESTAMP": (Field.TYPE_INT64, _timestamp),
    "DATE": (Field.TYPE_INT32, _date),
    "JSON": (Field.TYPE_STRING, _json),
    "BYTES": (Field.TYPE_BYTES, _bytes),
}


class RowEncoder:
    """Serializes rows (column name -> value; None or absent is NULL) for one set of columns."""

    def __init__(self, columns: Sequence[tuple[str, str]]):
        unknown = [type_ for _name, type_ in columns if type_.upper() not in TYPES]
        if unknown:
            raise ValueError(f"column types the Storage Write path does not write: {', '.join(unknown)}")
        self.columns = [(name, TYPES[type_.upper()][1]) for name, type_ in columns]
        self.descriptor = descriptor_pb2.DescriptorProto(name="EventRow")
        for number, (name, type_) in enumerate(columns, start=1):
            self.descriptor.field.add(
                name=name, number=number, type=TYPES[type_.upper()][0], label=Field.LABEL_OPTIONAL
            )
        # A pool of its own: the same message name may mean other columns in another encoder.
        file = descriptor_pb2.FileDescriptorProto(name=f"omk_{uuid.uuid4().hex}.proto", syntax="proto2")
        file.message_type.add().CopyFrom(self.descriptor)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        self._message = message_factory.GetMessageClass(pool.FindMessageTypeByName("EventRow"))

    def encode(self, row: dict[str, Any]) -> bytes:
        """The row's bytes, or ValueError naming the first column whose value does not fit."""
        fields = {}
        for name, convert in self.columns:
            value = row.get(name)
            if value is None:
                continue
            try:
                fields[name] = convert(value)
            except (ValueError, TypeError, OverflowError) as exc:
                raise ValueError(f"column {name}: {_short(value)} does not fit ({exc})") from None
        return self._message(**fields).SerializeToString()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
