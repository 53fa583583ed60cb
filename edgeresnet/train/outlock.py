"""One run per output directory: an exclusive lock file ``OUT/.lock`` naming its holder's pid.

A second ``edgeresnet train`` on the same ``--out`` is refused in one line instead of interleaving its
checkpoints with the first. The lock is ``flock(2)`` (Linux flock(2) man page: the lock belongs to the open
file description and is released when the holder's last descriptor closes, also when the process is
killed), so a lock file left by a killed run is never "held": it is taken over with a warning, and the
partial temporaries that run left are removed. The ``--nproc`` launcher takes the lock itself and tells
its workers (its child processes) through ``HELD_ENV`` that rank 0 writes under it.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from edgeresnet.errors import UserError

LOCK_FILE = ".lock"
HELD_ENV = "EDGERESNET_OUT_LOCK_PID"  # the pid of the --nproc launcher that holds the lock for its workers


def _read_holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return text.split()[0] if text else ""


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # POSIX kill(2): signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutLock:
    """``with OutLock(out):`` -- hold ``out/.lock`` for the block (creating ``out``; removed again if the block
    fails and leaves it empty)."""

    def __init__(self, out: Path, option: str = "--out") -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.option = option
        self.fd: int | None = None
        self.created = False
        self.inherited = False

    def __enter__(self) -> OutLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> OutLock:
        import fcntl

        from edgeresnet.train.state import remove_stale_temporaries

        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"{self.option} {self.out}: is a file; pass a directory for the run's outputs")
        if os.environ.get(HELD_ENV) and os.environ[HELD_ENV] == str(os.getppid()) \
                and _read_holder(self.path) == os.environ[HELD_ENV]:
            self.inherited = True  # a worker of the --nproc launcher that holds the lock
            return self
        self.created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.option} {self.out}: cannot create the directory ({exc.strerror}); choose "
                            "another path") from exc
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                self._undo_created()
                raise UserError(f"{self.option} {self.out}: cannot create the lock file {self.path} ({exc.strerror}); "
                                "choose a writable directory with free space") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _read_holder(self.path) or "unknown"
                self._undo_created()
                raise UserError(f"{self.option} {self.out}: another run (pid {holder}) is writing there (lock file "
                                f"{self.path}); wait for it to finish or choose another {self.option}") from None
            # the previous holder may have unlinked the file between our open and our flock: then we hold
            # a lock on an orphaned inode that a third run would not see; open the path again
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        previous = _read_holder(self.path)
        removed = remove_stale_temporaries(self.out)  # first: they may be what filled the disk
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError as exc:  # a full disk refuses even these few bytes
            self.release()
            raise UserError(f"{self.option} {self.out}: cannot write the lock file {self.path} ({exc.strerror}); "
                            "free space or choose another directory") from None
        if previous and previous != str(os.getpid()):
            state = "still running but not holding it" if _pid_alive(previous) else "gone"
            extra = f"; removed its partial files {', '.join(removed)}" if removed else ""
            print(f"warning: {self.option} {self.out}: took over the stale lock of pid {previous} ({state}){extra}",
                  file=sys.stderr)
        return self

    def release(self) -> None:
        if self.inherited or self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlinked while still held, so no other run can lock it meanwhile
        finally:
            os.close(self.fd)  # releases the flock
            self.fd = None
        self._undo_created()

    def _undo_created(self) -> None:
        """A refused or failed run leaves no empty directory it made itself."""
        if self.created:
            try:
                self.out.rmdir()
            except OSError:
                pass
