"""The docstring examples of the UNITER integration run and pass."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["integrations.uniter.config", "integrations.uniter.data.img_db", "integrations.uniter.data.collate",
           "integrations.uniter.model", "integrations.uniter.evaluate"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
