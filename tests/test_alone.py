"""benchmarks/alone.py: a run shared with a process that ended before the run did is not alone."""

import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_a_busy_process_that_ended_during_the_run_is_counted(tmp_path):
    from alone import AloneProbe

    probe = AloneProbe()
    done = tmp_path / "done"
    busy = tmp_path / "busy.py"
    busy.write_text(
        f"import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nopen({str(done)!r}, 'w')"
    )
    # A process that is neither this one's child nor left a zombie: an inner shell runs it and reaps
    # it (`; true` keeps the shell from exec-ing it), and the outer shell exits at once without
    # waiting for the inner one. So nothing in /proc holds its CPU time at the end, as with a test
    # suite run from another terminal.
    inner = tmp_path / "inner.sh"
    inner.write_text(f'"{sys.executable}" "{busy}"; true\n')
    subprocess.run(["sh", "-c", f'sh "{inner}" &'], check=True)
    deadline = time.monotonic() + 60
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # it has ended
    result = probe.result()
    assert done.exists()
    assert result["other_cores"] is not None and result["other_cores"] > 0.15 and not result["alone"]
