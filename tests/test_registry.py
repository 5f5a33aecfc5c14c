"""Names resolve to plugins; third-party entry points register like the built-ins."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from debiasbench.core.errors import UserError
from debiasbench.core.registry import DATASETS, LAUNCHERS, METHODS, MODELS, DuplicateRegistrationWarning, Registry


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
    monkeypatch.setattr("debiasbench.core.registry.entry_points",
                        lambda group: [fake] if group == "debiasbench.methods" else [])
    registry: Registry[Any] = Registry("method", "debiasbench.methods")
    from debiasbench.methods.vanilla import Vanilla

    assert registry.get("plugin_method") is Vanilla


def test_broken_plugin_is_reported_by_name_and_does_not_hide_others(monkeypatch):
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Thing", group="g")
    good = EntryPoint(name="good", value="debiasbench.methods.vanilla:Vanilla", group="g")
    monkeypatch.setattr("debiasbench.core.registry.entry_points", lambda group: [broken, good])
    registry: Registry[Any] = Registry("method", "g")
    assert registry.names() == ["good"]
    assert "broken" in registry.broken()
    with pytest.raises(UserError, match="failed to load"):
        registry.get("broken")


def test_decorator_registration_uses_the_class_name_attribute():
    registry: Registry[Any] = Registry("method")

    @registry.register
    class Mine:
        name = "mine"

    assert registry.get("mine") is Mine


def first(num_classes: int, in_channels: int = 3):
    """A builder."""


def second(num_classes: int, in_channels: int = 3):
    """Another builder."""


def test_registering_a_name_again_with_another_object_warns_naming_both_and_the_later_wins():
    registry: Registry[Any] = Registry("model")
    registry.register(first, name="net")
    with pytest.warns(DuplicateRegistrationWarning) as caught:
        registry.register(second, name="net")
    message = str(caught[0].message)
    assert "model 'net'" in message
    assert f"{__name__}:first" in message and f"{__name__}:second" in message
    assert caught[0].filename == __file__  # points at the registering line, not the registry
    assert registry.get("net") is second


def test_the_decorator_form_warns_too():
    registry: Registry[Any] = Registry("method")
    registry.register(first, name="twice")
    with pytest.warns(DuplicateRegistrationWarning, match="'twice'") as caught:
        registry.register(name="twice")(second)
    assert caught[0].filename == __file__


def test_registering_the_same_object_again_is_silent():
    registry: Registry[Any] = Registry("model")
    registry.register(first, name="net")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.register(first, name="net")
    assert registry.get("net") is first


def test_override_replaces_silently_and_restores_the_previous_object():
    registry: Registry[Any] = Registry("model")
    registry.register(first, name="net")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with registry.override(second, name="net") as inside:
            assert inside is second and registry.get("net") is second
    assert registry.get("net") is first


def test_override_of_an_absent_name_removes_it_afterwards():
    registry: Registry[Any] = Registry("model")
    with registry.override(second, name="temporary"):
        assert "temporary" in registry.names()
    assert "temporary" not in registry
    with pytest.raises(UserError, match="unknown model 'temporary'"):
        registry.get("temporary")


def test_override_restores_after_an_exception_in_the_block():
    registry: Registry[Any] = Registry("model")
    registry.register(first, name="net")
    with pytest.raises(RuntimeError, match="boom"):
        with registry.override(second, name="net"), registry.override(second, name="new"):
            raise RuntimeError("boom")
    assert registry.get("net") is first and "new" not in registry


def test_override_uses_the_class_name_attribute_and_loads_entry_points_first(monkeypatch):
    from debiasbench.methods.vanilla import Vanilla

    plugin = EntryPoint(name="vanilla", value="debiasbench.methods.vanilla:Vanilla", group="g")
    monkeypatch.setattr("debiasbench.core.registry.entry_points", lambda group: [plugin])
    registry: Registry[Any] = Registry("method", "g")

    class Replacement:
        name = "vanilla"

    with registry.override(Replacement):
        assert registry.get("vanilla") is Replacement
    assert registry.get("vanilla") is Vanilla  # the entry point was not lost nor loaded over it


def test_entry_point_under_a_taken_name_warns_and_keeps_the_registered_object(monkeypatch):
    from debiasbench.methods.vanilla import Vanilla

    clash = EntryPoint(name="net", value="debiasbench.methods.vanilla:Vanilla", group="g")
    monkeypatch.setattr("debiasbench.core.registry.entry_points", lambda group: [clash])
    registry: Registry[Any] = Registry("model", "g")
    registry.register(first, name="net")
    with pytest.warns(DuplicateRegistrationWarning) as caught:
        names = registry.names()
    message = str(caught[0].message)
    assert "model 'net'" in message and "debiasbench.methods.vanilla:Vanilla" in message
    assert f"{__name__}:first" in message and "keeping" in message
    assert names == ["net"] and registry.get("net") is first and registry.get("net") is not Vanilla


def test_entry_point_naming_the_object_already_registered_is_silent(monkeypatch):
    same = EntryPoint(name="vanilla", value="debiasbench.methods.vanilla:Vanilla", group="g")
    monkeypatch.setattr("debiasbench.core.registry.entry_points", lambda group: [same])
    from debiasbench.methods.vanilla import Vanilla

    registry: Registry[Any] = Registry("method", "g")
    registry.register(Vanilla)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.names() == ["vanilla"]


def test_a_plugin_entry_point_never_displaces_a_builtin_whatever_the_discovery_order(monkeypatch):
    """Plugins listed first on sys.path still load after debiasbench's own entry points."""

    @dataclass
    class Distribution:
        name: str

    @dataclass
    class Discovered:  # what entry_points() yields: the entry point and its distribution
        name: str
        value: str
        dist: Distribution

        def load(self):
            return EntryPoint(self.name, self.value, "g").load()

    def point(name: str, value: str, dist: str) -> Discovered:
        return Discovered(name, value, Distribution(dist))

    plugin = point("vanilla", "debiasbench.methods.jtt:JTT", "someones-plugin")
    builtin = point("vanilla", "debiasbench.methods.vanilla:Vanilla", "debiasbench")
    monkeypatch.setattr("debiasbench.core.registry.entry_points", lambda group: [plugin, builtin])
    from debiasbench.methods.vanilla import Vanilla

    registry: Registry[Any] = Registry("method", "g")
    with pytest.warns(DuplicateRegistrationWarning, match="debiasbench.methods.jtt:JTT"):
        assert registry.get("vanilla") is Vanilla


def test_builtin_models_and_launchers_are_declared_as_entry_points():
    """What `debiasbench models` lists and a plugin extends: the installed metadata."""
    from importlib.metadata import entry_points

    assert {"small_cnn", "mlp", "resnet18", "vgg16", "efficientnet_b0"} <= {
        ep.name for ep in entry_points(group="debiasbench.models")}
    assert {"local", "ray"} <= {ep.name for ep in entry_points(group="debiasbench.launchers")}
    assert {"local", "ray"} <= set(LAUNCHERS.names())


def test_launchers_are_looked_up_in_their_registry():
    from debiasbench.sweep.launchers import ProcessPool, RayTasks, make_launcher, sequential

    assert make_launcher("local") is sequential
    pool = make_launcher("local", workers=3)
    assert isinstance(pool, ProcessPool) and pool.workers == 3
    ray_tasks = make_launcher("ray", cpus_per_run=0.5, gpus_per_run=0.25)
    assert isinstance(ray_tasks, RayTasks) and (ray_tasks.cpus_per_run, ray_tasks.gpus_per_run) == (0.5, 0.25)


def test_a_launcher_registered_by_a_plugin_gets_the_checked_options():
    from debiasbench.sweep.launchers import LauncherOptions, make_launcher

    seen: list[LauncherOptions] = []

    def batch_queue(options: LauncherOptions):
        seen.append(options)
        return "a launcher"

    with LAUNCHERS.override(batch_queue, name="batch_queue"):
        assert make_launcher("batch_queue", workers=4) == "a launcher"
    assert seen == [LauncherOptions(workers=4, cpus_per_run=1.0, gpus_per_run=0.0)]


def test_unknown_launcher_is_one_line_with_a_suggestion_and_the_known_names():
    from debiasbench.core.errors import ConfigError
    from debiasbench.sweep.launchers import make_launcher

    with pytest.raises(ConfigError) as info:
        make_launcher("locl")
    message = str(info.value)
    assert message.startswith("unknown launcher 'locl'; did you mean 'local'?")
    assert "known: local, ray" in message and "\n" not in message
