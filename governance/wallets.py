"""EVM wallet addresses: format and EIP-55 checksum.

Keccak-256 (not hashlib's SHA3-256: the padding differs) comes from pycryptodome, imported on
first use: its C bindings go through cffi, whose declarations parser costs about 80 ms at
import, and the admin and the job tasks import this module at start-up (docs/benchmarks.md).
"""

import re

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class InvalidWallet(ValueError):
    pass


def to_checksum_address(address: str) -> str:
    """EIP-55: each hex letter is upper-cased when the matching nibble of keccak(lowercase) >= 8."""
    from Crypto.Hash import keccak

    lower = address[2:].lower()
    digest = keccak.new(digest_bits=256, data=lower.encode("ascii")).hexdigest()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))


def normalize_wallet(address: str) -> str:
    """The checksummed form of `address`; InvalidWallet (with a message) when it is not valid."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise InvalidWallet("Enter an EVM address: 0x followed by 40 hexadecimal digits.")
    body = address[2:]
    checksummed = to_checksum_address(address)
    # All-lowercase or all-uppercase carries no checksum; mixed case must match EIP-55 exactly.
    if body != body.lower() and body != body.upper() and address != checksummed:
        raise InvalidWallet("The address's upper/lower case does not match its EIP-55 checksum: check for a typo.")
    return checksummed
