"""Schemas shared by every router: the error body and the statuses each operation documents, the
base of request bodies, and the input types (amounts, ids, date-times, integer query parameters)."""

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, Strict, WithJsonSchema


class BodySchema(Schema):
    """A JSON request body, taken with the types JSON gave it.

    pydantic's default (lax) mode would turn `true` into 1 and `"30"` into 30: `{"sale": true}`
    would buy from sale 1. Query and path parameters arrive as text and keep the lax mode.
    """

    model_config = ConfigDict(strict=True)


class ErrorOut(Schema):
    error: str
    detail: str
    fields: dict[str, list[str]]


# Statuses any operation may answer with the error body (clients and schemathesis read them).
# 429: any operation may be throttled (a user's or an address's rate, a full queue).
ERRORS: dict[int, type[Schema]] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 422, 429)}


# JSON-schema pattern for every free-text input: PostgreSQL text cannot hold NUL, so the schema
# says so (clients and schemathesis see it) and pydantic answers 422 naming the field.
NO_NUL = r"^[^\x00]*$"


# --- exact decimal amounts -----------------------------------------------------------------------
# Money and token amounts travel as JSON strings ("12.5"), never as JSON numbers: a number is a
# binary float in most clients, and 0.1 is not 0.1. The published pattern is exactly what is
# accepted, so clients (and schemathesis) know the rule: at most 20 characters, 8 decimals.

AMOUNT_MAX_LENGTH = 20
_FRACTION_NOT_ZERO = "|".join(f"0{{{k}}}[1-9][0-9]{{0,{7 - k}}}" for k in range(8))
POSITIVE_AMOUNT_PATTERN = rf"^(?:[0-9]*[1-9][0-9]*(?:\.[0-9]{{1,8}})?|0*\.(?:{_FRACTION_NOT_ZERO}))$"
AMOUNT_PATTERN = r"^[0-9]+(?:\.[0-9]{1,8})?$"


def _amount_parser(pattern: str, what: str):
    compiled = re.compile(pattern)

    def parse(value: Any) -> Decimal:
        if not isinstance(value, str):
            raise ValueError(f'Send the amount as a decimal string, e.g. "12.5" (JSON numbers are floats): {what}.')
        if len(value) > AMOUNT_MAX_LENGTH or not compiled.match(value):
            raise ValueError(f"Must be {what}, with at most 8 decimals and {AMOUNT_MAX_LENGTH} characters.")
        return Decimal(value.strip())

    return parse


def _amount_type(pattern: str, what: str, example: str):
    schema = {"type": "string", "pattern": pattern, "maxLength": AMOUNT_MAX_LENGTH, "examples": [example]}
    return Annotated[Decimal, PlainValidator(_amount_parser(pattern, what)), WithJsonSchema(schema, mode="validation")]


PositiveAmount = _amount_type(POSITIVE_AMOUNT_PATTERN, "a decimal number greater than zero", "12.5")
NonNegativeAmount = _amount_type(AMOUNT_PATTERN, "a decimal number, zero or more", "0")

# Database ids (bigint): bounded so that a huge number is a 422/404, not an overflow.
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _whole_number_text(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,19}", value):
        raise ValueError("Must be a whole number written in digits, e.g. 20.")
    return value


# An integer query parameter: digits only (the lax default also read "0.0", " 5 " and "1_000").
QueryInt = Annotated[int, BeforeValidator(_whole_number_text)]


# --- date-times ----------------------------------------------------------------------------------
# The schema publishes `format: date-time` (RFC 3339). pydantic alone would also take a number or
# a numeric string as seconds since 1970 ("3" -> 1970-01-01T00:00:03Z) and a date-time without a
# UTC offset (read in the server's time zone): a client's mistake would become a sale or a vote
# window decades off. Only an RFC 3339 string gets through to pydantic's parser.

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _require_rfc3339(value: Any) -> Any:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError("Must be an RFC 3339 date-time with a UTC offset, e.g. 2026-12-01T12:00:00Z.")


# Strict(False): in a BodySchema, strict mode would refuse every string for a datetime; the format
# check above is the strictness here, pydantic's lax parser then reads the checked string.
DateTimeIn = Annotated[datetime, Strict(False), BeforeValidator(_require_rfc3339)]
