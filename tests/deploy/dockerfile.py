"""Just enough of a Dockerfile reader to check the facts the image depends on.

No Docker engine runs in CI, so the image is never built there; hadolint lints
the file, and the tests read it with this: instructions (continuation lines
joined, comments dropped) grouped by stage, exec-form arguments as lists, and
``ENV`` as the environment a container would start with.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    text: str  # the arguments as written (flags included), on one line

    def flags(self) -> dict[str, str]:
        """The ``--name=value`` flags (``COPY --from=``, ``HEALTHCHECK --interval=``)."""
        return dict(re.findall(r"--([\w-]+)=(\S+)", self.text.split(" CMD ")[0]))

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ``ENTRYPOINT``, ``CMD`` or ``HEALTHCHECK CMD``
        (``ValueError`` when it is in shell form)."""
        body = self.text.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.text
        value = json.loads(body.strip())
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"{self.keyword} is not in exec form: {self.text}")
        return value


@dataclass(slots=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        """The one that counts (the last ``CMD``, ``USER``, ...)."""
        found = self.all(keyword)
        if not found:
            raise AssertionError(f"no {keyword} in the stage FROM {self.base}")
        return found[-1]

    def env(self, inherited: dict[str, str]) -> dict[str, str]:
        """``inherited`` with this stage's ``ENV`` applied in order (``$VAR`` expanded)."""
        env = dict(inherited)
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.text):
                key, _, value = pair.partition("=")
                env[key] = string.Template(value).safe_substitute(env)
        return env


def instructions(path: Path) -> list[Instruction]:
    """Every instruction in ``path``, in order."""
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, text = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), text.strip()))
        pending = ""
    return found


def stages(path: Path) -> list[Stage]:
    """The build stages of ``path``, the final image's last."""
    result: list[Stage] = []
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            base, *rest = instruction.text.split()
            named = len(rest) == 2 and rest[0].upper() == "AS"
            result.append(Stage(base, rest[1] if named else None))
        else:
            result[-1].instructions.append(instruction)
    return result
