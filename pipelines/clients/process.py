"""The one way the portal runs another program: hooks, Terraform, pg_dump and pg_restore,
and pipelines of programs (``pg_dump | pg_restore``, ``psql COPY TO | psql COPY FROM``).

- An argument list (never a shell string) and the environment the caller built: the
  child inherits nothing else from the worker. A pipeline's programs each get their
  own environment (two databases, two passwords) and are connected by pipes of
  their own, so the bytes they pass never cross this process.
- Output lines reach ``on_line`` in the caller's thread: reader threads only put
  lines on a queue, which the caller's thread drains (``on_line`` writes to the
  database, and a thread that never closes its connection must not do that). The
  caller blocks on that queue with a timeout; nothing sleeps to poll. ``on_idle`` is
  called, in that thread too, a tenth of a second after lines came, at every cancel
  check and after the last line: a caller that keeps lines writes each burst of output
  at once, still live.
- Stopping (a cancel, the timeout, an exception in the caller): SIGINT to the
  child's process group, ``grace_s`` seconds to exit, then SIGKILL of the group.
- The program runs under a small guard that leads its own process group (so a stop
  reaches everything the program started) and gets a signal when the thread that
  started it dies (Linux ``PR_SET_PDEATHSIG``); it then kills the whole group: a
  worker killed with SIGKILL takes its hook, and its children, with it at once, and
  ``terraform apply`` after an interrupt and ``grace_s`` (so Terraform first saves
  the state of what it created). The caller's thread waits for the child, so it outlives it.
  ``on_start(pid)`` gives the caller the guard's pid, which is also the process
  group id, so a later attempt can check (or make sure) that the group is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DEFAULT_GRACE_SECONDS = 5.0
DEFAULT_POLL_SECONDS = 0.5
# After SIGKILL of the group, how long to wait for the pipes to close: something that
# left the group (a daemon that called setsid) may hold them open forever.
_PIPE_WAIT_AFTER_KILL = 5.0
# After the child exits, how long its last output may take to arrive before whatever
# it left running in its group (and holding the pipe) is killed.
_DRAIN_AFTER_EXIT = 1.0
# How long lines may wait for ``on_idle``: Terraform prints a line every millisecond or
# so; a tenth of a second of them is one write, and still shows live.
_IDLE_AFTER_SECONDS = 0.1

OnLine = Callable[[str], None]
ShouldCancel = Callable[[], bool]
OnStart = Callable[[int], None]
OnIdle = Callable[[], None]


def _never() -> bool:
    return False


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    # The last ``tail_size`` output lines, redacted (stderr only when stdout is captured).
    tail: list[str]
    # Whole stdout when ``capture_stdout`` (not redacted, not given to on_line); else b"".
    stdout: bytes = b""
    # Each program's exit status (a pipeline has several); empty if the guard was killed.
    returncodes: tuple[int, ...] = ()
    timed_out: bool = False
    cancelled: bool = False
    # The group had to be killed: it did not exit within the grace period.
    killed: bool = False
    # Seconds from the interrupt to the end, when the run was stopped.
    stop_seconds: float | None = None


class _Eof:
    """Put on the queue by a reader when its stream ends."""


class _Exited:
    """Put on the queue when the child has exited (a thread waits for it: no polling)."""


_EOF = _Eof()
_EXITED = _Exited()


def _has_prctl() -> bool:
    """Whether the guard can ask for a parent-death signal (Linux's prctl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(None).prctl  # noqa: B018 - only whether it is there
    except (OSError, AttributeError):
        return False
    return True


_HAS_PRCTL = _has_prctl()


# The parent-death signal reaches one process only, not what it started (a hook's
# `sleep`, a provisioner's command). So the program (or each program of a pipeline,
# connected stdout to stdin by the guard) runs under this guard, the leader
# of its process group: when the worker dies the guard gets SIGTERM and kills the
# whole group, at once for a hook, and for a program that stops its children itself
# (Terraform) after an interrupt and a grace period: an interrupted Terraform saves
# the state of what it already created straight away, so a retry does not create it
# again (killed outright, the last resources it made never reach the state). The guard
# relays the program's output, so the program's writes still succeed once nobody
# reads them. The runner's interrupt goes to the guard, which passes it on to the
# program alone (Terraform stops its own provisioners and saves its state) or to the
# whole group (a shell script's foreground command). The guard exits with the
# program's status, and dies of the same signal when the program did. It imports only
# built-in modules (``_signal``, ``_thread``: ``signal`` and ``threading`` would import
# ``enum`` and more), so it starts in about the time of an empty interpreter: it runs
# before every command, seven times in a sandbox provision.
_GUARD = """
import os, sys, _signal as signal, _thread
parent = int(sys.argv[1])
if parent:
    # prctl(PR_SET_PDEATHSIG, SIGTERM) here rather than in a preexec_fn, which would make
    # the worker fork (copying its page tables) instead of vfork: several ms a command.
    # The built-in _ctypes costs about 1 ms; ctypes itself 3.
    request = (1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    try:
        import _ctypes
        _ctypes.call_function(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"), request)
    except (ImportError, AttributeError):
        import ctypes
        ctypes.CDLL(None).prctl(*request)
    if os.getppid() != parent:  # the worker died before prctl: nobody would see us
        os._exit(1)
to_group = sys.argv[2] == "interrupt-group"
grace = float(sys.argv[3])
status_fd = int(sys.argv[4])
os.set_inheritable(status_fd, False)  # ours alone: a program holding it would delay the end
# The programs' argument lists, each one's length first (json would import re and enum:
# milliseconds before every command).
programs = []
rest = sys.argv[5:]
while rest:
    count = int(rest[0])
    programs.append(rest[1 : 1 + count])
    rest = rest[1 + count :]
# Each program's own environment, passed as PORTAL_PIPE<i>_<NAME> (nothing else of ours,
# such as the LC_CTYPE of Python's C-locale coercion, PEP 538, reaches a program).
envs = [{} for _ in programs]
for key, value in os.environ.items():
    if key.startswith("PORTAL_PIPE"):
        index, _, name = key[11:].partition("_")
        envs[int(index)][name] = value
kill_group = lambda *_: os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGINT, signal.SIG_IGN)
pids = []

def to_programs(signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

was_orphaned = []

def orphaned(*_):
    # The worker died: interrupt the programs, kill the group if they outlast the grace.
    was_orphaned.append(True)
    signal.signal(signal.SIGALRM, kill_group)
    signal.setitimer(signal.ITIMER_REAL, grace)
    to_programs(signal.SIGINT)

signal.signal(signal.SIGTERM, kill_group if to_group else orphaned)
# The programs write into pipes this guard relays, so that once the worker (the reader
# of our output) is gone their writes still succeed while they save their state.
# One pipe when our stdout and stderr are one stream: the lines keep their order.
same = (os.fstat(1).st_dev, os.fstat(1).st_ino) == (os.fstat(2).st_dev, os.fstat(2).st_ino)
pipes = {1: os.pipe()} if same else {1: os.pipe(), 2: os.pipe()}

def start(argv, env, stdin, stdout):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if stdin is not None:
            os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(pipes[2 if 2 in pipes else 1][1], 2)
        # Every other pipe end is close-on-exec (os.pipe).
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(2, f"cannot run {argv[0]}: {exc.strerror}\\n".encode())
        os._exit(127)
    return pid

# A pipeline: each program's stdout is the next one's stdin; the first reads our stdin.
# We keep a copy of each link's write end, so a program sees the end of its input only
# once the program before it has succeeded: after a failure it is killed first (a COPY
# FROM STDIN that saw the end would commit the rows it got).
stdin = None
holds = {}
for i, argv in enumerate(programs):
    last = i == len(programs) - 1
    link_read, link_write = (None, pipes[1][1]) if last else os.pipe()
    pids.append(start(argv, envs[i], stdin, link_write))
    if stdin is not None:
        os.close(stdin)
    if not last:
        holds[pids[-1]] = link_write
    stdin = link_read

def interrupt(*_):
    if to_group:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # not to ourselves again
        os.killpg(0, signal.SIGINT)
        signal.signal(signal.SIGINT, interrupt)
    else:
        to_programs(signal.SIGINT)

def relay(read_end, fd):
    reader_gone = False
    while chunk := os.read(read_end, 65536):
        view = memoryview(chunk)
        while view and not reader_gone:
            try:
                view = view[os.write(fd, view):]
            except OSError:
                reader_gone = True  # keep reading, so the programs never block or break

def pump(read_end, fd, done):
    try:
        relay(read_end, fd)
    finally:
        done.release()

pumps = []
for fd, (read_end, write_end) in pipes.items():
    os.close(write_end)
    pumps.append(_thread.allocate_lock())
    pumps[-1].acquire()
    _thread.start_new_thread(pump, (read_end, fd, pumps[-1]))
signal.signal(signal.SIGINT, interrupt)
codes = {}
while len(codes) < len(pids):
    pid, status = os.wait()
    if pid not in pids:
        continue
    codes[pid] = os.waitstatus_to_exitcode(status)
    if codes[pid] != 0:
        # What the later programs read is incomplete: they must not finish with it.
        for later in pids[pids.index(pid) + 1:]:
            if later not in codes:
                try:
                    os.kill(later, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    if pid in holds:
        os.close(holds.pop(pid))  # the next program may now see the end of its input
for done in pumps:
    done.acquire(timeout=1.0)  # what the programs left running may hold a pipe open: not long
ordered = [codes[pid] for pid in pids]
try:
    os.write(status_fd, " ".join(map(str, ordered)).encode())
except OSError:
    pass  # the worker that would read it is gone
if was_orphaned:
    kill_group()  # nobody waits for us: leave nothing of the group behind
code = next((c for c in reversed(ordered) if c != 0), 0)  # like a shell's pipefail
if code < 0:
    if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be caught anyway
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def _guarded(
    *, programs: Sequence[Program], interrupt_group: bool, grace_s: float, status_fd: int
) -> tuple[list[str], dict[str, str]]:
    """The guard's argv and environment: each program's environment under its prefix."""
    # -I -S: no environment variables, user site or site module: a fast, clean start.
    interrupt = "interrupt-group" if interrupt_group else "interrupt-program"
    # The guard asks for the parent-death signal (Linux), then checks this is its parent.
    parent = str(os.getpid()) if _HAS_PRCTL else "0"
    listed = [part for p in programs for part in (str(len(p.argv)), *p.argv)]
    argv = [
        *(sys.executable, "-I", "-S", "-c", _GUARD, parent, interrupt),
        *(str(grace_s), str(status_fd), *listed),
    ]
    env = {f"PORTAL_PIPE{i}_{k}": v for i, p in enumerate(programs) for k, v in p.env.items()}
    return argv, env


def _check_program(*, program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Raise OSError now, as Popen would, when ``program`` cannot be run."""
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else Path(cwd) / program
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


@dataclass(frozen=True)
class Program:
    """One program of a pipeline: its argument list and its whole environment."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(repr=False)  # may carry a password: never printed


def run_process(
    *,
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float | None = None,
    on_line: OnLine | None = None,
    should_cancel: ShouldCancel = _never,
    on_start: OnStart | None = None,
    on_idle: OnIdle | None = None,
    stdin_data: bytes | None = None,
    capture_stdout: bool = False,
    grace_s: float = DEFAULT_GRACE_SECONDS,
    poll_s: float = DEFAULT_POLL_SECONDS,
    redact: Callable[[str], str] = _identity,
    tail_size: int = 20,
    interrupt_group: bool = True,
) -> ProcessResult:
    """Run ``argv`` to its end, streaming each (redacted) output line to ``on_line``.

    stdout and stderr are one stream unless ``capture_stdout``: then stdout is kept
    whole in the result and only stderr is streamed. ``should_cancel`` is asked every
    ``poll_s`` seconds. A stop interrupts the whole process group, or only the program
    when ``interrupt_group`` is false (Terraform, which stops its children itself).
    Raises ``OSError`` when the program cannot be started; an exception raised by
    ``on_line``, ``on_idle`` or ``on_start`` stops the process, then propagates.
    """
    return run_pipeline(
        programs=[Program(argv=argv, env=env)],
        cwd=cwd,
        timeout_s=timeout_s,
        on_line=on_line,
        should_cancel=should_cancel,
        on_start=on_start,
        on_idle=on_idle,
        stdin_data=stdin_data,
        capture_stdout=capture_stdout,
        grace_s=grace_s,
        poll_s=poll_s,
        redact=redact,
        tail_size=tail_size,
        interrupt_group=interrupt_group,
    )


def run_pipeline(
    *,
    programs: Sequence[Program],
    cwd: Path,
    timeout_s: float | None = None,
    on_line: OnLine | None = None,
    should_cancel: ShouldCancel = _never,
    on_start: OnStart | None = None,
    on_idle: OnIdle | None = None,
    stdin_data: bytes | None = None,
    capture_stdout: bool = False,
    grace_s: float = DEFAULT_GRACE_SECONDS,
    poll_s: float = DEFAULT_POLL_SECONDS,
    redact: Callable[[str], str] = _identity,
    tail_size: int = 20,
    interrupt_group: bool = True,
) -> ProcessResult:
    """Run ``programs`` as a pipeline, as ``run_process`` runs one program: each one's
    stdout is the next one's stdin (the bytes go from program to program, never
    through this process); ``stdin_data`` goes to the first, the last one's stdout and
    every program's stderr are the output. All of them share one guard, process
    group, stop, timeout and parent-death; ``result.returncodes`` has each one's exit
    status and ``returncode`` the last non-zero of them. A program sees the end of its
    input only once the one before it has succeeded: when one fails, the programs after
    it are killed first (what they read is incomplete, and must not be taken as whole).
    """
    if not programs:
        raise ValueError("a pipeline needs at least one program")
    for program in programs:
        _check_program(program=program.argv[0], cwd=cwd, env=program.env)
    status_read, status_write = os.pipe()
    try:
        argv, env = _guarded(
            programs=programs,
            interrupt_group=interrupt_group,
            grace_s=grace_s,
            status_fd=status_write,
        )
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture_stdout else subprocess.STDOUT,
            # No preexec_fn: the guard asks for its parent-death signal itself (SIGTERM:
            # it catches it), so the worker can vfork.
            process_group=0,
            pass_fds=(status_write,),
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
    run = _Run(
        process=process,
        status=os.fdopen(status_read, "rb"),
        redact=redact,
        on_line=on_line,
        on_idle=on_idle,
        should_cancel=should_cancel,
        grace_s=grace_s,
        poll_s=poll_s,
        tail_size=tail_size,
    )
    finished = False
    try:
        if on_start is not None:
            on_start(process.pid)
        if stdin_data is not None:
            _feed(process=process, data=stdin_data)
        run.start_readers(capture_stdout=capture_stdout)
        run.pump(deadline=None if timeout_s is None else time.monotonic() + timeout_s)
        finished = True
    finally:
        if not finished:
            # on_line raised, or the caller itself was interrupted: never leave the
            # child running unattended; give it the same graceful stop as a cancel.
            run.stop_now()
        run.finish(deliver=finished)
    return run.result()


def _feed(*, process: subprocess.Popen[bytes], data: bytes) -> None:
    assert process.stdin is not None
    # A child that died at once shows up as a failed command, not as BrokenPipeError.
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(data)
        process.stdin.close()


class _Run:
    """The state of one running child: its queue of lines, its stop, its result."""

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        status: IO[bytes],
        redact: Callable[[str], str],
        on_line: OnLine | None,
        on_idle: OnIdle | None,
        should_cancel: ShouldCancel,
        grace_s: float,
        poll_s: float,
        tail_size: int,
    ) -> None:
        self.process = process
        self.status = status  # the guard writes each program's exit status here
        self.status_parts: list[bytes] = []
        self.redact = redact
        self.on_line = on_line
        self.on_idle = on_idle
        self.idle_due: float | None = None  # lines came: on_idle is due then
        self.should_cancel = should_cancel
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.tail: deque[str] = deque(maxlen=tail_size)
        self.lines: queue.Queue[str | _Eof | _Exited] = queue.Queue()
        self.stdout_parts: list[bytes] = []
        self.readers: list[threading.Thread] = []
        self.open_streams = 0
        self.interrupted_at: float | None = None
        self.killed_at: float | None = None
        self.ended_at: float | None = None
        self.exited_at: float | None = None  # the child itself ended, its output may not
        self.outlived_grace = False
        self.timed_out = False
        self.cancelled = False

    def start_readers(self, *, capture_stdout: bool) -> None:
        assert self.process.stdout is not None
        if capture_stdout:
            assert self.process.stderr is not None
            self._start(_pump_lines, stream=self.process.stderr, lines=self.lines)
            self._start(_read_all, stream=self.process.stdout, parts=self.stdout_parts)
        else:
            self._start(_pump_lines, stream=self.process.stdout, lines=self.lines)
        self.open_streams = 1
        self._start(_read_all, stream=self.status, parts=self.status_parts)
        self._start(_wait_for_exit, process=self.process, lines=self.lines)

    def _start(self, target: Callable[..., None], **kwargs: object) -> None:
        thread = threading.Thread(target=target, kwargs=kwargs, daemon=True)
        thread.start()
        self.readers.append(thread)

    def pump(self, *, deadline: float | None) -> None:
        """Deliver lines until the output ends and the child exits, stopping it when asked."""
        next_check = time.monotonic()
        while True:
            now = time.monotonic()
            if self.interrupted_at is None:
                if deadline is not None and now >= deadline:
                    self.timed_out = True
                    self._interrupt(now)
                elif now >= next_check:
                    next_check = now + self.poll_s
                    if self.should_cancel():
                        self.cancelled = True
                        self._interrupt(now)
                    # The caller's own lines kept before a quiet stretch show now too.
                    self._idle()
            elif self.killed_at is None and now >= self.interrupted_at + self.grace_s:
                self.outlived_grace = True
                self._kill(now)
            if self.exited_at is not None and self.open_streams == 0:
                return
            drained = self.exited_at is not None and now >= self.exited_at + _DRAIN_AFTER_EXIT
            if drained and self.killed_at is None:
                # The program ended; what it left behind holds the pipe open.
                self._kill(now)
            if self.killed_at is not None and now >= self.killed_at + _PIPE_WAIT_AFTER_KILL:
                return  # a process outside the group holds the pipe: stop waiting for it
            if self.idle_due is not None and now >= self.idle_due:
                self._idle()
            wait = self._wait_seconds(now=now, deadline=deadline, next_check=next_check)
            try:
                item = self.lines.get(timeout=wait)
            except queue.Empty:
                continue
            self._take(item, deliver=True)

    def _idle(self) -> None:
        self.idle_due = None
        if self.on_idle is not None:
            self.on_idle()

    def _wait_seconds(self, *, now: float, deadline: float | None, next_check: float) -> float:
        moments = [next_check if self.interrupted_at is None else now + self.poll_s]
        if self.interrupted_at is None and deadline is not None:
            moments.append(deadline)
        if self.interrupted_at is not None and self.killed_at is None:
            moments.append(self.interrupted_at + self.grace_s)
        if self.exited_at is not None and self.killed_at is None:
            moments.append(self.exited_at + _DRAIN_AFTER_EXIT)
        if self.idle_due is not None:
            moments.append(self.idle_due)
        return max(0.01, min(moments) - now)

    def _take(self, item: str | _Eof | _Exited, *, deliver: bool) -> None:
        if isinstance(item, _Eof):
            self.open_streams -= 1
            return
        if isinstance(item, _Exited):
            self.exited_at = time.monotonic()
            return
        line = self.redact(item)
        self.tail.append(line)
        if deliver and self.on_line is not None:
            self.on_line(line)
            if self.idle_due is None:
                self.idle_due = time.monotonic() + _IDLE_AFTER_SECONDS

    def _interrupt(self, now: float) -> None:
        self.interrupted_at = now
        # To the guard, which passes it on (see _GUARD).
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)

    def _kill(self, now: float) -> None:
        self.killed_at = now
        _signal_group(process=self.process, signum=signal.SIGKILL)

    def stop_now(self) -> None:
        """Interrupt, wait out the grace period, kill: for when the caller cannot go on."""
        if self.process.poll() is None:
            self._interrupt(time.monotonic())
            try:
                self.process.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self.outlived_grace = True
                self._kill(time.monotonic())
                self.process.wait()
            except BaseException:  # a second Ctrl-C while it shuts down: stop it hard
                self._kill(time.monotonic())
                self.process.wait()
                raise

    def finish(self, *, deliver: bool) -> None:
        """Reap the child, kill what it left in its group, take the last lines."""
        if self.process.poll() is None:
            # Only after a kill whose pipes stayed open; SIGKILL ends it soon.
            self.process.wait()
        self.ended_at = time.monotonic()
        # Leftovers, e.g. a provisioner's orphaned `sleep` or a hook's background job.
        _signal_group(process=self.process, signum=signal.SIGKILL)
        for reader in self.readers:
            reader.join(timeout=_PIPE_WAIT_AFTER_KILL)
        self.status.close()
        while True:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                break
            self._take(item, deliver=deliver)
        if deliver and self.idle_due is not None:
            self._idle()

    def result(self) -> ProcessResult:
        stop_seconds = None
        if self.interrupted_at is not None and self.ended_at is not None:
            stop_seconds = self.ended_at - self.interrupted_at
        reported = b"".join(self.status_parts).split()
        return ProcessResult(
            returncode=self.process.returncode,
            returncodes=tuple(int(code) for code in reported),
            tail=list(self.tail),
            stdout=b"".join(self.stdout_parts),
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            killed=self.outlived_grace,
            stop_seconds=stop_seconds,
        )


def _pump_lines(*, stream: IO[bytes], lines: queue.Queue[str | _Eof | _Exited]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(_EOF)


def _wait_for_exit(
    *, process: subprocess.Popen[bytes], lines: queue.Queue[str | _Eof | _Exited]
) -> None:
    process.wait()
    lines.put(_EXITED)


def _read_all(*, stream: IO[bytes], parts: list[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        parts.append(stream.read())


def _signal_group(*, process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the child's whole process group (it leads one: ``process_group=0``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
