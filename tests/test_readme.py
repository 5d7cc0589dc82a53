"""The README against the code: what it lists is what exists, and every measured figure names its machine."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_endpoint_table_lists_every_api_route():
    pytest.importorskip("fastapi")
    from digitlab.serve.routes import api

    served = {(method, route.path) for route in api.routes for method in route.methods}
    table = [line for line in README.splitlines() if re.match(r"\| `(GET|POST) /api/", line)]
    listed = {(m, p) for line in table for m, p in re.findall(r"`(GET|POST) (/api/[\w/]+)`", line.split(" | ")[0])}
    assert listed == served, (listed - served, served - listed)
    assert {("POST", "/api/read"), ("POST", "/api/read/batch")} <= listed


def test_every_measured_figure_names_its_machine():
    """A paragraph that quotes a bench/ script's figures names the one machine they were measured on."""
    machines = re.compile(r"2-core (AMD EPYC|Intel Xeon) VM")
    for paragraph in re.split(r"\n\s*\n", README):
        if re.search(r"`bench/\w+\.py", paragraph):
            assert machines.search(paragraph), paragraph[:200]
    assert machines.findall(README)  # every README figure was measured on one of these two VMs
