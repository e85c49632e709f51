"""User-facing errors.

A `UserError` means the user gave us something we cannot use (a config with a typo, a checkpoint
that does not fit, a missing weight file). Its message is one line that names the offending file or
key and says what to do; entry points print it to stderr and exit with status 2 instead of showing a
traceback. Anything else that is raised is a bug and keeps its traceback, except the failures of the machine
itself that no code can prevent (a full disk, a file-size limit, a read-only file system, running out
of memory, Ctrl-C): `entry_point_message` turns those into one line too.
"""
import errno

_CAUSES = {
    errno.ENOSPC: 'the disk is full',
    errno.EFBIG: 'the file-size limit was reached (ulimit -f)',
    errno.EDQUOT: 'the disk quota is exceeded',
    errno.EROFS: 'the file system is read-only',
    errno.EACCES: 'permission denied',
    errno.EPERM: 'the operation is not permitted (read-only or immutable folder?)',
    errno.ENOTDIR: 'a part of the path is a file, not a folder',
    errno.EISDIR: 'it is a folder',
    errno.ENAMETOOLONG: 'the name is too long',
}
_MACHINE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


def os_error_in(error):
    """The OSError that `error` is or was caused by (its __cause__ / __context__ chain), or None: torch's
    zip writer, for one, reports a failed write as a RuntimeError raised while handling the OSError."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def os_error_cause(error):
    """A few words for an OSError (or an error caused by one): 'the disk is full', ..."""
    error = os_error_in(error)
    if error is None:
        return 'unknown cause'
    return _CAUSES.get(error.errno, error.strerror or str(error))


class UserError(Exception):
    """Base class of every error caused by user input (one-line message, exit status 2)."""


class ConfigError(UserError):
    """A YAML config is unreadable, has unknown or misspelled keys, or has values of the wrong type."""


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe to load, or does not fit the model."""


class InputError(UserError):
    """An input file (image, video, weight file, dataset folder) is missing or unusable."""


class OutputError(UserError):
    """A result cannot be written: its folder cannot be created or written, a folder is in the way,
    the disk is full or the file-size limit is reached, or the encoder failed. The previous result
    under that name is left as it was."""


def cannot_write(path, cause, kept='the previous file (if any) is kept'):
    """The OutputError of every failed write: 'cannot write <path>: <cause>; <kept>'. cause: a few
    words, or the exception (os_error_cause words it)."""
    words = cause if isinstance(cause, str) else os_error_cause(cause)
    return OutputError(f'cannot write {path}: {words}' + (f'; {kept}' if kept else ''))


class LimitError(InputError):
    """An input is larger than a documented limit (image or frame pixels, config alias expansion)
    that guards memory; the message names the limit and how to raise it."""


class TrainingError(UserError):
    """Training cannot go on: a loss became NaN/inf, or the data cannot fill one batch."""


class Terminated(BaseException):
    """SIGTERM arrived (`kill`, a batch scheduler's stop): it unwinds the stack like Ctrl-C, so that an
    unfinished result is removed and the earlier one kept (see stop_on_sigterm)."""


def stop_on_sigterm():
    """For entry points: from now on SIGTERM raises Terminated in this process, instead of ending it
    on the spot with its temporary files and encoder left behind. Child processes forked later
    (data-loader workers) keep the default action."""
    import os
    import signal
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def entry_point_message(error):
    """The one line an entry point prints for `error` (without 'error: '), or None for a bug, which
    keeps its traceback. UserError: its message; an OSError of a full disk / file-size limit /
    read-only file system, a MemoryError, Ctrl-C: what happened and that earlier results are kept."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return 'interrupted (Ctrl-C); results written before are kept, the unfinished one was not written'
    if isinstance(error, Terminated):
        return 'terminated (SIGTERM); results written before are kept, the unfinished one was not written'
    if isinstance(error, MemoryError):
        return 'out of memory: use smaller inputs, a smaller --batch_size, or a machine with more memory'
    cause = os_error_in(error)
    if cause is not None and cause.errno in _MACHINE_ERRNOS:
        where = f' ({cause.filename})' if cause.filename else ''
        return f'cannot write{where}: {os_error_cause(cause)}; results written before are kept'
    return None


def exit_status(error, stream=None):
    """For entry points only: prints `error: <one line>` to stderr (`stream`) and returns the exit
    status (130 for Ctrl-C, 143 for SIGTERM, else 2); a bug (entry_point_message None) is raised
    again, with its traceback. Use as `except BaseException as e: return exit_status(e)`."""
    import sys
    message = entry_point_message(error)
    if message is None:
        raise error
    print(f'error: {message}', file=stream or sys.stderr, flush=True)
    return 130 if isinstance(error, KeyboardInterrupt) else 143 if isinstance(error, Terminated) else 2
