"""Peak resident memory of a command, measured without the caller's own memory in it.

On Linux a child's ru_maxrss starts at the RSS its parent had when it forked, so a large process
(pytest with models loaded, a benchmark) cannot measure a child directly: a tiny launcher process
starts the command and reports the command's own peak.
"""
import os
import subprocess
import sys

_LAUNCHER = ('import os, subprocess, sys\n'
             'p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n'
             '_, status, usage = os.wait4(p.pid, 0)\n'
             'print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)')


def peak_rss_mb(command, cwd=None, env=None):
    """Runs `command` (a list) -> (exit code, peak RSS in MB of that process)."""
    out = subprocess.run([sys.executable, '-c', _LAUNCHER, *map(str, command)], cwd=cwd, capture_output=True,
                         text=True, env=env if env is not None else dict(os.environ), check=True)
    returncode, max_rss_kb = map(int, out.stdout.split())
    return returncode, max_rss_kb / 1024
