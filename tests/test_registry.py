"""Names resolve to plugins; third-party entry points register like the built-ins."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from debiasbench.errors import UserError
from debiasbench.registry import DATASETS, METHODS, MODELS, Registry


def test_builtins_are_registered_through_entry_points():
    assert "vanilla" in METHODS.names()
    assert {"colored_digits", "synthetic_artifacts"} <= set(DATASETS.names())
    assert {"small_cnn", "resnet18", "vgg16", "efficientnet_b0"} <= set(MODELS.names())


def test_unknown_name_lists_known_names_and_suggests_the_closest():
    with pytest.raises(UserError) as info:
        METHODS.get("vanila")
    message = str(info.value)
    assert "did you mean 'vanilla'" in message and "known:" in message and "vanilla" in message.split("known:")[1]
    assert "\n" not in message


def test_third_party_entry_point_is_found(monkeypatch):
    fake = EntryPoint(name="plugin_method", value="debiasbench.methods.vanilla:Vanilla",
                      group="debiasbench.methods")
    monkeypatch.setattr("debiasbench.registry.entry_points",
                        lambda group: [fake] if group == "debiasbench.methods" else [])
    registry = Registry("method", "debiasbench.methods")
    from debiasbench.methods.vanilla import Vanilla

    assert registry.get("plugin_method") is Vanilla


def test_broken_plugin_is_reported_by_name_and_does_not_hide_others(monkeypatch):
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Thing", group="g")
    good = EntryPoint(name="good", value="debiasbench.methods.vanilla:Vanilla", group="g")
    monkeypatch.setattr("debiasbench.registry.entry_points", lambda group: [broken, good])
    registry = Registry("method", "g")
    assert registry.names() == ["good"]
    assert "broken" in registry.broken()
    with pytest.raises(UserError, match="failed to load"):
        registry.get("broken")


def test_decorator_registration_uses_the_class_name_attribute():
    registry = Registry("method")

    @registry.register
    class Mine:
        name = "mine"

    assert registry.get("mine") is Mine
