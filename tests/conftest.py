"""Fixtures shared by the suite; builders live in ``builders.py``."""

import pytest

from eprop_l2l.runtime import configure_cpu

configure_cpu(threads=1)


@pytest.fixture(params=["lif", "alif"])
def spiking_kind(request):
    return request.param
