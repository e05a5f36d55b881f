"""How the suite is spread over pytest-xdist's workers (``make test``: ``-n auto --dist
loadgroup``).

* A test that uses a module-scoped fixture of its own file (a training run, a board build, a
  simulated board) joins the xdist group of that fixture, so that the fixture is made once, on
  one worker, instead of once on each worker that happens to get one of its tests.
* Every worker and the commands it runs use one thread for OpenMP (``OMP_NUM_THREADS=1``).
* The slow tests (``@pytest.mark.slow``) are handed out first, the fast ones last: the fast ones
  then fill the end of the run instead of one long test running alone on one worker.

Without xdist the groups and the order change nothing.

pytest 9.2 keeps node IDs in a structured form that xdist 3.8's ``loadgroup`` does not write,
so the groups are silently lost (pytest-xdist issue 1386): ``requirements.txt`` pins pytest
9.1.1, and ``test_suite.py`` fails when the groups stop reaching the workers.
"""

import os

import pytest

# Every worker has a core of its own: a library that spreads over all the cores (torch's and
# onnxruntime's OpenMP pools) only contends with the other worker. Brevitas's training in
# test_qonnx takes 7 s on one thread and 24 s on two beside another job; 126 s in the suite.
# (Before torch is imported; the command lines the tests run inherit it.)
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_SCOPES = ("module", "package", "session")


def _shared_fixture(item):
    """The first (by name) fixture of ``item``'s own test files that lives longer than one
    test, or None."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in sorted(info.name2fixturedefs):
        for fixturedef in info.name2fixturedefs[name]:
            # baseid "" is a plugin's (tmp_path_factory, ...): cheap, and shared by every test
            if fixturedef.scope in SHARED_SCOPES and fixturedef.baseid:
                return f"{fixturedef.baseid}::{name}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # (first: xdist's worker turns the ``xdist_group`` marks into the node IDs' ``@group``
    # suffix in its own hook; marks added after it are not seen)
    for item in items:
        group = _shared_fixture(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(name=group))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
