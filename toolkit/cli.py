"""The shared body of the entry points (the top-level scripts): logging to the terminal, SIGTERM
handled as Ctrl-C, and every user or machine failure ended in one line with its exit status
(modules.errors.exit_status). Only this module and the scripts print."""
import logging

from modules.errors import exit_status, stop_on_sigterm


def run_entry_point(job, options):
    """Runs `job(**options)` -> the paths it wrote, printed as 'wrote A and B'; returns the exit
    status: 0, or 2 / 130 / 143 after one 'error: ...' line (a bug keeps its traceback)."""
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    stop_on_sigterm()
    try:
        written = job(**options)
    except BaseException as e:  # a user or machine failure: one line (modules.errors); a bug: its traceback
        return exit_status(e)
    print('wrote ' + ' and '.join(str(path) for path in written))
    return 0
