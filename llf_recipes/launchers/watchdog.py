"""The watchdog every node's command runs under, here or on a remote node (plain Python, standard library only, so a
node needs nothing but an interpreter).

It starts the command in a session of its own and, when its standard input closes (the ssh client or
`llf-recipes run` died, or the run is being stopped) or it gets SIGTERM/SIGINT/SIGHUP, stops the command's whole
process tree, torchrun's workers and Ray's daemons included (they live in sessions of their own, so a process group is
not enough: the watchdog is a child subreaper and walks /proc). ssh gives a remote command no SIGHUP without a tty,
so the closed stdin is what carries "stop" to every node. When the command ends by itself, whatever it left behind is
stopped too, so a command that forks daemons and returns (plain `ray start`) leaves nothing: run such things in the
foreground (`ray start --block`).

Use: `watchdog_argv(argv)` gives the argv that runs `argv` under the watchdog; keep its stdin a pipe and close it to stop.
"""

from __future__ import annotations

import sys

STOP_GRACE_S = 10  # SIGTERM -> SIGKILL, for the watchdog and for the processes it stops

WATCHDOG = r"""
import os, signal, subprocess, sys, threading, time
grace = float(sys.argv[1])
argv = sys.argv[2:]
os.environ["PATH"] = os.path.dirname(argv[0]) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
try:  # orphaned descendants are re-parented to us, so the tree walk still finds them
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
stop = threading.Event()
def on_signal(*_):
    stop.set()
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)
def watch_stdin():
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop.set()
child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
threading.Thread(target=watch_stdin, daemon=True).start()
def descendants():
    if not os.path.isdir("/proc"):
        return [child.pid] if child.poll() is None else []
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    kids.setdefault(int(fields[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [os.getpid()]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out
def reap():
    # zombies re-parented to us; never waitpid(-1), which could take the child's exit status from Popen
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if d.isdigit() and int(d) != child.pid:
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] == "Z" and int(fields[1]) == os.getpid():
                    os.waitpid(int(d), os.WNOHANG)
            except (OSError, IndexError, ValueError):
                pass
def end_tree(wait):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = descendants()
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and descendants():
            reap()
            time.sleep(0.1)
        reap()
while child.poll() is None and not stop.is_set():
    stop.wait(0.2)
code = child.poll()
end_tree(grace if code is None else 2)
code = child.wait()
sys.exit(128 - code if code < 0 else code)
"""


def watchdog_argv(argv: list[str] | tuple[str, ...], grace: float = STOP_GRACE_S, python: str | None = None) -> list[str]:
    """The argv that runs `argv` under the watchdog with `python` (default: this interpreter)."""
    return [python or sys.executable, "-c", WATCHDOG, str(grace), *argv]
