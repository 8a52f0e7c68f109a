"""One run per output directory: ``<output_dir>/run.lock`` (flock, PID and host), released on exit, taken over
from a process that died; a second run, or its dry run, exits 2 naming the first one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from integrations.retrieval.checkpoint import RunLock
from integrations.uniter import finetune

from . import helpers as H


def test_a_second_run_in_a_locked_directory_exits_2_naming_the_holder(data, tmp_path, capsys):
    lock = RunLock(str(tmp_path))
    lock.acquire()
    try:
        holder = open(lock.path).read()
        assert holder.startswith(f"pid {os.getpid()} on host {socket.gethostname()}")
        for extra in ({}, {"dry_run": True}):
            rc, result = finetune.run(H.train_args(data, tmp_path, steps=1, no_final_eval=True, **extra))
            err = capsys.readouterr().err
            assert rc == 2 and result is None
            assert f"error: --output-dir {tmp_path} is in use by another run (pid {os.getpid()} on host" in err
        assert not os.path.exists(tmp_path / "ckpt")  # refused before anything was written
    finally:
        lock.release()
    assert not os.path.exists(lock.path)
    rc, result = finetune.run(H.train_args(data, tmp_path, steps=1, no_final_eval=True))
    assert rc == 0 and result.finished and not os.path.exists(lock.path)  # released at the end


def test_the_lock_of_a_process_that_died_is_taken_over(data, tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run.lock").write_text(f"pid {dead.stdout.strip()} on host {socket.gethostname()}, since then\n")
    with caplog.at_level("WARNING", logger="integrations.retrieval.checkpoint"):
        rc, result = finetune.run(H.train_args(data, tmp_path, steps=1, no_final_eval=True))
    assert rc == 0 and result.finished
    assert f"left by a run that is no longer running (pid {dead.stdout.strip()} on host" in caplog.text
    assert not os.path.exists(tmp_path / "run.lock")


def test_two_runs_started_together_in_one_directory(data, tmp_path):
    """The first holds the directory; the second exits 2 naming the first's PID; the first then finishes."""
    args = H.train_args(data, tmp_path, steps=100000, train_batch_size=1, no_final_eval=True)
    command = [sys.executable, "-m", "integrations.uniter.finetune", *args]
    first = subprocess.Popen(command, cwd=H.REPO_ROOT, env=H.subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run.lock").exists() or not (tmp_path / "run.lock").read_text():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.1)
        second = subprocess.run(command, cwd=H.REPO_ROOT, env=H.subprocess_env(), capture_output=True, text=True,
                                timeout=120)
        assert first.poll() is None, first.communicate()[1][-2000:]  # still training
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
    lines = H.error_lines(second.stderr)
    assert second.returncode == 2 and "Traceback" not in second.stderr and len(lines) == 1
    assert lines[0].startswith(f"error: --output-dir {tmp_path} is in use by another run (pid {first.pid} on host "
                               f"{socket.gethostname()}, since ")
    assert first.returncode == 0, first_err[-2000:]  # stopped on request with a checkpoint: its results are kept
    assert H.checkpoints(tmp_path) and not (tmp_path / "run.lock").exists()
