"""Training faults, for real: a rank killed with SIGKILL, a silent (stopped) rank, two runs on one --out, a full disk.

Runs are ResNet18 (small stem) at 16 px on a 2-class ImageFolder of 16 random images (an epoch is a few steps),
CPU, gloo for the 2-process runs, one thread per process. The full disk is a real 300 MiB tmpfs (``mount -t
tmpfs``, needs root); where it cannot be mounted that test is skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli

FLAGS = ["--image-size", "16", "--small-stem", "--batch-size", "4", "--no-augment", "--schedule", "constant",
         "--warmup-epochs", "0", "--seed", "0", "--device", "cpu", "--no-progress"]
STOP_BOUND_S = 45.0  # kill -> launcher exit: agent poll 0.1 s + SIGTERM of the survivor, on 2 busy shared cores


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("faults") / "images"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGERESNET_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "COLUMNS": "250", "OMP_NUM_THREADS": "1", **extra}


def _start(args: list[str], cwd: Path, stderr: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeresnet", "train", *args], cwd=cwd, env=_env(**env),
                            stdout=subprocess.DEVNULL, stderr=open(stderr, "w"))  # noqa: SIM115 (closed with the child)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(item[5:]) for item in env if item.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                                                   != "Z")


def _last_epoch(out: Path) -> int:
    from edgeresnet.models import load_checkpoint

    return int(load_checkpoint(out / "last.pt")["epoch"])


# -- a rank dies (kill -9, as on a preempted node) ----------------------------------------------------------


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc (Linux)")
def test_killed_rank_ends_the_run_in_one_line_and_resume_completes(folder, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    launcher = _start(["--nproc", "2", "--data", str(folder), "--epochs", "500", "--out", str(out), *FLAGS],
                      tmp_path, log)
    try:
        _wait_for(lambda: (out / "last.pt.json").exists(), 300, "the first checkpoint", launcher)
        workers = {_rank_of(pid): pid for pid in _children(launcher.pid)}
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        code = launcher.wait(timeout=STOP_BOUND_S + 60)
        stopped_after = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    err = log.read_text()
    print(f"kill -9 of rank 1 -> launcher exit: {stopped_after:.2f} s; {err.strip()}")
    assert code != 0
    assert stopped_after < STOP_BOUND_S, f"the run took {stopped_after:.1f} s to stop"
    assert not _alive(workers[0]), "rank 0 outlived the run"
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "rank 1 (SIGKILL) died" in lines[0] and "--resume" in lines[0], lines[0]
    epoch = _last_epoch(out)
    assert f"(epoch {epoch})" in lines[0]
    assert not (out / ".lock").exists()

    done = subprocess.run([sys.executable, "-m", "edgeresnet", "train", "--nproc", "2", "--out", str(out), "--resume",
                           "--epochs", str(epoch + 1), "--no-progress"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _last_epoch(out) == epoch + 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# -- a rank stops answering (SIGSTOP: a frozen node): the others give up after the group timeout ------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX SIGSTOP")
@pytest.mark.parametrize("sig", ["SIGSTOP", "SIGKILL"])
def test_a_silent_or_dead_rank_is_given_up_on(folder, tmp_path, sig):
    """torchrun's environment on two processes without its agent (a node's view of a multi-node job: nobody kills
    the survivors): rank 1 frozen (SIGSTOP) or gone (SIGKILL); rank 0 must end in one line, at the latest after
    the group timeout, not hang for PyTorch's default 30 min."""
    out = tmp_path / "run"
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        procs.append(_start(["--data", str(folder), "--epochs", "500", "--out", str(out), *FLAGS], tmp_path,
                            tmp_path / f"rank{rank}.txt", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port, EDGERESNET_DIST_TIMEOUT_S="8"))
    try:
        _wait_for(lambda: (out / "last.pt.json").exists(), 300, "the first checkpoint", procs[0])
        os.kill(procs[1].pid, getattr(signal, sig))
        frozen = time.monotonic()
        code = procs[0].wait(timeout=120)
        waited = time.monotonic() - frozen
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = (tmp_path / "rank0.txt").read_text()
    print(f"{sig} of rank 1 -> rank 0 exit: {waited:.2f} s (group timeout 8 s); {err.strip()}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3, err
    assert waited < 8 + 30, f"rank 0 waited {waited:.1f} s for a group timeout of 8 s"
    assert len(lines) == 1 and lines[0].startswith("error: rank 0: the process group broke"), err
    assert not (out / ".lock").exists()
    assert _last_epoch(out) >= 1


def test_group_timeout_setting():
    from edgeresnet.errors import UserError
    from edgeresnet.train.distributed import DEFAULT_TIMEOUT_S, timeout_s

    assert timeout_s({}) == DEFAULT_TIMEOUT_S == 300.0 and timeout_s({"EDGERESNET_DIST_TIMEOUT_S": "7.5"}) == 7.5
    for bad in ("0", "-1", "x", "nan", "inf"):
        with pytest.raises(UserError, match="EDGERESNET_DIST_TIMEOUT_S"):
            timeout_s({"EDGERESNET_DIST_TIMEOUT_S": bad})


def test_failure_report_names_the_rank_that_died(tmp_path):
    from edgeresnet.train.distributed import LOST_PEER_EXIT, failure_report

    message, code = failure_report({1: -9, 0: -15}, tmp_path)
    assert message.startswith("torchrun: worker rank 1 (SIGKILL) died; rank(s) 0 were stopped") and code == 1
    assert "no checkpoint was written yet" in message
    message, code = failure_report({0: 2, 1: -15})  # a rank's own error: it printed its message
    assert message == "torchrun: worker rank(s) 0 exited with code 2; see the message(s) above" and code == 2
    message, _ = failure_report({0: LOST_PEER_EXIT, 1: -15})  # SIGTERM from outside: the only signal there is
    assert "rank 1 (SIGTERM) died; rank(s) 0 were stopped" in message


# -- two runs on one --out ------------------------------------------------------------------------------------


def test_second_run_on_the_same_out_is_refused_and_a_stale_lock_is_taken_over(folder, tmp_path, capsys,
                                                                               wide_terminal):
    out = tmp_path / "run"
    first = _start(["--data", str(folder), "--epochs", "500", "--out", str(out), *FLAGS], tmp_path,
                   tmp_path / "first.txt")
    try:
        _wait_for(lambda: (out / "last.pt.json").exists(), 300, "the first run's checkpoint", first)
        assert (out / ".lock").read_text().split()[0] == str(first.pid)
        for extra in ([], ["--nproc", "2"]):  # one process, and the --nproc launcher
            code, _, err = run_cli(capsys, "train", "--data", str(folder), "--epochs", "1", "--out", out,
                                   "--overwrite", *extra, *FLAGS)
            assert_one_line_error(code, err, f"--out {out}: another run (pid {first.pid}) is writing there",
                                  str(out / ".lock"))
        assert first.poll() is None  # the first run is undisturbed
        os.kill(first.pid, signal.SIGKILL)  # it crashes: its lock file stays behind, naming a dead pid
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    (out / ".last.pt.abc123.tmp").write_bytes(b"partial")  # what a kill in the middle of a write leaves
    code, _, err = run_cli(capsys, "train", "--data", str(folder), "--out", out, "--resume",
                           "--epochs", str(_last_epoch(out) + 1), "--no-progress")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"took over the stale lock of pid {first.pid} (gone)" in warnings[0], err
    assert ".last.pt.abc123.tmp" in warnings[0]
    assert not (out / ".lock").exists() and not list(out.glob("*.tmp"))


def test_refused_or_failed_run_leaves_no_directory(tmp_path, capsys, wide_terminal):
    code, _, err = run_cli(capsys, "train", "--resume", "--out", tmp_path / "new", "--no-progress")
    assert_one_line_error(code, err, "--resume: no last.pt")
    assert not (tmp_path / "new").exists()


# -- the disk fills up ------------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(mount)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def _fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` up, then give back ``leave`` bytes."""
    filler = directory / "filler"
    block = b"\0" * (1 << 20)
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def test_full_disk_is_one_line_and_the_last_checkpoint_survives(folder, small_disk, capsys, wide_terminal,
                                                                 torch_single_thread):
    from edgeresnet.artifacts import read_manifest, sha256_file

    out = small_disk / "run"
    code, _, err = run_cli(capsys, "train", "--data", str(folder), "--epochs", "1", "--out", out, *FLAGS)
    assert code == 0, err
    before = sha256_file(out / "last.pt")
    filler = _fill(small_disk, leave=2 << 20)  # room for the lock, recipe and logs, not for a checkpoint

    code, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--epochs", "3", "--no-progress")
    assert_one_line_error(code, err, f"--out {out}: No space left on device (errno ENOSPC)",
                          f"the last good checkpoint {out / 'last.pt'} (epoch 1) is intact", "--resume")
    assert sha256_file(out / "last.pt") == before == read_manifest(out / "last.pt")["sha256"]
    assert _last_epoch(out) == 1
    assert not list(out.glob("*.tmp")) and not (out / ".lock").exists()

    filler.unlink()
    filler = _fill(small_disk, leave=0)  # not even the lock file's few bytes fit
    code, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--epochs", "3", "--no-progress")
    assert_one_line_error(code, err, f"--out {out}: cannot write the lock file", "No space left on device")
    assert not (out / ".lock").exists() and _last_epoch(out) == 1

    filler.unlink()
    code, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--epochs", "3", "--no-progress")
    assert code == 0, err
    assert _last_epoch(out) == 3


def test_an_unrelated_timeout_is_not_a_dead_peer():
    """A DataLoader's 'timed out after N seconds' is our own error, not the process group losing a rank."""
    from edgeresnet.train.distributed import is_peer_loss

    assert not is_peer_loss(RuntimeError("DataLoader timed out after 5 seconds"))
    assert is_peer_loss(RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 8000ms for recv "
                                      "operation to complete"))
