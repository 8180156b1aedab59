"""The `scifm` command: one subcommand per stage, thin wrappers over `scifm.stages`.

Every subcommand takes `--config recipe.yaml`, dotted overrides (`--train.optimizer.lr 3e-4`
or `train.optimizer.lr=3e-4`) and `--dry-run` (print the resolved, validated sections and
exit). Bad input is reported as one line on stderr with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml
from rich.markup import escape
from rich.table import Table

from scifm.core.errors import ScifmError
from scifm.core.logging import output, setup_logging

if TYPE_CHECKING:
    # Imported when a command runs: `scifm.cli` stays light (no torch), because the worker
    # processes of `scifm tokenize` re-import the main module when they start.
    from scifm.recipe import Recipe

_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate dotted overrides (`--a.b v`, `--a.b=v`, `a.b=v`) from ordinary arguments."""
    rest, overrides = [], []
    items = list(argv)
    while items:
        item = items.pop(0)
        if item.startswith("--") and "." in item.split("=", 1)[0]:
            if "=" in item:
                overrides.append(item[2:])
            elif items:
                overrides.append(f"{item[2:]}={items.pop(0)}")
            else:
                raise ScifmError(f"override {item} has no value: write {item} VALUE")
        elif _OVERRIDE.match(item):
            overrides.append(item)
        else:
            rest.append(item)
    return rest, overrides


def _print_yaml(data: dict[str, Any]) -> None:
    output.print(yaml.safe_dump(data, sort_keys=False).rstrip(), markup=False, highlight=False)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="recipe YAML (sections: corpus, tokenizer, ...)")
    parser.add_argument("--dry-run", action="store_true", help="print resolved config, exit")


def _load(args: argparse.Namespace, overrides: list[str]) -> Recipe:
    from scifm.recipe import Recipe

    return Recipe.from_yaml(args.config, overrides)


def cmd_demo(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.demo import run_demo

    out = Path(args.out or recipe.train.out_dir)
    recipe.train.out_dir = str(out)
    if args.dry_run:
        _print_yaml(recipe.to_dict())
        return
    run_demo(recipe, out)


def cmd_corpus(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.curate.demo import build_demo_corpora

    if args.dry_run:
        _print_yaml(recipe.sections("corpus"))
        return
    manifest = build_demo_corpora(recipe.corpus, Path(args.out_dir))
    output.print_json(json.dumps(manifest))


def cmd_tokenizer(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.stages import tokenizer_train

    if args.dry_run:
        _print_yaml(recipe.sections("tokenizer"))
        return
    tokenizer = tokenizer_train(recipe.tokenizer, args.inputs, Path(args.out))
    output.print(f"wrote {args.out}: vocabulary {tokenizer.vocab_size}", markup=False)


def cmd_tokenize(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.core.dist import detect_launch
    from scifm.stages import tokenize_corpus

    if args.dry_run:
        _print_yaml(recipe.sections("tokenize"))
        return
    stats = tokenize_corpus(recipe.tokenize, args.inputs, Path(args.tokenizer), Path(args.out))
    if detect_launch().rank == 0:  # every rank returns the same stats; print them once
        output.print_json(json.dumps(stats, default=str))


def cmd_inspect(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.stages import inspect_tokens

    tokenizer = args.tokenizer or recipe.data.tokenizer
    if args.dry_run:
        _print_yaml({"prefix": args.prefix, "tokenizer": tokenizer})
        return
    info = inspect_tokens(args.prefix, Path(tokenizer) if tokenizer else None)
    output.print_json(json.dumps(info))


def cmd_data(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.stages import inspect_mixture

    if args.mixture:
        recipe.data = recipe.data.model_copy(update={"mixture": args.mixture, "corpora": []})
    if args.dry_run:
        _print_yaml(recipe.sections("data"))
        return
    budget = args.tokens or recipe.train.max_tokens
    if budget is None and recipe.train.max_steps is not None:
        budget = recipe.train.max_steps * recipe.train.tokens_per_step(recipe.data.seq_len)
    info = inspect_mixture(recipe.data, budget)
    _print_mixture(info, budget)


def _print_mixture(info: dict[str, Any], budget: int | None) -> None:
    table = Table(title=f"mixture: {info['files']} files, {info['tokens']:,} tokens, "
                  f"seq_len {info['seq_len']}")  # fmt: skip
    columns = ["corpus", "files", "documents", "tokens", "weight", "samples_per_epoch"]
    if budget is not None:
        columns.append("epochs")
        table.caption = f"epochs implied by a budget of {budget:,} tokens"
    for column in columns:
        table.add_column(column, justify="left" if column == "corpus" else "right")
    for row in info["corpora"]:
        table.add_row(*(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns))
    output.print(table)


def cmd_train(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.core.dist import detect_launch
    from scifm.model import flops_per_token
    from scifm.parallel.estimate import memory_per_rank
    from scifm.stages import count_params_on_meta
    from scifm.train import train

    if args.out:
        recipe.train.out_dir = args.out
    if args.dry_run:
        _print_yaml(recipe.sections("data", "model", "train", "parallel"))
        num_params = count_params_on_meta(recipe.model)
        flops = flops_per_token(recipe.model, recipe.data.seq_len)
        output.print(f"num_params: {num_params:,}\nflops_per_token: {flops:.4g}", markup=False)
        layout = recipe.parallel.layout(args.world_size)
        if layout.pp > 1:
            from scifm.parallel.pp import validate_pipeline

            accumulation = recipe.train.accumulation(recipe.data.seq_len, layout.dp)
            validate_pipeline(recipe.model, recipe.parallel, accumulation)
        memory = memory_per_rank(
            recipe.model,
            recipe.parallel,
            args.world_size,
            recipe.train.micro_batch_size,
            recipe.data.seq_len,
            recipe.train.accumulation(recipe.data.seq_len, layout.dp),
        )
        _print_yaml({"per_rank_estimate": memory})
        return
    result = train(recipe.model, recipe.data, recipe.train, parallel=recipe.parallel)
    if not detect_launch().is_main:
        return
    output.print(
        f"trained {result.steps} steps, loss {result.first_loss:.3f} -> {result.last_loss:.3f}, "
        f"{result.tokens_per_s:.0f} tokens/s, checkpoint {result.checkpoint}",
        markup=False,
    )


def cmd_export(args: argparse.Namespace, recipe: Recipe) -> None:
    if args.dry_run:
        _print_yaml({"action": args.action, "source": args.source, "out": args.out})
        return
    if args.action == "verify":
        from scifm.convert.verify import verify_export

        report = verify_export(Path(args.source), recipe.demo.prompts, args.max_new_tokens)
        output.print_json(json.dumps(report))
        return
    from scifm.convert.export import export_hf
    from scifm.core.dist import init_distributed, shutdown_distributed

    if args.out is None:
        raise ScifmError("export hf needs an output directory: scifm export hf CHECKPOINT OUT")
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    info = init_distributed(device="cpu")  # under a launcher, the ranks share the files
    try:
        out = export_hf(Path(args.source), Path(args.out), tokenizer, args.dtype,
                        max_shard_bytes=int(args.max_shard_gb * 2**30))  # fmt: skip
    finally:
        shutdown_distributed()
    if info.is_main:
        output.print(f"wrote {out}", markup=False)


def cmd_generate(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.model.generate import SamplingConfig
    from scifm.stages import generate_completions

    sampling = SamplingConfig.from_dict({
        "max_new_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "stop": args.stop or [], "seed": args.seed,
    }, source="generate options")  # fmt: skip
    prompts = list(args.prompts) + (read_prompts(Path(args.prompts_file)) if args.prompts_file
                                    else [])  # fmt: skip
    if args.dry_run:
        _print_yaml({"model": args.model, "prompts": prompts, "sampling": sampling.to_dict()})
        return
    if args.batch_size < 1:
        raise ScifmError(f"--batch-size {args.batch_size}: give at least 1")
    result = generate_completions(
        Path(args.model), prompts, sampling, batch_size=args.batch_size, device=args.device,
        tokenizer=Path(args.tokenizer) if args.tokenizer else None, dtype=args.dtype,
    )  # fmt: skip
    if args.json:
        for completion in result["completions"]:
            output.print(json.dumps(completion), markup=False, highlight=False, soft_wrap=True)
        return
    for completion in result["completions"]:
        output.print(f"[bold]{escape(completion['prompt'])}[/bold]"
                     f"{escape(completion['completion'])}  [dim]({completion['finish_reason']}, "
                     f"{completion['new_tokens']} tokens)[/dim]")  # fmt: skip
    summary = (f"{len(prompts)} prompts, {result['new_tokens']} new tokens in "
               f"{result['seconds']:.2f}s ({result['tokens_per_s']} tokens/s)")  # fmt: skip
    output.print(summary, markup=False)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line of a text file, or the "prompt" field of each JSONL record."""
    if not path.is_file():
        raise ScifmError(f"{path}: prompts file not found")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            prompts.append(str(record["prompt"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ScifmError(f"{path}:{number}: expected a JSON object with a \"prompt\" "
                             "field") from None  # fmt: skip
    return prompts


def cmd_eval(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.stages import evaluate_model

    tasks = [t for t in (args.tasks or "").split(",") if t]
    if args.dry_run:
        _print_yaml({"model": args.model, "tasks": tasks, "limit": args.limit,
                     "shots": args.shots})  # fmt: skip
        return
    if args.run:
        _eval_series(args, recipe, tasks)
        return
    if args.model is None:
        raise ScifmError("scifm eval needs MODEL (a run, checkpoint or HF directory) or --run RUN")
    if args.lm_eval_tasks:
        _write_lm_eval_tasks(args, tasks)
        return
    for name, value in (("--limit", args.limit), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ScifmError(f"{name} {value}: give at least 1")
    report = evaluate_model(
        Path(args.model), tasks, out=Path(args.out) if args.out else None, limit=args.limit,
        shots=args.shots, batch_size=args.batch_size, device=args.device,
        tokenizer=Path(args.tokenizer) if args.tokenizer else None,
        contamination=args.contamination, reliability=args.reliability,
    )  # fmt: skip
    output.print((Path(report["out"]) / "results.md").read_text(), markup=False)
    output.print(f"wrote {report['out']}", markup=False)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers"
                                         ) from None  # fmt: skip
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give counts >= 0, such as 0,1,5")
    return values


def _eval_series(args: argparse.Namespace, recipe: Recipe, tasks: list[str]) -> None:
    from scifm.stages import evaluate_run_series

    series = evaluate_run_series(Path(args.run), tasks, recipe.demo.prompts, limit=args.limit,
                                 shots=args.shots, batch_size=args.batch_size,
                                 max_new_tokens=recipe.demo.max_new_tokens)  # fmt: skip
    output.print((Path(series["out"]) / "series.md").read_text(), markup=False)
    output.print(f"wrote {series['out']} ({len(series['points'])} checkpoints)", markup=False)


def _write_lm_eval_tasks(args: argparse.Namespace, tasks: list[str]) -> None:
    """The same tasks as lm-evaluation-harness task files, and the command that runs them."""
    from scifm.eval.lm_eval_tasks import lm_eval_command, shell_line, write_lm_eval_tasks

    directory = Path(args.lm_eval_tasks)
    names = write_lm_eval_tasks(directory, tasks or ["sciq", "arc_easy"])
    out = Path(args.out) if args.out else directory / "results"
    command = lm_eval_command(Path(args.model), directory, names, out, args.limit)
    output.print(f"wrote {directory}; run lm-evaluation-harness on the export with:\n"
                 f"{shell_line(command)}", markup=False, soft_wrap=True)  # fmt: skip


def cmd_import(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.convert.import_ import import_hf

    if args.dry_run:
        _print_yaml({"hf_dir": args.hf_dir, "out": args.out})
        return
    output.print(f"wrote {import_hf(Path(args.hf_dir), Path(args.out))}", markup=False)


def cmd_plot(args: argparse.Namespace, recipe: Recipe) -> None:
    from scifm.train.plot import plot_run

    if args.dry_run:
        _print_yaml({"run_dir": args.run_dir})
        return
    output.print(f"wrote {plot_run(args.run_dir, args.out)}", markup=False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scifm", description="Foundation models for science, end to end.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        _common(command)
        command.set_defaults(handler=handler)
        return command

    demo = add("demo", cmd_demo, "run every stage on the embedded demo corpora")
    demo.add_argument("--out", help="run directory (default: train.out_dir, runs/demo)")
    corpus = add("corpus", cmd_corpus, "build corpora (`corpus demo OUT_DIR`)")
    corpus.add_argument("source", choices=["demo"], help="which corpora to build")
    corpus.add_argument("out_dir", help="output directory")
    tok = add("tokenizer", cmd_tokenizer, "train a byte-level BPE (`tokenizer train`)")
    tok.add_argument("action", choices=["train"])
    tok.add_argument("inputs", nargs="+", help="JSONL files or directories of shards")
    tok.add_argument("--out", required=True, help="tokenizer.json to write")
    tokenize = add("tokenize", cmd_tokenize, "tokenize one corpus into PREFIX.bin/.idx")
    tokenize.add_argument(
        "inputs", nargs="+", help=".jsonl/.txt (.gz, .zst) or .parquet files, or directories"
    )
    tokenize.add_argument("--tokenizer", required=True, help="tokenizer.json")
    tokenize.add_argument("--out", required=True, help="output prefix (no .bin/.idx)")
    inspect = add("inspect", cmd_inspect, "show counts, dtype and a sample of PREFIX.bin/.idx")
    inspect.add_argument("prefix")
    inspect.add_argument("--tokenizer", help="tokenizer.json to decode the sample")
    data = add("data", cmd_data, "inspect a data mixture (`data inspect [MIXTURE]`)")
    data.add_argument("action", choices=["inspect"])
    data.add_argument("mixture", nargs="?", help="mixture file (default: the recipe's data)")
    data.add_argument("--tokens", type=int, help="token budget for the epochs column")
    train = add("train", cmd_train, "pretrain a model on the recipe's data mixture")
    train.add_argument("--out", help="run directory (overrides train.out_dir)")
    train.add_argument("--world-size", type=int, default=1,
                       help="with --dry-run: ranks to plan the layout and memory for")  # fmt: skip
    export = add(
        "export",
        cmd_export,
        "`export hf CHECKPOINT OUT`: a checkpoint -> a Hugging "
        "Face directory; `export verify HF_DIR`: compare it with scifm",
    )
    export.add_argument("action", choices=["hf", "verify"])
    export.add_argument("source", help="hf: a step-* checkpoint or a run directory; verify: "
                        "an exported directory")  # fmt: skip
    export.add_argument("out", nargs="?", help="hf: the output directory")
    export.add_argument("--tokenizer", help="tokenizer.json (default: the run's data.tokenizer)")
    export.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    export.add_argument("--max-shard-gb", type=float, default=2.0,
                        help="hf: safetensors files of at most this size (GiB)")  # fmt: skip
    export.add_argument("--max-new-tokens", type=int, default=32, help="verify: greedy tokens")
    imp = add("import", cmd_import, "`import hf HF_DIR OUT`: a Hugging Face Llama -> a checkpoint")
    imp.add_argument("format", choices=["hf"])
    imp.add_argument("hf_dir")
    imp.add_argument("out", help="run directory to write (OUT/checkpoints/step-00000000)")
    ev = add("eval", cmd_eval, "score a run, a checkpoint or a Hugging Face directory on "
             "benchmarks (SciQ, ARC, OpenBookQA, MMLU STEM) or your own tasks")  # fmt: skip
    ev.add_argument(
        "model", nargs="?", help="run directory, step-* checkpoint or Hugging Face directory"
    )
    ev.add_argument("--run", metavar="RUN_DIR", help="instead of MODEL: every checkpoint of "
                    "RUN_DIR, with plots against tokens seen and the prompts' answers")  # fmt: skip
    ev.add_argument("--tasks", help="comma-separated: built-in names, task .yaml or .jsonl files")
    ev.add_argument("--limit", type=int, help="the first N questions of each task")
    ev.add_argument("--shots", type=_int_list, help="few-shot examples (default: each task's "
                    "own); a list such as 0,1,5 evaluates each (a shots curve)")  # fmt: skip
    ev.add_argument("--reliability", action="store_true",
                    help="also answer every question under the task's other prompt wordings "
                    "(and few-shot seeds): agreement")  # fmt: skip
    ev.add_argument("--batch-size", type=int, default=16, help="questions per forward pass")
    ev.add_argument("--out", help="results directory (default MODEL/eval)")
    ev.add_argument("--tokenizer", help="tokenizer.json (default: the model's own)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--contamination", action="store_true",
                    help="also flag questions whose 13-grams occur in the run's training "
                    "corpora")  # fmt: skip
    ev.add_argument("--lm-eval-tasks", metavar="DIR",
                    help="instead: write these tasks for lm-evaluation-harness (same files) "
                    "and print its command for MODEL")  # fmt: skip
    gen = add("generate", cmd_generate, "complete prompts with a run, a checkpoint or a Hugging "
              "Face directory (KV cache; greedy or sampled)")  # fmt: skip
    gen.add_argument("model", help="run directory, step-* checkpoint or Hugging Face directory")
    gen.add_argument("prompts", nargs="*", help="prompts (or --prompts-file)")
    gen.add_argument("--prompts-file", help="one prompt per line, or JSONL with a prompt field")
    gen.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt at most")
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest; 0: all")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    gen.add_argument("--tokenizer", help="tokenizer.json (default: the model's own)")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    gen.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    gen.add_argument("--json", action="store_true", help="one JSON object per completion")
    sub.add_parser("launch", help=LAUNCH_HELP, add_help=False)  # parsed by cmd_launch
    plot = add("plot", cmd_plot, "draw loss and throughput of RUN_DIR to PNG")
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="PNG path (default RUN_DIR/loss.png)")
    return parser


def _launch_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scifm launch", description=LAUNCH_HELP)
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restarts after a failed or idle attempt (default 0)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop an attempt that prints nothing for this long",
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="SIGTERM to SIGKILL delay when stopping an attempt (default 30)",
    )
    parser.add_argument(
        "--restart-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="pause before a restart (default 1)",
    )
    parser.add_argument("--log", type=Path, help="also append the job's output to this file")
    return parser


LAUNCH_HELP = ("run a launcher command (torchrun, mpiexec, srun ...) with restarts and an "
               "idle-output watchdog: `scifm launch [OPTIONS] -- COMMAND ...`")  # fmt: skip


def cmd_launch(argv: Sequence[str]) -> int:
    """`scifm launch [OPTIONS] -- COMMAND ...`: the command is passed on untouched."""
    from scifm.core.launch import LaunchConfig, launch

    items = list(argv)
    split = items.index("--") if "--" in items else len(items)
    args, extra = _launch_parser().parse_known_args(items[:split])
    if extra:
        raise ScifmError(f"unexpected {' '.join(extra)!r}: put the command after `--`, as in "
                         "`scifm launch --max-restarts 3 -- torchrun ...`")  # fmt: skip
    return launch(LaunchConfig(
        command=items[split + 1:], max_restarts=args.max_restarts,
        idle_timeout_s=args.idle_timeout, kill_grace_s=args.kill_grace,
        restart_delay_s=args.restart_delay, log=args.log,
    ))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments[:1] == ["launch"]:  # no recipe, no overrides: the rest is a command
            return cmd_launch(arguments[1:])
        rest, overrides = split_overrides(arguments)
        args = build_parser().parse_args(rest)
        recipe = _load(args, overrides)
        args.handler(args, recipe)
    except ScifmError as err:
        sys.stderr.write(f"error: {err}\n")
        return err.exit_code
    except OSError as err:
        sys.stderr.write(f"error: {err.strerror or err}: {err.filename or ''}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
