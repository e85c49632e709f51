"""Writing results safely, one rule for every entry point.

* Output paths (`check_output_path`, `check_folder`, `make_folder`): missing folders are created
  when the first file is written into them; a folder where a result file should go, a parent path
  that is a regular file, or a folder the process cannot write (read-only, immutable, no permission)
  is an `OutputError` with one line, raised before any work starts and before anything is created,
  so nothing is computed for a result that could not be kept and a failed run leaves no trace.
* Atomic writes (`atomic_path`, `atomic_paths`, `atomic_torch_save`): a file the user keeps (checkpoint, video,
  PNG, CSV) is written under a hidden temporary name in the same folder, checked (not empty, and
  readable where a cheap check exists), and only then renamed onto its name. A full disk, a
  file-size limit, an encoder failure or a crash never leaves a half-written file where the previous
  good one was, and the temporary file is removed.
* Leftovers of killed runs (`remove_stale_temps`): temporary files whose process no longer exists
  are removed when their folder is next used.
"""
import contextlib
import logging
import os
import re
import zipfile
from pathlib import Path

from modules.errors import OutputError, cannot_write, os_error_cause, os_error_in

log = logging.getLogger(__name__)

# .<stem>.<pid>.tmp<suffix>: the names temp_path_for gives
_TEMP_NAME = re.compile(r'^\.(?P<stem>.*)\.(?P<pid>\d+)\.tmp(?P<suffix>\.[^.]*)?$')

def temp_path_for(path):
    """A hidden temporary name beside `path`, with the same extension (ffmpeg and imageio pick the
    format from it): result.mp4 -> .result.<pid>.tmp.mp4"""
    path = Path(path)
    return path.with_name(f'.{path.stem}.{os.getpid()}.tmp{path.suffix}')


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(folder):
    """Removes the temporary files (temp_path_for names) in `folder` whose process has ended: what a
    killed run left behind. Returns the paths removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMP_NAME.match(entry.name)
        if found and entry.is_file(follow_symlinks=False) and not _alive(int(found['pid'])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    if removed:
        log.info('removed %d unfinished temporary file(s) of an interrupted run in %s', len(removed), folder)
    return removed


def check_folder(folder, what=None):
    """Checks, without creating anything, that `folder` exists or can be created and that files can
    be written in it: the deepest existing part of the path must be a folder the process can write.
    what: what needs the folder, for the message (e.g. '--log_dir log' or '--result_video
    out/r.mp4'). Raises OutputError (one line). Returns the Path."""
    folder = Path(folder)
    needed = f' (for {what})' if what else ''
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f'cannot create the folder {folder}{needed}: {blocker} is a file; choose another path')
    probe = base / f'.write-test.{os.getpid()}.tmp'
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except FileExistsError:
        pass
    except OSError as e:
        action = 'write in' if base == folder else f'create {folder} in'
        raise OutputError(f'cannot {action} {base}{needed}: {os_error_cause(e)}; choose a writable folder') from None
    return folder


def make_folder(folder, what=None):
    """check_folder, then creates `folder` (and its parents) if needed and removes the temporary files
    killed runs left in it (remove_stale_temps). Raises OutputError (one line)."""
    folder = check_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        needed = f' (for {what})' if what else ''
        raise OutputError(f'cannot create the folder {folder}{needed}: {os_error_cause(e)}; choose a writable '
                          f'place') from None
    remove_stale_temps(folder)
    return folder


def check_output_path(path, flag=None, suffixes=None):
    """The toolkit's rule for a result file, checked before any work (nothing is created here): its
    folder must exist or be creatable, and be writable (check_folder; the writer creates missing
    folders when it starts); `path` must not be a folder; suffixes: the allowed extensions (lower
    case, with the dot), or None. flag: the option that named it, for the message. Returns the Path.
    Raises OutputError (one line)."""
    path = Path(path)
    name = f'{flag} {path}' if flag else str(path)
    if path.is_dir():
        example = path / ('result' + (suffixes[0] if suffixes else '.mp4'))
        raise OutputError(f'{name} is a folder: give a file name inside it, e.g. {example}')
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputError(f'{name}: unsupported file type {path.suffix or "(none)"}; use one of {", ".join(suffixes)}')
    check_folder(path.parent, name)
    return path


def check_written(tmp, path, verify=None):
    """Raises the OutputError of `path` if its temporary file `tmp` is missing or empty, or if
    `verify(tmp)` names a problem (a writer's own check: the file reads back whole)."""
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise cannot_write(path, 'nothing was written')
    problem = verify(tmp) if verify is not None else None
    if problem:
        raise cannot_write(path, problem)


@contextlib.contextmanager
def atomic_path(path, verify=None):
    """Yields a temporary path to write; when the block ends without an error, the written file is
    checked (not empty; `verify(tmp)` -> None or a problem string) and renamed onto `path`. The
    temporary file is removed in every case. An error of the file system while writing (an OSError,
    or an error raised because of one: disk full, file-size limit, read-only folder) becomes an
    OutputError naming `path`; `path` itself is untouched then. (atomic_paths with one file.)"""
    with atomic_paths({'file': path}, verify=verify and (lambda key, tmp: verify(tmp))) as tmps:
        yield tmps['file']


@contextlib.contextmanager
def atomic_paths(paths, verify=None):
    """atomic_path for files that belong together (an export's graphs and the manifest that describes
    them): yields {key: temporary path} for `paths` ({key: path}). When the block ends without an
    error, every file is checked first (not empty; `verify(key, tmp)` -> None or a problem string),
    and only then are they renamed onto their paths, in the order given (put the file that vouches
    for the others last). An error before that leaves every path as it was, and no mix of old and
    new files; the temporary files are removed in every case."""
    paths = {key: Path(path) for key, path in paths.items()}
    tmps = {key: temp_path_for(path) for key, path in paths.items()}
    try:
        try:
            for path in paths.values():
                path.parent.mkdir(parents=True, exist_ok=True)
            yield dict(tmps)
            for key, tmp in tmps.items():
                check_written(tmp, paths[key], verify and (lambda tmp, key=key: verify(key, tmp)))
            for key, tmp in tmps.items():
                os.replace(tmp, paths[key])
        except Exception as e:
            if isinstance(e, OutputError) or os_error_in(e) is None:
                raise
            kept = 'the previous file (if any) is kept' if len(paths) == 1 else 'the previous files (if any) are kept'
            raise cannot_write(_being_written(paths, tmps, e), e, kept=kept) from e
    finally:
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _being_written(paths, tmps, error):
    """The path of atomic_paths whose write failed: the only one, or the one the OSError names, else
    the one whose temporary file changed last (a writer in C++ does not name it), else their folder."""
    if len(paths) == 1:
        return next(iter(paths.values()))
    failed = getattr(os_error_in(error), 'filename', None)
    for key, tmp in tmps.items():
        if failed is not None and Path(failed) == tmp:
            return paths[key]
    written = {}
    for key, tmp in tmps.items():
        with contextlib.suppress(OSError):
            written[key] = tmp.stat().st_mtime_ns
    if written:
        return paths[max(written, key=written.get)]
    return paths[next(iter(paths))].parent


def verify_png(tmp):
    """None if `tmp` is a complete image file Pillow reads, else the problem."""
    from PIL import Image
    try:
        with Image.open(tmp) as image:
            image.verify()
    except Exception as e:  # Pillow raises many kinds for a broken file
        return f'the written image is unreadable ({e})'
    return None


def verify_zip(tmp):
    """None if `tmp` is a complete zip archive (torch.save's format), else the problem."""
    try:
        with zipfile.ZipFile(tmp) as archive:
            if not archive.namelist():
                return 'the written checkpoint is empty'
    except (zipfile.BadZipFile, OSError) as e:
        return f'the written checkpoint is incomplete ({e})'
    return None


def atomic_torch_save(obj, path):
    """torch.save to a temp file in the same folder, checked, then renamed onto `path` (never
    half-written). Raises OutputError naming `path` and the cause (disk full, file-size limit...)."""
    import torch
    path = Path(path)
    # Written through a Python file, so that a failed write surfaces as its OSError (the cause of the
    # RuntimeError torch's zip writer raises), which atomic_path reports.
    with atomic_path(path, verify=verify_zip) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)
    return path


def append_line(path, line):
    """Appends `line` and a newline to a text log (log.txt); OutputError naming the file if the disk
    is full or the file cannot be written. A log only grows, so it is not written atomically."""
    try:
        with open(path, 'a') as f:
            f.write(line + '\n')
    except OSError as e:
        raise cannot_write(path, e, kept='the files written before are kept') from e
