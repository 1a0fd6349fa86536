"""Packaging metadata that ``pip install`` reads: no deprecation warnings for users."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.timeout(30)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_license_is_an_spdx_string_that_the_required_setuptools_reads():
    """A ``{text = ...}`` table made setuptools warn three times on every ``pip install``.

    PEP 639's string form needs setuptools 77 or newer in the build environment.
    """
    config = tomllib.loads(PYPROJECT.read_text())
    assert config["project"]["license"] == "Apache-2.0"
    [setuptools] = [
        Requirement(spec)
        for spec in config["build-system"]["requires"]
        if Requirement(spec).name == "setuptools"
    ]
    assert not setuptools.specifier.contains("76.9"), setuptools
    assert setuptools.specifier.contains("77.0.0"), setuptools
