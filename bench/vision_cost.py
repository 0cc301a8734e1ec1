"""CPU per vision task in the client libraries alone, on either event loop.

The ``vision`` row of ``python -m bench`` gives the whole worker's CPU per task;
this runs only the pipeline's step (S3 get, one model call, S3 put) in a child
process, with no broker and no result backend, so the figure is what the S3
and HTTP clients cost and a change to them shows plainly::

    python -m bench.vision_cost --tasks 1500 --loops asyncio,uvloop --rounds 3
    python -m bench.vision_cost --baseline HEAD~1     # this tree ÷ that commit
    python -m bench.vision_cost --s3-server http://127.0.0.1:9000   # an S3 already running

Children alternate (new, old, new, old ...) so drift in the machine's speed falls
on both sides alike; each prints its process CPU (every thread) per task. The S3
server and the model API run in processes of their own, so their CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import baseline, servers

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-images"
IMAGES = 50


async def _run_tasks(tasks: int, concurrency: int, images: list[str]) -> dict[str, float]:
    """``tasks`` pipeline steps, ``concurrency`` at a time; CPU and wall time after a warm-up."""
    from asyncworker.contrib.vision import pipeline
    from asyncworker.contrib.vision.settings import VisionSettings

    settings = VisionSettings(
        s3_endpoint_url=os.environ["BENCH_S3_URL"], s3_bucket=BUCKET,
        s3_access_key_id=servers.s3_credentials()[0],
        s3_secret_access_key=servers.s3_credentials()[1],
        gpt_base_url=os.environ["BENCH_GPT_URL"], gpt_api_key="sk-bench", gpt_model="gpt-5-bench")
    async with pipeline.open_clients(settings, concurrency) as clients:
        async def step(i: int) -> None:
            await pipeline.analyse_image(clients, images[i % len(images)], f"analysis/{i}.json")

        async def batch(start: int, count: int) -> None:
            queue = iter(range(start, start + count))

            async def lane() -> None:
                for i in queue:
                    await step(i)

            await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))

        await batch(0, min(concurrency, tasks))  # connections open, caches fill
        cpu, wall = time.process_time(), time.perf_counter()
        await batch(concurrency, tasks)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_ms_per_task": cpu * 1000 / tasks, "tasks_per_s": tasks / wall}


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints its figures as JSON."""
    images = [f"s3://{BUCKET}/images/{i}.png" for i in range(IMAGES)]
    coro = _run_tasks(args.tasks, args.concurrency, images)
    if args.loop == "uvloop":
        import uvloop

        figures = uvloop.run(coro)
    else:
        figures = asyncio.run(coro)
    print(json.dumps(figures))


def seed(endpoint: str) -> None:
    """The bucket and the images the tasks read."""
    servers.create_bucket(endpoint, BUCKET)
    client = servers.s3_client(endpoint)
    for i in range(IMAGES):
        client.put_object(Bucket=BUCKET, Key=f"images/{i}.png", ContentType="image/png",
                          Body=b"\x89PNG\r\n\x1a\n" + os.urandom(20_000))


@contextlib.contextmanager
def _stopping(server: servers.Server) -> Iterator[servers.Server]:
    try:
        yield server
    finally:
        server.stop()


def measure(args: argparse.Namespace, env: dict[str, str], loop: str,
            profile: Path | None) -> dict[str, float]:
    """Run one child; with ``profile``, under py-spy (raw collapsed stacks)."""
    command = [sys.executable, "-P", "-m", "bench.vision_cost", "--child", "--loop", loop,
               "--tasks", str(args.tasks), "--concurrency", str(args.concurrency)]
    if profile is not None:
        spy = str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--format", "raw", "--rate", "200", "-o", str(profile),
                   "--", *command]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"vision_cost child failed: {done.stderr[-3000:]}")
    # py-spy writes lines of its own; the child's figures are the JSON one.
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
    figures: dict[str, float] = json.loads(line)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.vision_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", default="lognormal:1.0:0.2",
                        help="the fake model API's latency (as python -m bench uses)")
    parser.add_argument("--s3-server", default="", metavar="KIND|URL",
                        help="moto (default), moto-keepalive, or the URL of an S3 server "
                             "already running (as python -m bench --s3-server)")
    parser.add_argument("--baseline", default="", metavar="REF",
                        help="also run asyncworker from this git revision, interleaved")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record each child under py-spy into DIR (raw collapsed stacks)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    with contextlib.ExitStack() as stack:
        s3_url = stack.enter_context(_stopping(servers.s3_server(args.s3_server))).url
        gpt = stack.enter_context(_stopping(servers.start_fake_openai("--latency", args.latency)))
        seed(s3_url)
        trees: list[tuple[str, Path]] = [("new", REPO)]
        if args.baseline:
            tree = stack.enter_context(baseline.checkout(REPO, args.baseline))
            trees.append((f"@{tree.commit}", tree.path))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
        base_env.update(BENCH_S3_URL=s3_url, BENCH_GPT_URL=gpt.url)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        figures: dict[tuple[str, str], list[dict[str, float]]] = {}
        for n in range(args.rounds):
            for loop in args.loops.split(","):
                for name, first in trees:
                    env = {**base_env, "PYTHONPATH": baseline.python_path(
                        first, REPO, os.environ.get("PYTHONPATH"))}
                    where = (args.profile / f"{name.strip('@')}-{loop}-{n}.txt"
                             if args.profile else None)
                    got = measure(args, env, loop, where)
                    figures.setdefault((name, loop), []).append(got)
                    print(f"round {n + 1} {name:>9} {loop:<7} "
                          f"{got['cpu_ms_per_task']:.3f} ms/task  {got['tasks_per_s']:.0f}/s",
                          file=sys.stderr)
    report(figures, [name for name, _ in trees], args)
    return 0


def report(figures: dict[tuple[str, str], list[dict[str, float]]], names: list[str],
           args: argparse.Namespace) -> None:
    """A Markdown table: median CPU per task, and new ÷ old per loop."""
    print(f"`python -m bench.vision_cost --tasks {args.tasks} --concurrency {args.concurrency} "
          f"--rounds {args.rounds} --loops {args.loops}"
          + (f" --baseline {args.baseline}" if args.baseline else "")
          + (f" --s3-server {args.s3_server}" if args.s3_server else "") + "`\n")
    print("| Tree | Loop | CPU ms/task (median) | runs | tasks/s |")
    print("|---|---|---:|---|---:|")
    for (name, loop), runs in figures.items():
        cpu = [r["cpu_ms_per_task"] for r in runs]
        rate = statistics.median(r["tasks_per_s"] for r in runs)
        print(f"| {name} | {loop} | {statistics.median(cpu):.3f} | "
              f"{', '.join(f'{c:.2f}' for c in cpu)} | {rate:.0f} |")
    if len(names) > 1:
        print()
        for loop in args.loops.split(","):
            new = statistics.median(r["cpu_ms_per_task"] for r in figures[(names[0], loop)])
            old = statistics.median(r["cpu_ms_per_task"] for r in figures[(names[1], loop)])
            print(f"- {loop}: CPU per task new ÷ {names[1]} = {new / old:.2f}×")


if __name__ == "__main__":
    sys.exit(main())
