"""The shared body of the entry points (the top-level scripts): logging to the terminal, SIGTERM
handled as Ctrl-C, every user or machine failure ended in one line with its exit status
(modules.errors.exit_status), and the options classes' defaults for their parsers. The toolkit
reports through logging; this module prints what a command says when it is done."""
import dataclasses
import logging
import sys

from modules.errors import exit_status, stop_on_sigterm


def wrote(paths):
    """'wrote A and B' for the paths a job wrote (None: nothing to say)."""
    return 'wrote ' + ' and '.join(str(path) for path in paths) if paths else None


def run_entry_point(job, options, describe=wrote, level=logging.INFO, stream=None, outcomes=()):
    """An entry point's body: runs `job(**options)` and prints describe(its result) (when not None) on
    `stream` (stdout). Returns the exit status: 0; for an exception of one of `outcomes`
    ((exception class, status) pairs: an expected result such as crop-video.py's 'no track', exit
    1) that status after an 'error: ...' line; else modules.errors.exit_status's (2 after one line
    for a user or machine failure, 130 / 143 for Ctrl-C / SIGTERM; a bug keeps its traceback)."""
    logging.basicConfig(level=level, format='%(message)s')
    stop_on_sigterm()
    try:
        result = job(**options)
    except tuple(kind for kind, _ in outcomes) as e:
        print(f'error: {e}', file=sys.stderr)
        return next(status for kind, status in outcomes if isinstance(e, kind))
    except BaseException as e:  # a user or machine failure: one line (modules.errors); a bug: its traceback
        return exit_status(e)
    message = describe(result)
    if message:
        print(message, file=stream or sys.stdout)
    return 0


def option_defaults(options_class):
    """{name: default} of an options dataclass (toolkit.demo.DemoOptions, ...): what its script's
    parser defaults to, so each default is written once."""
    return {field.name: field.default for field in dataclasses.fields(options_class)
            if field.default is not dataclasses.MISSING}
