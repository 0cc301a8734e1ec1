"""Canvas: callbacks, errbacks, chains, groups and chords on Celery's wire format.

A signature is Celery's dict ``{task, args, kwargs, options, subtask_type,
immutable}``. ``Canvas.apply`` publishes any of them the way a Celery client
would; ``on_success`` / ``on_failure`` do what Celery's worker does after a
task: call callbacks, start the next chain step, propagate a failure to the
rest of the chain, fire errbacks, and return chord parts.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import protocol, states
from .backends.base import ResultBackend, TaskOutcome, exception_to_meta
from .exceptions import ChordError
from .logging import get_logger
from .message import OPTIONS
from .result import exception_from_meta
from .task import Request

if TYPE_CHECKING:
    from .app import App

log = get_logger("canvas")

CHORD_UNLOCK = "celery.chord_unlock"


def _options(sig: dict[str, Any]) -> dict[str, Any]:
    return dict(sig.get("options") or {})


def sig_task_id(sig: dict[str, Any]) -> str | None:
    """The id a signature was frozen with, if any."""
    value = _options(sig).get("task_id")
    return str(value) if value else None


def freeze(sig: dict[str, Any]) -> str:
    """Give a signature a task id (kept in its options) and return it."""
    options = sig.setdefault("options", {}) if sig.get("options") is not None else None
    if options is None:
        options = sig["options"] = {}
    if not options.get("task_id"):
        options["task_id"] = protocol.new_id()
    return str(options["task_id"])


def _queue_name(value: Any) -> str | None:
    # Celery may serialize a kombu Queue as a dict.
    if isinstance(value, dict):
        value = value.get("name")
    return None if value is None else str(value)


def exception_repr(meta: Any) -> str:
    """``repr`` of a stored exception, as ChordError messages show it."""
    return repr(exception_from_meta(meta))


class Canvas:
    """Publishes signatures and runs Celery's after-task canvas steps."""

    def __init__(self, app: App) -> None:
        self.app = app

    # -- publishing ----------------------------------------------------------
    async def apply(self, sig: dict[str, Any], args: Sequence[Any] = (),
                    kwargs: dict[str, Any] | None = None, **options: Any) -> str:
        """Publish ``sig`` with partial ``args`` in front; returns its (group) id."""
        kind = sig.get("subtask_type")
        if kind == "group" and options.get("chain"):
            # A group followed by more steps becomes a chord on the next step.
            chain = list(options.pop("chain"))
            body = dict(chain.pop())
            if chain:
                body["options"] = dict(_options(body), chain=chain)
            return await self._apply_chord(
                {"task": "celery.chord", "subtask_type": "chord", "options": _options(sig),
                 "kwargs": {"header": sig, "body": body}}, args, kwargs, options)
        if kind == "chain":
            return await self._apply_chain(sig, args, kwargs, options)
        if kind == "group":
            return await self._apply_group(sig, args, kwargs, options)
        if kind == "chord":
            return await self._apply_chord(sig, args, kwargs, options)
        return await self._apply_task(sig, args, kwargs, options)

    async def _apply_task(self, sig: dict[str, Any], args: Sequence[Any],
                          kwargs: dict[str, Any] | None, call_options: dict[str, Any]) -> str:
        options = _options(sig)
        options.update({k: v for k, v in call_options.items() if v is not None})
        immutable = bool(sig.get("immutable"))
        all_args = list(sig.get("args") or ()) if immutable else [
            *args, *(sig.get("args") or ())]
        all_kwargs = dict(sig.get("kwargs") or {})
        if kwargs and not immutable:
            all_kwargs.update(kwargs)
        # Celery's option names throughout; the message takes what it knows.
        publish = {k: v for k, v in options.items() if k in OPTIONS}
        publish["queue"] = _queue_name(options.get("queue"))
        if not isinstance(options.get("exchange"), str):
            publish.pop("exchange", None)  # a kombu Exchange sent as a dict
        result = await self.app.send_task(sig["task"], all_args, all_kwargs, **publish)
        return result.id

    async def _apply_chain(self, sig: dict[str, Any], args: Sequence[Any],
                           kwargs: dict[str, Any] | None, options: dict[str, Any]) -> str:
        steps = [dict(s) for s in (sig.get("kwargs") or {}).get("tasks") or ()]
        if not steps:
            return ""
        for step in steps:
            if step.get("subtask_type") is None:
                freeze(step)
        first, rest = steps[0], steps[1:]
        if first.get("subtask_type") == "group" and rest:
            # group | next is a chord whose body is the next step (as Celery upgrades it).
            body = rest[0]
            body.setdefault("options", {})
            if rest[1:]:
                body["options"]["chain"] = list(reversed(rest[1:]))
            chord = {"task": "celery.chord", "subtask_type": "chord", "immutable": False,
                     "args": [], "options": _options(first),
                     "kwargs": {"header": first, "body": body}}
            return await self._apply_chord(chord, args, kwargs, options)
        if rest:
            options = dict(options, chain=list(reversed(rest)))
        await self.apply(first, args, kwargs, **options)
        last = steps[-1]
        return sig_task_id(last) or ""

    def _group_tasks(self, sig: dict[str, Any]) -> list[dict[str, Any]]:
        tasks = (sig.get("kwargs") or {}).get("tasks") or ()
        if isinstance(tasks, dict):  # a single signature in a group
            tasks = [tasks]
        return [dict(t) for t in tasks]

    async def _apply_group(self, sig: dict[str, Any], args: Sequence[Any],
                           kwargs: dict[str, Any] | None, options: dict[str, Any]) -> str:
        group_id = options.pop("task_id", None) or sig_task_id(sig) or protocol.new_id()
        for index, task in enumerate(self._group_tasks(sig)):
            await self.apply(task, args, kwargs, group_id=group_id, group_index=index,
                             **options)
        return str(group_id)

    async def _apply_chord(self, sig: dict[str, Any], args: Sequence[Any],
                           kwargs: dict[str, Any] | None, options: dict[str, Any]) -> str:
        params = sig.get("kwargs") or {}
        header = params.get("header")
        body = dict(params.get("body") or {})
        header_sig = header if isinstance(header, dict) else {
            "subtask_type": "group", "kwargs": {"tasks": header or []}, "options": {}}
        tasks = self._group_tasks(header_sig)
        group_id = sig_task_id(header_sig) or protocol.new_id()
        body_id = freeze(body)
        if options.get("chain"):
            # Steps after the chord follow its body.
            body["options"]["chain"] = options.pop("chain")
        for key in ("parent_id", "root_id"):
            if options.get(key):
                body["options"].setdefault(key, options[key])
        backend = await self.app.get_backend()
        await backend.set_chord_size(group_id, len(tasks))
        ids = []
        for index, task in enumerate(tasks):
            if task.get("subtask_type") is None:
                ids.append(freeze(task))
            await self.apply(task, args, kwargs, group_id=group_id, group_index=index,
                             chord=body, **options)
        if backend.needs_chord_unlock:
            await self.app.send_task(
                CHORD_UNLOCK, [group_id, body],
                {"interval": None, "max_retries": None,
                 "result": [[[tid, None], None] for tid in ids]},
                countdown=1, parent_id=options.get("parent_id"),
                root_id=options.get("root_id"))
        return body_id

    # -- after a task --------------------------------------------------------
    async def on_success(self, request: Request, retval: Any) -> list[Any]:
        """Celery's success path: callbacks, then the next chain step.

        Returns the children to store with the result (simple tasks only).
        """
        parent, root = request.id, request.root_id or request.id
        children: list[Any] = []
        for callback in request.callbacks or ():
            child = await self.apply(callback, (retval,), parent_id=parent, root_id=root)
            if callback.get("subtask_type") is None:
                children.append([[child, None], None])
        if request.chain:
            chain = list(request.chain)
            nxt = chain.pop()
            child = await self.apply(nxt, (retval,), chain=chain or None, parent_id=parent,
                                     root_id=root)
            if nxt.get("subtask_type") is None:
                children.append([[child, None], None])
        return children

    async def on_failure(self, request: Request, exc: BaseException, traceback: str | None,
                         store: bool) -> None:
        """Celery's failure path after FAILURE is stored: fail the chain, then errbacks."""
        backend = await self.app.get_backend() if store else None
        if backend is not None:
            await self._fail_chain(backend, request.chain or [], exc, traceback)
        if request.errbacks:
            await self.call_errbacks(request, exc, traceback)

    async def _fail_chain(self, backend: ResultBackend, chain: list[dict[str, Any]],
                          exc: BaseException, traceback: str | None) -> None:
        pending = list(chain)
        meta = exception_to_meta(exc)
        while pending:
            element = pending.pop(0)
            options = _options(element)
            task_id = options.get("task_id")
            if task_id:
                ctx = Request(id=task_id, task=element.get("task", ""), args=[], kwargs={},
                              group=options.get("group_id"),
                              group_index=options.get("group_index"),
                              chord=options.get("chord"))
                await backend.store(TaskOutcome(task_id, states.FAILURE, meta, traceback, ctx))
                if ctx.chord and ctx.group:
                    await self.chord_part_return(ctx, states.FAILURE, meta)
            if element.get("subtask_type") == "chord":
                body = (element.get("kwargs") or {}).get("body")
                if body:
                    pending.append(body)

    async def call_errbacks(self, request: Request, exc: BaseException,
                            traceback: str | None) -> None:
        """New-style errbacks registered here run in-process; the rest are published."""
        old_style = []
        for errback in request.errbacks or ():
            task = self.app.tasks.get(errback.get("task", ""))
            if task is not None and _takes_request(task, errback):
                # Called like a signature: failure details first, then its own arguments.
                args = [] if errback.get("immutable") else [request, exc, traceback]
                try:
                    value = task.run(*args, *(errback.get("args") or ()),
                                     **(errback.get("kwargs") or {}))
                    if inspect.isawaitable(value):
                        await value
                except Exception as err:
                    log.exception("errback raised", errback=errback.get("task"),
                                  task_id=request.id, error=repr(err))
            else:
                old_style.append(errback)
        for errback in old_style:
            await self.apply(errback, (request.id,), parent_id=request.id,
                             root_id=request.root_id or request.id)

    # -- chords --------------------------------------------------------------
    async def chord_part_return(self, request: Request, state: str, result: Any) -> None:
        """Count one finished header task; the last one starts the body."""
        backend = await self.app.get_backend()
        join = await backend.chord_part_return(request, state, result)
        if join is None:
            return
        body = request.chord or {}
        try:
            await self.finish_chord(body, join.results)
        finally:
            await join.done()

    async def finish_chord(self, body: dict[str, Any],
                           results: list[tuple[str, str, Any]]) -> None:
        """All header results are in (ordered): call the body, or fail it with ChordError."""
        for task_id, state, value in results:
            if state in states.PROPAGATE_STATES:
                await self.fail_chord_body(
                    body, ChordError(f"Dependency {task_id} raised {exception_repr(value)}"))
                return
        await self.apply(body, ([value for _, _, value in results],))

    async def fail_chord_body(self, body: dict[str, Any], error: ChordError) -> None:
        """Store the ChordError under the body's id and call the body's errbacks."""
        body_id = sig_task_id(body)
        backend = await self.app.get_backend()
        if body_id:
            ctx = Request(id=body_id, task=body.get("task", ""), args=[], kwargs={},
                          errbacks=_options(body).get("link_error"))
            await backend.store(TaskOutcome(body_id, states.FAILURE,
                                            exception_to_meta(error), None, ctx))
            if ctx.errbacks:
                await self.call_errbacks(ctx, error, None)


def _takes_request(task: Any, errback: dict[str, Any]) -> bool:
    """Celery's test for a new-style errback: its function takes more than one argument."""
    if task.bind:
        return False
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    bound = 0 if errback.get("immutable") else len(errback.get("args") or ())
    return len(positional) - bound > 1
