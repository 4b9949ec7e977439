"""The dependency files agree: pyproject.toml's dependencies, the .in files `make lock` compiles
and the hashed locks pip installs with --require-hashes --no-deps (the image and `make install`).

A lock edited by hand, or a pin changed in one place and not relocked, fails here rather than in
an image that installs something other than what the tests ran with."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.support import ROOT

RUNTIME_IN = ROOT / "requirements.in"
RUNTIME_LOCK = ROOT / "requirements.txt"
DEV_IN = ROOT / "requirements-dev.in"
DEV_LOCK = ROOT / "requirements-dev.txt"


def logical_lines(path: Path) -> list[str]:
    """A requirements file's lines without comments, continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def direct_requirements(path: Path) -> list[Requirement]:
    """The requirements of an .in file, following its `-r` includes."""
    requirements: list[Requirement] = []
    for line in logical_lines(path):
        if line.startswith(("-r ", "--requirement ")):
            requirements += direct_requirements(path.parent / line.split(maxsplit=1)[1])
        else:
            assert not line.startswith("-"), f"{path.name}: unexpected option {line!r}"
            requirements.append(Requirement(line))
    return requirements


@dataclass
class Locked:
    name: str
    version: str
    hashes: list[str] = field(default_factory=list)
    line: str = ""


def lock_entries(path: Path) -> dict[str, Locked]:
    entries: dict[str, Locked] = {}
    for line in logical_lines(path):
        requirement, *options = line.split(" --hash=")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", requirement.strip())
        assert match, f"{path.name}: not an exact pin of a package by name: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in entries, f"{path.name}: {name} locked twice"
        entries[name] = Locked(name, match.group(2), [option.strip() for option in options], line)
    return entries


def exact_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not pinned with =="
    return specifier.version


def normalized(requirements: list[Requirement]) -> set[str]:
    return {
        f"{canonicalize_name(r.name)}[{','.join(sorted(r.extras))}]{r.specifier}"
        + (f"; {r.marker}" if r.marker else "")
        for r in requirements
    }


def test_pyproject__dependencies_are_requirements_in():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = [Requirement(line) for line in pyproject["project"]["dependencies"]]
    assert normalized(declared) == normalized(direct_requirements(RUNTIME_IN))


def test_requirements_in__every_direct_dependency_pinned_exactly():
    for path in (RUNTIME_IN, DEV_IN):
        for requirement in direct_requirements(path):
            exact_version(requirement)


def test_runtime_lock__pins_each_direct_dependency_at_its_version():
    locked = lock_entries(RUNTIME_LOCK)
    for requirement in direct_requirements(RUNTIME_IN):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is in requirements.in but not in the lock: run `make lock`"
        assert locked[name].version == exact_version(requirement), f"{name}: run `make lock`"


def test_dev_lock__pins_each_dev_and_runtime_dependency_at_its_version():
    locked = lock_entries(DEV_LOCK)
    for requirement in direct_requirements(DEV_IN):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is in requirements-dev.in but not in its lock: run `make lock`"
        assert locked[name].version == exact_version(requirement), f"{name}: run `make lock`"


def test_locks__every_entry_has_sha256_hashes():
    """--require-hashes refuses a file with one unhashed entry; this names the entry."""
    for path in (RUNTIME_LOCK, DEV_LOCK):
        entries = lock_entries(path)
        assert entries
        for entry in entries.values():
            assert entry.hashes, f"{path.name}: {entry.name} has no --hash"
            for value in entry.hashes:
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", value), f"{path.name}: {entry.name}: {value}"


def test_locks__generated_by_make_lock():
    for path in (RUNTIME_LOCK, DEV_LOCK):
        assert "#    make lock" in path.read_text().splitlines()[:3], f"{path.name} was not written by `make lock`"


def test_dev_lock__holds_the_runtime_lock_as_it_is():
    """The tests run on the exact packages the image installs: same versions, same files."""
    runtime, dev = lock_entries(RUNTIME_LOCK), lock_entries(DEV_LOCK)
    for name, entry in runtime.items():
        assert name in dev, f"{name} is in requirements.txt but not in requirements-dev.txt"
        assert (dev[name].version, sorted(dev[name].hashes)) == (entry.version, sorted(entry.hashes)), name


@pytest.mark.parametrize(("source", "lock"), [(RUNTIME_IN, RUNTIME_LOCK), (DEV_IN, DEV_LOCK)], ids=["runtime", "dev"])
def test_lock__complete_for_python_311_on_linux(source, lock):
    """With --no-deps nothing outside the lock is installed: every package that a locked one
    requires here (its installed metadata, markers for this interpreter, extras followed) is
    locked, at a version that satisfies the requirement."""
    locked = lock_entries(lock)
    queue = deque((canonicalize_name(r.name), frozenset(r.extras)) for r in direct_requirements(source))
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, extras = queue.popleft()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        installed = importlib.metadata.version(name)
        assert installed == locked[name].version, f"{name} {installed} is installed, not the lock's: make install-dev"
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                continue
            dependency = canonicalize_name(requirement.name)
            assert dependency in locked, f"{name} requires {requirement}, which {lock.name} does not lock"
            assert requirement.specifier.contains(locked[dependency].version, prereleases=True), (
                f"{name} requires {requirement}; the lock has {locked[dependency].version}"
            )
            queue.append((dependency, frozenset(requirement.extras)))
