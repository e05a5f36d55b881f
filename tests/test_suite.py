"""How the suite spreads over xdist's workers (``tests/conftest.py``): the tests that share a
module-scoped fixture run on one worker, so a board build or a training run is made once. A
pytest or xdist upgrade that loses the groups costs minutes without failing a test; this one
fails."""

import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

# Six tests share a module-scoped fixture (their group), two do not. Each test appends its
# worker and whether the fixture was made for it to the log.
EXAMPLE = '''
import os
from pathlib import Path

import pytest

LOG = Path(__file__).parent / "log.txt"
made = []


@pytest.fixture(scope="module")
def shared():
    made.append(1)
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("i", range(6))
def test_grouped(shared, i):
    with LOG.open("a") as log:
        log.write(f"grouped {os.environ['PYTEST_XDIST_WORKER']} {len(made)}\\n")


@pytest.mark.parametrize("i", range(2))
def test_free(i):
    with LOG.open("a") as log:
        log.write(f"free {os.environ['PYTEST_XDIST_WORKER']} 0\\n")
'''


def test_tests_sharing_a_module_fixture_run_on_one_worker(tmp_path):
    folder = tmp_path / "tests"
    folder.mkdir()
    shutil.copy(TESTS / "conftest.py", folder / "conftest.py")
    (folder / "test_example.py").write_text(EXAMPLE)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist",
                             "loadgroup", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                             str(folder)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split() for line in (folder / "log.txt").read_text().splitlines()]
    grouped = [(worker, made) for kind, worker, made in rows if kind == "grouped"]
    assert len(grouped) == 6 and len(rows) == 8
    # one worker ran the six, and made the fixture once
    assert len({worker for worker, _ in grouped}) == 1, grouped
    assert {made for _, made in grouped} == {"1"}, grouped
