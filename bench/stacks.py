"""Summarise py-spy's raw collapsed stacks: where the CPU went, by package.

    python -m bench.stacks PROFILE.txt [MORE.txt ...] [--top 25]

py-spy ``record --format raw`` writes one line per distinct stack,
``frame;frame;...;leaf COUNT``, each frame ``function (path:line)``. Flame
graphs are hard to diff in review, so this prints short tables instead: self
time per package (the leaf frame's), inclusive time per package (any frame of
the stack) and the hottest leaf functions. Idle samples (the loop waiting in
``select``/``epoll``) are counted apart, so shares are of busy time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")
_IDLE = ("select (selectors.py", "poll (selectors.py", "run_once (uvloop",
         "wait (threading.py", "_worker (concurrent/futures/thread.py")


def package(path: str) -> str:
    """The top-level package or module a source path belongs to.

    Full paths (py-spy ``--full-filenames``) mark the standard library ``stdlib:``.
    """
    if "site-packages/" in path:
        top = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return top.removesuffix(".py").split(".")[0]
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib:" + rest.split("/", 1)[0].removesuffix(".py")
    for name in ("asyncworker", "bench"):
        if f"/{name}/" in path:
            return name
    # py-spy's default short form: the path below its sys.path entry.
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def parse(lines: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    """``(frames, count)`` for each stack line."""
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarise(paths: list[Path], top: int) -> str:
    """The three tables as Markdown."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    busy = idle = 0
    for path in paths:
        for frames, count in parse(path.read_text().splitlines()):
            leaf = frames[-1]
            if any(leaf.startswith(mark) for mark in _IDLE):
                idle += count
                continue
            busy += count
            parsed = [m for f in frames if (m := _FRAME.match(f))]
            if not parsed:
                continue
            own[package(parsed[-1]["path"])] += count
            leaves[f"{parsed[-1]['func']} ({parsed[-1]['path'].rsplit('/', 2)[-1]})"] += count
            for pkg in {package(m["path"]) for m in parsed}:
                inclusive[pkg] += count
    total = max(busy, 1)
    out = [f"Busy samples: {busy} (idle, left out: {idle}); files: "
           + ", ".join(p.name for p in paths), ""]
    for title, counts in (("Self time by package", own),
                          ("Inclusive time by package (any frame)", inclusive),
                          ("Hottest leaf functions (self time)", leaves)):
        out += [f"#### {title}", "", "| | % of busy |", "|---|---:|"]
        out += [f"| {name} | {100 * n / total:.1f} |" for name, n in counts.most_common(top)]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    print(summarise(args.profiles, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
