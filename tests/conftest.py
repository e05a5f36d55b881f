"""How the suite is spread over pytest-xdist's workers (``make test``: ``-n auto --dist
loadgroup``).

* A test that uses a module-scoped fixture of its own file (a training run, a board build, a
  simulated board) joins the xdist group of that fixture, so that the fixture is made once, on
  one worker, instead of once on each worker that happens to get one of its tests.
* The slow tests (``@pytest.mark.slow``) are handed out first, the fast ones last: the fast ones
  then fill the end of the run instead of one long test running alone on one worker.

Without xdist neither changes anything but the order.
"""

import pytest

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


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _shared_fixture(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(name=group))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
