import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from core.conf import AppSettings


class ExampleSettings(AppSettings):
    prefix = "EXAMPLE_"
    TTL: float = 30.0
    NAME: str = "omk"
    LIMIT: int | None = None
    STEPS: list[str] = ["a"]


example = ExampleSettings()


def test_app_settings__defaults_when_unset():
    assert (example.TTL, example.NAME, example.LIMIT, example.STEPS) == (30.0, "omk", None, ["a"])


def test_app_settings__reads_the_prefixed_setting_at_each_access(settings):
    settings.EXAMPLE_TTL = 5.5
    assert example.TTL == 5.5
    with override_settings(EXAMPLE_NAME="other"):
        assert example.NAME == "other"
    assert example.NAME == "omk"


def test_app_settings__an_int_for_a_float_is_that_float(settings):
    settings.EXAMPLE_TTL = 7
    assert example.TTL == 7.0
    assert isinstance(example.TTL, float)


@pytest.mark.parametrize(
    ("name", "value"),
    [("TTL", "30"), ("TTL", True), ("NAME", 3), ("LIMIT", 2.5), ("STEPS", "a,b")],
)
def test_app_settings__a_value_of_another_type_names_the_setting(settings, name, value):
    setattr(settings, f"EXAMPLE_{name}", value)
    with pytest.raises(ImproperlyConfigured, match=f"EXAMPLE_{name}"):
        getattr(example, name)
    # What a system check reports: the value as configured.
    assert example.raw(name) == value


def test_app_settings__an_undeclared_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="MISSING"):
        _ = example.MISSING
    assert example.names() == ["TTL", "NAME", "LIMIT", "STEPS"]


def test_app_settings__read_once_until_a_setting_changes(settings, monkeypatch):
    reads = []
    configured = ExampleSettings.raw

    def counting_raw(cls, name):
        reads.append(name)
        return configured(name)

    monkeypatch.setattr(ExampleSettings, "raw", classmethod(counting_raw))
    settings.EXAMPLE_TTL = 2.0
    assert (example.TTL, example.TTL, example.TTL) == (2.0, 2.0, 2.0)
    assert reads == ["TTL"]
    settings.EXAMPLE_NAME = "other"  # any setting changed drops every kept value
    assert example.TTL == 2.0
    assert reads == ["TTL", "TTL"]
