"""Schemas shared by every router: the error body and the error statuses each operation documents."""

import re
from decimal import Decimal
from typing import Annotated, Any

from ninja import Schema
from pydantic import Field, PlainValidator, WithJsonSchema


class ErrorOut(Schema):
    error: str
    detail: str
    fields: dict[str, list[str]]


# Statuses any operation may answer with the error body (clients and schemathesis read them).
ERRORS: dict[int, type[Schema]] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 422)}


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
