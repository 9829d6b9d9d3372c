"""Reading an issue's front matter: the YAML between the `---` lines, bounded.

Front matter is small and flat, so whatever a small file could use to grow huge or deep is
refused with the line where it stands, before or while YAML reads it: a front matter over
MAX_FRONT_MATTER_BYTES, anchors and aliases (a 1.5 KB alias bomb expands to gigabytes),
explicit tags (`!!timestamp`, `!!binary`, ...: some crash PyYAML's constructors),
nesting deeper than MAX_NESTING (a RecursionError otherwise), numbers of more than
MAX_NUMBER_DIGITS digits (Python refuses to read very long ones). Dates stay text (the
issue parses them, naming the line) and yes/no/on/off stay text, as in YAML 1.2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from spark_mail.errors import IssueError

FENCE = "---"
MAX_FRONT_MATTER_BYTES = 256 * 1024
MAX_NESTING = 8  # the format nests 3 deep (poll: options: [...])
MAX_NUMBER_DIGITS = 30  # longer digit strings are refused before int() reads them
REFUSED = "spark-mail refuses this front matter"


def split_front_matter(path: Path, text: str) -> tuple[str, str, int]:
    """Return (yaml text, markdown body, line number where the body starts)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise IssueError(
            path,
            "no front matter: the file must start with a '---' line",
            line=1,
            hint="add '---', then 'title:' and 'date:' lines, then '---' before the text",
        )
    for index in range(1, len(lines)):
        if lines[index].strip() == FENCE:
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise IssueError(
        path, "front matter is never closed", line=1, hint="add a '---' line after the front matter"
    )


def key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path in the YAML to its (0-based, within the YAML) line."""
    found: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            found[key] = key_node.start_mark.line
            found.update(key_lines(value_node, key))
    return found


# libyaml's parser and composer where PyYAML has them (15x faster on a front matter, the
# largest part of a warm build); the limits are checked on its event stream first (C code
# cannot call the Python checks while it composes), the constructors stay Python.
_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_FAST):  # type: ignore[misc,valid-type]
    """SafeLoader with the number limit; dates and yes/no stay text (a poll option "Yes"
    stays "Yes")."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(str(node.value)) > MAX_NUMBER_DIGITS:
            raise _refused(
                f"has a number of {len(str(node.value))} digits",
                node.start_mark,
                "no field takes a number that long; quote it if it is text",
            )
        return int(super().construct_yaml_int(node))


def _refuse_unbounded(front: str) -> None:
    """The limits of the module docstring, on the parser's events, before anything is
    composed (each refusal a YAML error with its mark, see _refused)."""
    depth = 0
    for event in yaml.parse(front, Loader=_FAST):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _refused(
                "uses a YAML anchor or alias ('&name' / '*name')",
                event.start_mark,
                "write each value out in full: issue front matter has no use for them",
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise _refused(
                f"uses the explicit YAML tag {tag!r}",
                event.start_mark,
                "remove the '!...' tag: write the value plainly (quote it to make it text)",
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise _refused(
                    f"is nested more than {MAX_NESTING} levels deep",
                    event.start_mark,
                    "see the README for the fields and their shapes",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _refused(problem: str, mark: Any, hint: str) -> yaml.MarkedYAMLError:
    """A refusal (see _Loader) as PyYAML's own error type, told apart by its context."""
    return yaml.MarkedYAMLError(REFUSED, None, problem, mark, hint)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_TIMESTAMP, _BOOL = "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool"
_TRUE_FALSE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, _TRUE_FALSE if tag == _BOOL else regexp)
        for tag, regexp in resolvers
        if tag != _TIMESTAMP
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_front_matter(path: Path, front: str) -> tuple[yaml.Node | None, Any]:
    """The front matter's YAML: its node tree (for line numbers) and its data."""
    size = len(front.encode())
    if size > MAX_FRONT_MATTER_BYTES:
        raise IssueError(
            path,
            f"the front matter is {size // 1024:,} KB; at most {MAX_FRONT_MATTER_BYTES // 1024} "
            "KB is read",
            line=1,
            hint="keep the article below the closing '---', not in the front matter",
        )
    loader: _Loader | None = None
    try:
        _refuse_unbounded(front)
        loader = _Loader(front)  # its reader already refuses some characters
        node = loader.get_single_node()
        return node, (None if node is None else loader.construct_document(node))
    except yaml.YAMLError as exc:
        raise _issue_error(path, exc) from None
    finally:
        if loader is not None:
            loader.dispose()


def _issue_error(path: Path, exc: yaml.YAMLError) -> IssueError:
    """A YAML error as one line: a refusal of ours (see _refused), or a syntax error."""
    mark = getattr(exc, "problem_mark", None)
    line = None if mark is None else mark.line + 2
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
    if getattr(exc, "context", None) == REFUSED:
        hint = getattr(exc, "note", None)
        return IssueError(path, f"the front matter {problem}", line=line, hint=hint)
    return IssueError(
        path,
        f"front matter is not valid YAML: {problem}",
        line=line,
        hint="check indentation and quote values that contain ':' or '#'",
    )
