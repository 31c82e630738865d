"""`lmpipe`: run the pipeline or one stage, show the plan, list, trace and verify artifacts.

lmpipe run                      # the whole pipeline on the tiny preset
lmpipe run sft --set sft.lr=1e-4 --force
lmpipe run reward && lmpipe run rl   # the optional RLHF stages (not part of `lmpipe run`)
lmpipe plan --config my.yaml
lmpipe lineage checkpoints/dpo/tiny-0123456789ab
lmpipe verify  checkpoints/dpo/tiny-0123456789ab
lmpipe compare checkpoints/sft/tiny-0123456789ab 9f8e7d6c5b4a   # paths or fingerprints
lmpipe run --home s3://bucket/lmpipe   # artifacts on object storage (tasks/remote.py)
lmpipe server --port 4200       # the Prefect server + UI (docs/operations.md)
lmpipe setup-server             # work pools cpu/gpu + the crash-detection automation
lmpipe generate checkpoints/sft/tiny-0123456789ab "Save changes" --task translate
lmpipe predict  checkpoints/heads/tiny-0123456789ab/pair --file pairs.jsonl

A failure prints one `lmpipe: error: ...` line; add --debug (anywhere) for the traceback.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import flows  # noqa: F401  (sets offline/telemetry defaults before anything heavy loads)
from schemas.config import ConfigError, clip, load_config
from schemas.stages import ORDER, PIPELINE
from schemas.templates import GENERATE_TASKS
from tasks import compare, lineage, remote
from tasks.artifacts import (
    MANIFEST,
    ArtifactError,
    DiskFull,
    Home,
    published,
    read_manifest,
    skipped_intact,
    verify,
)
from tasks.contracts import ContractError
from tasks.plan import plan_pipeline
from tasks.report import summary


def main(argv: list[str] | None = None) -> int:
    """Run one command; a failure is one `lmpipe: error: ...` line naming the file or field
    (rc 2 for bad input, 1 for anything else), with the traceback only under `--debug`."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    args = parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return args.func(args)
    except (ConfigError, ArtifactError, ContractError, DiskFull, FileNotFoundError, PermissionError) as e:
        if debug:
            raise
        print(f"lmpipe: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        print(
            f"lmpipe: error: {type(e).__name__}: {clip(str(e))} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(required=True)
    add_build_commands(sub)
    add_artifact_commands(sub)
    add_server_commands(sub)
    add_inference_commands(sub)
    return p


def with_config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", default="tiny", help="preset name in configs/ or a YAML file (default: tiny)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.FIELD=VALUE")
    sp.add_argument("--home", help="artifact home (default: $LMPIPE_HOME, else data/artifacts + checkpoints)")


def add_build_commands(sub) -> None:
    """run, plan"""
    run = sub.add_parser(
        "run",
        help="run the pipeline, or one stage (optional ones too: encoder) on the latest matching inputs",
    )
    run.add_argument("stage", nargs="?", choices=ORDER)
    run.add_argument("--force", action="store_true", help="rebuild even when up to date")
    run.add_argument(
        "--verify",
        action="store_true",
        help="hash every file of the artifacts it skips (default: sizes, and hashes of files modified since)",
    )
    with_config(run)
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="show which stages would run, and why")
    with_config(plan)
    plan.set_defaults(func=cmd_plan)


def add_artifact_commands(sub) -> None:
    """list, lineage, verify, compare"""
    ls = sub.add_parser("list", help="list published artifacts")
    ls.add_argument("--home")
    ls.set_defaults(func=cmd_list)

    lin = sub.add_parser("lineage", help="what made an artifact (down to raw files) and what it was used for")
    lin.add_argument("target", type=Path, help="an artifact directory, or a raw file to see what used it")
    lin.add_argument("--json", action="store_true", help="machine-readable output")
    lin.add_argument("--home")
    lin.set_defaults(func=cmd_lineage)

    ver = sub.add_parser("verify", help="recheck every file hash of an artifact and its ancestors")
    ver.add_argument("artifact", type=Path)
    ver.add_argument("--home")
    ver.set_defaults(func=cmd_verify)

    cmp = sub.add_parser(
        "compare", help="builds side by side: config fields and inputs that differ, final metrics"
    )
    cmp.add_argument(
        "artifacts", nargs="+", metavar="ARTIFACT", help="artifact paths or fingerprints (2 or more)"
    )
    cmp.add_argument("--json", action="store_true", help="machine-readable output")
    cmp.add_argument("--home")
    cmp.set_defaults(func=cmd_compare)


def add_server_commands(sub) -> None:
    """server, setup-server, deploy"""
    srv = sub.add_parser("server", help="start the Prefect server and UI (SQLite unless configured)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=4200)
    srv.set_defaults(func=cmd_server)

    setup = sub.add_parser(
        "setup-server", help="create the cpu/gpu work pools and the automation that crashes dead runs"
    )
    setup.add_argument(
        "--within", type=int, help="seconds without a heartbeat before Crashed (default: 3 heartbeats)"
    )
    setup.set_defaults(func=cmd_setup_server)

    deploy = sub.add_parser(
        "deploy", help="prefect deploy --all from the checkout, keeping schedules someone switched on or off"
    )
    deploy.set_defaults(func=cmd_deploy)


def add_inference_commands(sub) -> None:
    """generate, predict"""
    gen = sub.add_parser("generate", help="continue or answer prompts with a decoder or seq2seq checkpoint")
    gen.add_argument("checkpoint", type=Path)
    gen.add_argument("text", nargs="?", help="the prompt text (or --file)")
    gen.add_argument("--file", type=Path, help="one prompt per line (JSON objects for multi-field tasks)")
    gen.add_argument("--task", choices=sorted(GENERATE_TASKS), help="wrap the text in the task's template")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.8, help="with --sample (default 0.8)")
    gen.add_argument("--top-k", type=int, default=0, help="with --sample: keep the k likeliest tokens")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.set_defaults(func=lambda args: with_inputs(cmd_generate, args))

    pred = sub.add_parser("predict", help="run an encoder head (checkpoints/heads/<name>/<head>) on inputs")
    pred.add_argument("checkpoint", type=Path)
    pred.add_argument("text", nargs="?", help="the input text (or --file)")
    pred.add_argument("--pair", help="second text, for a sentence-pair head")
    pred.add_argument("--question", help="the question, for a QA head (the text is the context)")
    pred.add_argument("--file", type=Path, help="one input per line: text, or JSON with the head's fields")
    pred.set_defaults(func=lambda args: with_inputs(cmd_predict, args))


def cmd_run(args) -> int:
    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)  # fail fast, before Prefect starts
    if not args.force:
        home = open_home(args.home)
        plans = plan_pipeline(cfg, home, (args.stage,) if args.stage else PIPELINE)
        for p in plans:  # what will be skipped is used as it is: it must still be what was built
            if p.up_to_date:
                skipped_intact(p.path, full=args.verify)
        if all(p.up_to_date for p in plans):
            # Nothing to build: answer from the manifests without starting a Prefect server.
            for p in plans if home.remote else ():
                remote.push(home, p.stage, p.path)  # a cache built by a killed push is completed
            print_summary(
                [summary(p.stage, "skipped", read_manifest(p.path), 0.0, p.path) for p in plans],
                time.perf_counter() - started,
            )
            return 0
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import STAGE_FLOWS, pipeline

    if not args.debug:
        quiet_tracebacks()
    if not PREFECT_API_URL.value():  # a flow run will start a temporary server: not past our death
        from cli.server import tie_temporary_server

        tie_temporary_server()
    params = {"config": cfg, "force": args.force, "home": args.home}  # the overrides are applied
    results = [STAGE_FLOWS[args.stage](**params)] if args.stage else pipeline(**params)
    print_summary(results, time.perf_counter() - started)
    return 0


class _NoTraceback(logging.Formatter):
    """A console formatter that leaves out the traceback of a logged exception."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(bare)


def quiet_tracebacks() -> None:
    """Prefect's console log prints a failed run's traceback (for the task, then the flow)
    before our one `lmpipe: error:` line; without --debug, the console shows the messages only.
    The Prefect UI still gets the tracebacks: only the console handler's formatter changes."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setFormatter(_NoTraceback(handler.formatter))


def print_summary(results: list[dict], seconds: float) -> None:
    print(f"\n{'stage':<10} {'status':<8} {'time':>7}  figures")
    for r in results:
        print(f"{r['stage']:<10} {r['status']:<8} {r['seconds']:>6.1f}s  {r['figures']}")
        print(f"{'':<28}{r['path']}")
    print(f"total {seconds:.1f}s")


def cmd_plan(args) -> int:
    for p in plan_pipeline(load_config(args.config, args.overrides), open_home(args.home), PIPELINE):
        why = "up to date" if p.up_to_date else "; ".join(p.reasons)
        print(f"{p.stage:<10} {p.action:<5} {p.fingerprint[:12]}  {why}")
    return 0


def open_home(home: str | None) -> Home:
    """The artifact home; a remote one's local cache is first brought up to date."""
    h = Home.resolve(home)
    if h.remote:
        remote.pull(h)
    return h


def cmd_list(args) -> int:
    home = open_home(args.home)
    for stage in ORDER:
        for path, m in published(home, stage):
            print(f"{stage:<10} {m.name:<12} {m.fingerprint[:12]}  {m.created_at[:19]}  {path}")
    return 0


def cmd_lineage(args) -> int:
    target = args.target.resolve()
    home = open_home(args.home)
    up = None if target.is_file() else lineage.upstream(target, home)
    down = lineage.downstream(home, target)
    if args.json:
        print(json.dumps({"upstream": up, "downstream": down}, indent=2))
        return 0
    if up:
        print("\n".join(lineage.render(up)))
    print(f"\nused by ({len(down)}):" if down else "\nused by: nothing published in this home")
    for d in down:
        print(f"  {d['stage']} {d['name']} fp={d['fingerprint'][:12]} {d['path']}")
    return 0


def cmd_verify(args) -> int:
    problems = verify(args.artifact.resolve(), open_home(args.home))
    for p in problems:
        print(f"FAILED {p}")
    print("ok: every file matches its manifest" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_compare(args) -> int:
    if len(args.artifacts) < 2:
        raise ArtifactError("compare needs two artifacts or more")
    home = open_home(args.home)
    result = compare.compare([compare.resolve(a, home) for a in args.artifacts])
    print(json.dumps(result, indent=2) if args.json else "\n".join(compare.render(result)))
    return 0


def with_inputs(command, args) -> int:
    """Run an inference command; unusable inputs are reported like every other user error."""
    from tasks.inference import InputError

    try:
        return command(args)
    except InputError as e:
        print(f"lmpipe: error: {e}", file=sys.stderr)
        return 2


def intact(checkpoint: Path) -> None:
    """The quick integrity check of the artifact holding `checkpoint` (it, or a head's parent)."""
    for d in (checkpoint, checkpoint.parent):
        if (d / MANIFEST).is_file():
            skipped_intact(d)
            return


def cmd_generate(args) -> int:
    import torch

    from tasks import inference

    intact(args.checkpoint)
    model, tok = inference.load_generator(args.checkpoint)
    generator = torch.Generator().manual_seed(args.seed)
    for n, item in enumerate(inference.read_inputs(args.text, args.file), 1):
        prompt = inference.prompt_ids(tok, item, args.task, f"{args.file or 'input'}:{n}")
        tokens = inference.complete(
            model,
            prompt,
            args.max_new_tokens,
            torch.device("cpu"),
            args.temperature if args.sample else 0.0,
            args.top_k,
            generator,
        )
        inference.stream_text(tok, tokens, lambda s: print(s, end="", flush=True))
        print()
    return 0


def cmd_predict(args) -> int:
    from tasks import inference

    intact(args.checkpoint)
    model, tok, spec = inference.load_head(args.checkpoint)
    items = inference.read_inputs(args.text, args.file)
    if args.pair is not None or args.question is not None:
        items = [{"text": items[0], "text_pair": args.pair, "context": items[0], "question": args.question}]
    for n, item in enumerate(items, 1):
        print(
            json.dumps(
                inference.predict_one(model, tok, spec, item, f"{args.file or 'input'}:{n}"),
                ensure_ascii=False,
            )
        )
    return 0


def cmd_server(args) -> int:
    from cli.server import run_server

    return run_server(args.host, args.port)


def cmd_setup_server(args) -> int:
    import asyncio

    from cli.server import default_within_s, setup_server

    for line in asyncio.run(setup_server(args.within or default_within_s())):
        print(line)
    return 0


def cmd_deploy(args) -> int:
    import asyncio

    from cli.server import deploy_keeping_schedules

    for line in asyncio.run(deploy_keeping_schedules()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
