"""The comments of the YAML configs: written from the schemas' help texts, and checked against them.

Every key of a config has a *help comment*:

* a nested key (an indented line): the comment at the end of its line::

      num_kp: 10                            # number of keypoints K

* a top-level key (a section, at column 0): its heading, the first line of the block of comment
  lines that ends directly above the key (so a blank line keeps the file's header apart from the
  first section)::

      # training (run.py --mode train)
      train_params:

A help comment *agrees* with the schema when its text (what follows ``#`` and one space) is the key's
help (`Key.doc` in the schema of the file's family, modules.config.loader.iter_schema) exactly, or
that help, then `NOTE` (`` -- ``), then a non-empty note that holds for this file only (the original's
value, the image size a scale gives here, why a weight is 0 here, ...)::

      scale_factor: 0.25                    # the detector works on ... (anti-aliased) -- 256 -> 64 pixels

What holds for every config belongs in the help, not in a note. No help text contains `NOTE`, so a
comment splits into help and note in one way only. Every other comment line (the file's header, a
heading's further lines) is free text and is not checked.

`comment_problems` lists the help comments of a file that do not agree (tests/test_config_comments.py
runs it on every file of config/); `rewrite` / `write_comments` write every help comment from the
schema, keeping its note, and add the missing ones (a trailing comment at the column the file's
comments start at; a heading line directly above a section), leaving every other byte of the file as
it was: values, key order, blank lines, the other comments, the spaces before each ``#``::

    python -m modules.config.comments --write            # every config in config/
    python -m modules.config.comments --check [FILE...]  # exit status 1 if a comment disagrees
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from modules.config.loader import find_config_files, iter_schema, motion_model

__all__ = ["NOTE", "HelpComment", "comment_problems", "help_comments", "main", "rewrite", "schema_help",
           "split_note", "write_comments"]

#: What separates a comment's help from its note.
NOTE = " -- "
#: Where a trailing comment starts when the file has none to copy the column from.
DEFAULT_COLUMN = 42  # as in config/

# what may follow a key's value on its line (or its key, for a section or an alias): the colon, an
# anchor, a tag or an alias, then the comment
_AFTER_VALUE = re.compile(r"\s*:?\s*(?:[&!*]\S*\s*)*(?:#(?P<text>.*))?")
_COMMENT_LINE = re.compile(r"\s*#")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")  # YAML's line breaks, kept with their line
EOL = "\r\n"


@dataclass(frozen=True)
class HelpComment:
    """Where the help comment of one key is, and what it says.

    path: the key path; line: the key's line (0-based); top_level: a section key, whose help comment is
    its heading. For a nested key, `column` is that of its ``#`` (None: no comment); for a top-level
    key, `heading` is the line of its heading (None: none). `text`: the comment's text, None if absent.
    """

    path: Tuple[str, ...]
    line: int
    top_level: bool
    text: Optional[str]
    column: Optional[int] = None
    heading: Optional[int] = None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def split_note(text: str) -> Tuple[str, Optional[str]]:
    """'<help> -- <note>' -> (help, note); a comment without NOTE is all help (note None)."""
    help_, separator, note = text.partition(NOTE)
    return (help_, note) if separator else (text, None)


def _comment_text(raw: str) -> str:
    """The text of a comment: what follows '#' without its one leading space and trailing spaces."""
    return (raw[1:] if raw.startswith(" ") else raw).rstrip()


def _split_lines(text: str) -> List[str]:
    """The lines of `text` with their line breaks, split where YAML counts lines."""
    return _LINE.findall(text)


def help_comments(text: str) -> List[HelpComment]:
    """The help comments of a config's keys, in file order (raises ValueError on a value written over
    several lines, whose comment has no place, and yaml.YAMLError on invalid YAML)."""
    lines = [line.rstrip(EOL) for line in _split_lines(text)]
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    found: List[HelpComment] = []
    seen: set = set()

    def heading_of(path: Tuple[str, ...], line: int) -> HelpComment:
        first = line
        while first > 0 and _COMMENT_LINE.match(lines[first - 1]):
            first -= 1
        if first == line:
            return HelpComment(path, line, True, None)
        return HelpComment(path, line, True, _comment_text(lines[first].lstrip()[1:]), heading=first)

    def trailing_of(path: Tuple[str, ...], key: yaml.Node, value: yaml.Node) -> HelpComment:
        line = key.start_mark.line
        aliased = value.start_mark.index < key.end_mark.index  # '*name': the value is written further up
        inline = not aliased and (isinstance(value, yaml.ScalarNode) or getattr(value, "flow_style", False))
        if inline and value.end_mark.line != line:
            raise ValueError(f"line {line + 1}: the value of {'.'.join(path)} spans several lines; write it on "
                             f"one line so that its comment has a place")
        start = value.end_mark.column if inline else key.end_mark.column
        match = _AFTER_VALUE.fullmatch(lines[line], start)
        if match is None:
            raise ValueError(f"line {line + 1}: cannot tell where the comment of {'.'.join(path)} starts")
        if match.group("text") is None:
            return HelpComment(path, line, False, None)
        return HelpComment(path, line, False, _comment_text(match.group("text")), column=match.start("text") - 1)

    def walk(node: yaml.Node, path: Tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode) or id(node) in seen:
            return
        seen.add(id(node))
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            child = path + (key.value,)
            found.append(heading_of(child, key.start_mark.line) if not path else trailing_of(child, key, value))
            walk(value, child)

    if root is not None:
        walk(root, ())
    return found


def schema_help(text: str) -> Dict[str, str]:
    """dotted key path -> help, for every key of the schema of the config's family."""
    data = yaml.safe_load(text)
    family = motion_model(data.get("model_params") if isinstance(data, Mapping) else None)
    return {dotted: key.doc for dotted, key in iter_schema(family)}


def _agrees(text: Optional[str], help_: str) -> bool:
    if text is None:
        return False
    given, note = split_note(text)
    return given == help_ and (note is None or bool(note.strip()))


def comment_problems(path: Union[str, Path], text: Optional[str] = None) -> List[str]:
    """One line per help comment of the config `path` that does not agree with the schema (empty when
    all agree); `text`: the file's text if already read."""
    text = Path(path).read_text(encoding="utf-8") if text is None else text
    helps = schema_help(text)
    problems = []
    for comment in help_comments(text):
        where = f"{path}:{comment.line + 1}: {comment.dotted}"
        help_ = helps.get(comment.dotted)
        if help_ is None:
            problems.append(f"{where}: not a key of this config's schema")
        elif comment.text is None:
            problems.append(f"{where}: no {'heading' if comment.top_level else 'comment'}; its help is {help_!r}")
        elif not _agrees(comment.text, help_):
            problems.append(f"{where}: the comment {comment.text!r} is not the help {help_!r} "
                            f"(optionally followed by '{NOTE.strip()} <a note on this file>')")
    return problems


def _comment_column(comments: Sequence[HelpComment]) -> int:
    """The column most of the file's trailing comments start at."""
    columns = collections.Counter(c.column for c in comments if c.column is not None)
    return columns.most_common(1)[0][0] if columns else DEFAULT_COLUMN


def rewrite(text: str, helps: Optional[Mapping[str, str]] = None) -> str:
    """`text` with every help comment written from `helps` (dotted path -> help; default: the schema of
    the config's family), each keeping its note; keys without a help are left as they are."""
    helps = schema_help(text) if helps is None else helps
    lines = _split_lines(text)
    comments = help_comments(text)
    column = _comment_column(comments)
    inserts: Dict[int, str] = {}
    for comment in comments:
        help_ = helps.get(comment.dotted)
        if help_ is None:
            continue
        note = split_note(comment.text)[1] if comment.text is not None else None
        wanted = help_ if note is None else f"{help_}{NOTE}{note}"
        if comment.top_level:
            if comment.heading is not None:
                body = lines[comment.heading]
                lines[comment.heading] = f"# {wanted}{body[len(body.rstrip(EOL)):]}"
            else:  # a new heading line, with the line break of the key's line
                key_line = lines[comment.line]
                ending = key_line[len(key_line.rstrip(EOL)):] or "\n"
                inserts[comment.line] = f"# {wanted}{ending}"
            continue
        body = lines[comment.line].rstrip(EOL)
        ending = lines[comment.line][len(body):]
        if comment.column is not None:
            lines[comment.line] = f"{body[:comment.column]}# {wanted}{ending}"
        else:
            body = body.rstrip()
            padding = " " * max(2, column - len(body))
            lines[comment.line] = f"{body}{padding}# {wanted}{ending}"
    for line in sorted(inserts, reverse=True):
        lines.insert(line, inserts[line])
    return "".join(lines)


def write_comments(path: Union[str, Path]) -> bool:
    """Rewrite the help comments of the config file `path` from its schema (atomically); True if the
    file changed. The data the file holds is checked to stay the same."""
    from modules.fileio import atomic_path

    path = Path(path)
    text = path.read_bytes().decode("utf-8")
    new = rewrite(text)
    if new == text:
        return False
    if yaml.safe_load(new) != yaml.safe_load(text):  # cannot happen: rewrite touches comments only
        raise AssertionError(f"{path}: rewriting the comments would change the data")
    with atomic_path(path) as tmp:
        tmp.write_bytes(new.encode("utf-8"))
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.config.comments",
                                     description="Write or check the key comments of YAML configs against the "
                                                 "schemas' help (see the module docstring for the rule).")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the comments from the schema")
    action.add_argument("--check", action="store_true", help="list the comments that disagree (the default)")
    parser.add_argument("files", nargs="*", type=Path, help="config files (default: every file of config/)")
    args = parser.parse_args(argv)
    failed = False
    for file in args.files or find_config_files():
        try:
            if args.write:
                if write_comments(file):
                    print(f"rewrote the comments of {file}")
                continue
            problems = comment_problems(file)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
            problems = [f"{file}: {' '.join(str(e).split())}"]
        for problem in problems:
            print(problem)
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
