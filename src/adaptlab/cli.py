"""The command line: one dict, subcommand -> function. Each function parses its options and
calls the library; bad input anywhere becomes one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys

import click

from adaptlab.errors import UserError


def _emit(doc: dict, table: str, as_json: bool, out: str | None) -> None:
    from adaptlab.config import atomic_write_json

    if out:
        atomic_write_json(out, doc)
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        click.echo(table)
        if out:
            click.echo(f"\nwrote {out}")


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models_cmd(as_json: bool) -> None:
    """List the default models and where they come from."""
    from adaptlab.models import list_models
    from adaptlab.report import format_table

    rows = list_models()
    note = "\nAlso: any Hugging Face id, a local model folder, or a .gguf file (--model PATH)."
    _emit({"models": rows}, format_table(rows, ["name", "kind", "installed", "cached", "about", "source"]) + note,
          as_json, None)


@click.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def tasks_cmd(as_json: bool) -> None:
    """List the built-in tasks."""
    from adaptlab.report import format_table
    from adaptlab.tasks import list_tasks

    rows = list_tasks()
    _emit({"tasks": rows}, format_table(rows, ["name", "schema", "metric", "labels", "source"]), as_json, None)


@click.command("eval")
@click.option("--task", required=True, help="Built-in task name or a task YAML file.")
@click.option("--model", default=None, help="Default name, HF id, model folder or .gguf (default: smollm2-135m-instruct).")
@click.option("--adapter", default=None, help="An adapter folder made by 'adaptlab tune'.")
@click.option("--prompt", default="zero-shot", show_default=True, help="Prompting strategy.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Strategy option (repeatable).")
@click.option("--data", default=None, help="Folder of <split>.jsonl, one data file, or hf:<dataset>[:<config>].")
@click.option("--split", default="test", show_default=True, help="Split role (train/dev/test) or split name.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N examples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--out", default=None, help="Also write the JSON document (with per-example records) here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def eval_cmd(task, model, adapter, prompt, sets, data, split, limit, seed, batch_size, out, as_json) -> None:
    """Evaluate a model (optionally with an adapter) on a task with a prompting strategy."""
    from adaptlab.config import parse_sets
    from adaptlab.evaluate import run
    from adaptlab.report import format_table

    res = run(task, model, adapter=adapter, prompt=prompt, sets=parse_sets(sets), data=data, split=split,
              limit=limit, seed=seed, batch_size=batch_size)
    row = {"task": res.task, "model": res.model, "prompt": res.strategy, "split": res.split,
           **{k: v for k, v in res.metrics.items()}, "calls": res.cost["calls"],
           "tokens": res.cost["prompt_tokens"] + res.cost["generated_tokens"], "seconds": res.cost["wall_seconds"]}
    _emit(res.to_dict(records=bool(out) or as_json), format_table([row]), as_json, out)


COMMANDS: dict[str, click.Command] = {
    "models": models_cmd,
    "tasks": tasks_cmd,
    "eval": eval_cmd,
}


@click.group(commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adaptlab")
def cli() -> None:
    """adaptlab: tune a pretrained LM into a specialist or prompt it as a generalist, and
    compare every choice on the same task."""


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="adaptlab", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
