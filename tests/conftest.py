"""Fixtures shared by the suite; builders live in ``builders.py``."""

import pytest


@pytest.fixture(params=["lif", "alif"])
def spiking_kind(request):
    return request.param
