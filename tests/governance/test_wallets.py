import pytest

from governance.wallets import InvalidWallet, normalize_wallet, to_checksum_address

# The test vectors of EIP-55 itself.
EIP55 = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", EIP55)
def test_checksum__matches_eip55_vectors(address):
    assert to_checksum_address(address.lower()) == address
    assert normalize_wallet(address) == address


@pytest.mark.parametrize("address", [EIP55[0].lower(), "0x" + EIP55[0][2:].upper()])
def test_normalize__single_case_has_no_checksum_and_is_accepted(address):
    assert normalize_wallet(address) == EIP55[0]


def test_normalize__wrong_mixed_case_is_refused():
    wrong = EIP55[0][:-1] + EIP55[0][-1].swapcase()
    with pytest.raises(InvalidWallet, match="EIP-55"):
        normalize_wallet(wrong)


@pytest.mark.parametrize(
    "address", ["", "0x123", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x" + "g" * 40, "0x" + "a" * 41]
)
def test_normalize__bad_format_is_refused(address):
    with pytest.raises(InvalidWallet, match="40 hexadecimal"):
        normalize_wallet(address)
