"""The command line: one dict, subcommand -> function. Each function parses its options and
calls the library; bad input anywhere becomes one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys

import click

from adaptlab.errors import UserError


SEED = click.IntRange(min=0, max=2**63 - 1)     # what every RNG we seed takes


def _emit(doc: dict, table: str, as_json: bool, out: str | None) -> None:
    """Print the result, then write ``out``: a write that fails at the last step (a full disk, a
    place gone read-only) loses nothing, the result is on the screen and one line says so."""
    from adaptlab.config import atomic_write_json

    from adaptlab import threads

    if threads.describe() is not None and isinstance(doc, dict):
        doc.setdefault("threads", threads.describe())      # the thread policy this run used
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        click.echo(table)
    if out:
        try:
            atomic_write_json(out, doc)
        except OSError as e:
            raise UserError(f"{out}: could not write the result ({e.strerror or e}); it is printed above") from None
        if not as_json:
            click.echo(f"\nwrote {out}")


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models_cmd(as_json: bool) -> None:
    """List the default models and where they come from."""
    from adaptlab.models import list_models
    from adaptlab.report import format_table

    rows = list_models()
    note = "\nAlso: any Hugging Face id, a local model folder, or a .gguf file (--model PATH)."
    _emit({"models": rows}, format_table(rows, ["name", "kind", "installed", "cached", "licence", "about", "source"]) + note,
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
@click.option("--prompt", default="zero-shot", show_default=True,
              help="Prompting strategy: zero-shot, instruction, few-shot, direct, cot, zero-shot-cot, "
                   "self-consistency, least-to-most, ape, calculator (options: --set, docs/methods.md).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Strategy option (repeatable).")
@click.option("--data", default=None, help="Folder of <split>.jsonl, one data file, or hf:<dataset>[:<config>].")
@click.option("--split", default="test", show_default=True, help="Split role (train/dev/test) or split name.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N examples.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Inputs per forward (generation, and scoring without shared demonstrations; "
                   "inputs after shared demonstrations are packed, ~512 tokens a forward).")
@click.option("--out", default=None, help="Also write the JSON document (with per-example records) here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def eval_cmd(task, model, adapter, prompt, sets, data, split, limit, seed, batch_size, out, as_json) -> None:
    """Evaluate a model (optionally with an adapter) on a task with a prompting strategy."""
    from adaptlab.config import parse_sets
    from adaptlab.evaluate import run
    from adaptlab.outputs import check_place
    from adaptlab.report import format_table
    from adaptlab.tasks import load_task

    if out:
        check_place(out, "file")                 # before the evaluation, not after it
    spec = load_task(task)
    if spec.schema == "preference":                    # a reward model's / a DPO policy's pairwise accuracy
        from adaptlab.train.reward import eval_preference

        doc = eval_preference(spec, adapter, data=data, split=split, limit=limit, batch_size=batch_size)
        _emit(doc, format_table([doc]), as_json, out)
        return
    res = run(task, model, adapter=adapter, prompt=prompt, sets=parse_sets(sets), data=data, split=split,
              limit=limit, seed=seed, batch_size=batch_size)
    row = {"task": res.task, "model": res.model, **({"adapter": adapter} if adapter else {}),
           "prompt": res.strategy, "split": res.split,
           **{k: v for k, v in res.metrics.items()}, "calls": res.cost["calls"],
           "tokens": res.cost["prompt_tokens"] + res.cost["generated_tokens"], "seconds": res.cost["wall_seconds"]}
    _emit(res.to_dict(records=bool(out) or as_json), format_table([row]), as_json, out)


class _MethodChoice(click.Choice):
    """``--method`` choices: the tuning registry's keys, read when first needed (keeps
    ``adaptlab --help`` from importing torch)."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self):
        from adaptlab.tuning import METHODS

        return list(METHODS)

    @choices.setter
    def choices(self, value) -> None:
        pass


def _loop_options(f):
    """The training loop's options, shared by tune and pretrain (None: the TrainConfig default)."""
    for opt in reversed([
            click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."),
            click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default 3; `adaptlab compare` uses 1 unless given --epochs)."),
            click.option("--max-steps", type=click.IntRange(min=1), default=None,
                         help="Optimizer steps (overrides --epochs)."),
            click.option("--train-limit", type=click.IntRange(min=1), default=None,
                         help="Train on a fixed subset of N examples (texts)."),
            click.option("--batch-size", type=click.IntRange(min=1), default=None,
                         help="Examples per micro-batch (default 16)."),
            click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                         help="Peak learning rate (default: the method's)."),
            click.option("--seed", type=SEED, default=None, help="Seed (default 0).")]):
        f = opt(f)
    return f


@click.command("tune")
@click.option("--task", required=True, help="Built-in task name or a task YAML file.")
@click.option("--method", required=True, type=_MethodChoice(), help="Tuning method.")
@click.option("--model", default=None, help="Default name, HF id, model folder or .gguf (default: smollm2-135m-instruct; "
              "minilm-l6 for the encoder).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Method option (r=8, alpha=16, target_modules=q_proj,v_proj ...) or training option "
                   "(grad_accum, warmup_ratio, weight_decay, max_seq_len, bf16, eval_limit ...). Repeatable.")
@click.option("--out", required=True, help="Folder for the adapter, its configs, log and resume checkpoint.")
@_loop_options
@click.option("--data", default=None, help="Folder of <split>.jsonl, one data file, or hf:<dataset>[:<config>].")
@click.option("--init", "init", default=None, help="Start from this adapter's weights (same method): continued "
              "training after 'adaptlab pretrain' with that method, or a prompt from another task.")
@click.option("--vocab", "vocab", default=None, help="An 'adaptlab vocab --extend N' folder: its new tokens train "
              "with the method and are saved with the adapter.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def tune_cmd(task, method, model, sets, out, resume, epochs, max_steps, train_limit, batch_size, lr, seed, data,
             init, vocab, as_json) -> None:
    """Tune a model for a task with one method; writes a peft-layout adapter folder."""
    from adaptlab.config import parse_sets
    from adaptlab.report import format_table
    from adaptlab.train import process_state, tune

    res = tune(task, method, model, out=out, sets=parse_sets(sets), resume=resume, data=data, epochs=epochs,
               max_steps=max_steps, train_limit=train_limit, batch_size=batch_size, lr=lr, seed=seed, init=init,
               vocab=vocab)
    if not process_state().is_main_process:      # torchrun / accelerate launch: one report, not N
        return
    row = {"task": res["task"], "method": res["method"], "model": res["model"],
           "trainable_params": res["trainable_params"], "adapter_bytes": res["adapter_bytes"],
           "steps": res["steps"], "train_seconds": res["train_seconds"], "tokens_seen": res["tokens_seen"],
           f"best_dev_{res['dev_metric']}": res["best_dev"]}
    _emit(res, format_table([row]) + f"\n\nadapter: {res['out']}", as_json, None)


def _names(v: str | None) -> list[str]:
    return [c.strip() for c in (v or "").split(",") if c.strip()]


def _generalist_options(f):
    for opt in reversed([
            click.option("--mixture", default=None, help="Built-in mixture name (flan-mini) or a mixture YAML file."),
            click.option("--hold-out", "hold_out", default=None, metavar="C1,C2",
                         help="Clusters left out of training (evaluated zero-/few-shot afterwards)."),
            click.option("--clusters", default=None, metavar="C1,C2",
                         help="Train on these clusters only (default: all but --hold-out); the cluster-count ablation."),
            click.option("--method", default="lora", show_default=True, type=_MethodChoice(), help="Tuning method."),
            click.option("--model", default=None, help="Default name, HF id, model folder or .gguf (a decoder)."),
            click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                         help="Method, training or objective option (k, chat, add_eos, max_seq_len ...). Repeatable."),
            click.option("--out", required=True, help="Folder for the adapter, its config, log and checkpoint.")]):
        f = opt(f)
    return f


def _generalist_report(res: dict, as_json: bool) -> None:
    from adaptlab.report import format_table
    from adaptlab.train import process_state

    if not process_state().is_main_process:
        return
    row = {k: res.get(k) for k in ("method", "model", "n_train", "trainable_params", "adapter_bytes", "steps",
                                   "train_seconds", "tokens_seen")}
    _emit(res, format_table([row]) + f"\n\nadapter: {res['out']}", as_json, None)


@click.command("instruct")
@_generalist_options
@click.option("--data", default=None, help="Instead of --mixture: an instruction-schema file or folder "
              "(Alpaca format: instruction, input, output).")
@click.option("--task", default=None, help="Instead of --mixture: an instruction-schema task (default alpaca with --data).")
@_loop_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def instruct_cmd(mixture, hold_out, clusters, method, model, sets, out, data, task, resume, epochs, max_steps,
                 train_limit, batch_size, lr, seed, as_json) -> None:
    """Instruction-tune (FLAN-style mixture with held-out clusters, or Alpaca-style SFT); completion-only loss."""
    from adaptlab.config import parse_sets
    from adaptlab.train.sft import instruct

    res = instruct(out=out, mixture=mixture, data=data, task=task, hold_out=_names(hold_out),
                   clusters=_names(clusters), method=method, model=model, sets=parse_sets(sets), resume=resume,
                   epochs=epochs, max_steps=max_steps, train_limit=train_limit, batch_size=batch_size, lr=lr, seed=seed)
    _generalist_report(res, as_json)


@click.command("metaicl")
@_generalist_options
@_loop_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def metaicl_cmd(mixture, hold_out, clusters, method, model, sets, out, resume, epochs, max_steps, train_limit,
                batch_size, lr, seed, as_json) -> None:
    """MetaICL: meta-train on k demonstrations + input of the training clusters' tasks (--set k=4)."""
    from adaptlab.config import parse_sets
    from adaptlab.errors import ConfigError
    from adaptlab.train.metaicl import metaicl

    if not mixture:
        raise ConfigError("metaicl: --mixture is required")
    res = metaicl(out=out, mixture=mixture, hold_out=_names(hold_out), clusters=_names(clusters), method=method,
                  model=model, sets=parse_sets(sets), resume=resume, epochs=epochs, max_steps=max_steps,
                  train_limit=train_limit, batch_size=batch_size, lr=lr, seed=seed)
    _generalist_report(res, as_json)


@click.command("pretrain")
@click.option("--text", "text", default=None, help="Domain text to pretrain on (DAPT): a .txt file (a text per line) "
              "or a .jsonl/.csv/.tsv file (its 'text' field; --set text_field=...).")
@click.option("--task", default=None, help="Pretrain on this task's train split with the labels dropped (TAPT).")
@click.option("--method", default="full", show_default=True, type=_MethodChoice(),
              help="Which parameters train (full as in the papers; lora/ia3 are folded into the saved model).")
@click.option("--model", default=None, help="Default name, HF id, model folder or .gguf (default: smollm2-135m-instruct; "
              "minilm-l6 for the encoder).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Method, training or pretraining option (objective=mlm|clm, mlm_probability, text_field, "
                   "dev_fraction, max_seq_len ...). Repeatable.")
@click.option("--out", required=True, help="Folder for the pretrained model (or adapter), its config, log and checkpoint.")
@_loop_options
@click.option("--data", default=None, help="With --task: folder of <split>.jsonl, one data file, or hf:<dataset>.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def pretrain_cmd(text, task, method, model, sets, out, resume, epochs, max_steps, train_limit, batch_size, lr, seed,
                 data, as_json) -> None:
    """Continue pretraining on unlabelled in-domain text (masked LM for encoders, causal LM for decoders)."""
    from adaptlab.config import parse_sets
    from adaptlab.report import format_table
    from adaptlab.train import process_state
    from adaptlab.train.pretrain import pretrain

    res = pretrain(text, task, method, model, out=out, sets=parse_sets(sets), resume=resume, data=data, epochs=epochs,
                   max_steps=max_steps, train_limit=train_limit, batch_size=batch_size, lr=lr, seed=seed)
    if not process_state().is_main_process:
        return
    row = {"objective": res["objective"], "method": res["method"], "model": res["model"], "texts": res["texts"],
           "steps": res["steps"], "tokens_seen": res["tokens_seen"], "train_seconds": res["train_seconds"],
           "dev_loss": res["dev_per_epoch"][-1]["dev_loss"] if res["dev_per_epoch"] else None}
    _emit(res, format_table([row]) + f"\n\n{res['result']}: {res['out']}\nnext: {res['next']}", as_json, None)


@click.command("vocab")
@click.option("--text", "text", default=None, help="Domain text: a .txt file (a text per line) or .jsonl/.csv/.tsv "
              "('text' field, or --text-field).")
@click.option("--task", default=None, help="Or a task: its train split's inputs, labels dropped.")
@click.option("--model", default=None, help="Whose tokenizer to start from (default: smollm2-135m-instruct).")
@click.option("--vocab-size", type=click.IntRange(min=100), default=8000, show_default=True,
              help="Size of the new vocabulary trained on the text.")
@click.option("--extend", type=click.IntRange(min=1), default=None,
              help="Add the N new whole-word tokens that save the most tokens; use the folder with tune --vocab.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--data", default=None, help="With --task: folder of <split>.jsonl, one data file, or hf:<dataset>.")
@click.option("--out", required=True, help="Folder for the new tokenizer, the report (and the extension).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def vocab_cmd(text, task, model, vocab_size, extend, text_field, data, out, as_json) -> None:
    """Train a subword vocabulary on domain text: fertility, the most fragmented words; --extend N."""
    from pathlib import Path

    from adaptlab.errors import ConfigError
    from adaptlab.report import format_table

    if (text is None) == (task is None):
        raise ConfigError("vocab: give the text: --text FILE or --task T")
    outp = Path(out)
    if outp.exists() and (not outp.is_dir() or any(outp.iterdir())):
        raise ConfigError(f"{outp}: already exists and is not an empty folder; choose another --out")
    from adaptlab.data import load_split, read_texts, task_texts
    from adaptlab.models import check_model_ref, load_backbone
    from adaptlab.tasks import load_task

    check_model_ref(model)
    if text is not None:
        texts = read_texts(text, text_field)
    else:
        spec = load_task(task)
        texts = task_texts(spec, load_split(spec, "train", data))
    from adaptlab import vocab

    bb = load_backbone(model)
    try:
        rep = vocab.build(texts, bb, vocab_size, extend, out)
    except BaseException:
        import shutil

        shutil.rmtree(outp, ignore_errors=True)          # nothing half-written
        raise
    rows = [{"tokenizer": k, "tokens_per_word": v} for k, v in rep["fertility"].items()]
    frag = [{"word": r["word"], "count": r["count"], "base": " ".join(r["base_pieces"]),
             "new": " ".join(r["new_pieces"])} for r in rep["most_fragmented"][:10]]
    table = format_table(rows) + "\n\nmost fragmented under the base tokenizer:\n" + format_table(frag)
    if extend:
        table += f"\n\nadded {len(rep['added'])} tokens (e.g. {', '.join(rep['added'][:8])}); use: adaptlab tune --vocab {out} ..."
    _emit(rep, table, as_json, None)


@click.command("merge")
@click.option("--adapter", required=True, help="A lora or ia3 adapter folder.")
@click.option("--out", required=True, help="Folder for the merged plain Hugging Face model.")
@click.option("--model", default=None, help="The base model, if not the one the adapter names.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def merge_cmd(adapter, out, model, as_json) -> None:
    """Fold a lora / ia3 adapter into its base model's weights (a plain HF model folder)."""
    from adaptlab.report import format_table
    from adaptlab.tuning.io import merge_adapter

    res = merge_adapter(adapter, out, model)
    _emit(res, format_table([res]), as_json, None)


@click.command("compare")
@click.option("--task", default="reviews", show_default=True, help="Built-in task name or a task YAML file.")
@click.option("--model", default=None, help="Model for every run (default: smollm2-135m-instruct).")
@click.option("--runs", default=None, help="Comma-separated runs, options after colons: "
              "\"zero-shot,few-shot:k=8,lora:r=8\" (default: a mix of prompting and tuning); generalist "
              "runs train on a mixture with the task's cluster held out, then score the task: "
              "instruct[:mixture=flan-mini][:method=lora] (zero-shot), metaicl[:k=4][:mixture=...] (few-shot; "
              "k demonstrations must fit max_seq_len, 512 by default for metaicl); feedback runs learn from "
              "feedback on the task: reward-model and dpo on a preference task, grpo on a numeric qa task "
              "(exact-match reward) or grpo:reward_model=DIR on a preference task.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Seeds per run.")
@click.option("--out", default=None, help="Output folder (default: runs/compare-<task>); re-use it to resume.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Test examples (first N).")
@click.option("--data", default=None, help="Folder of <split>.jsonl or hf:<dataset>[:<config>].")
@click.option("--train-limit", type=click.IntRange(min=1), default=500, show_default=True,
              help="Tuning runs: train examples.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True, help="Tuning runs: epochs (1 to keep the comparison to minutes; `adaptlab tune` defaults to 3).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Tuning runs: at most this many optimizer steps (a cap on --epochs, never more).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def compare_cmd(task, model, runs, seeds, out, limit, data, train_limit, epochs, max_steps, batch_size,
                as_json) -> None:
    """Run prompting strategies, tuning methods, generalist (mixture-trained) and feedback (reward model,
    DPO, GRPO) runs on one task; write results and a report."""
    from adaptlab.compare import DEFAULT_RUNS, CompareConfig, compare
    from adaptlab.errors import ResultsNotWritten
    from adaptlab.report import COLUMNS, _display_rows, format_table, summarize

    cfg = CompareConfig(task=task, model=model, runs=runs or DEFAULT_RUNS, seeds=seeds, limit=limit, data=data,
                        train_limit=train_limit, epochs=epochs, max_steps=max_steps, batch_size=batch_size)
    out = out or f"runs/compare-{cfg.task.rsplit('/', 1)[-1].removesuffix('.yaml')}"
    try:
        recs, lost = compare(cfg, out), None
    except ResultsNotWritten as e:             # every run finished; print them, then say what was lost
        recs, lost = e.records, e
    rows = summarize(recs)
    doc = {"out": out, "rows": rows, "results": f"{out}/results.jsonl", "report": f"{out}/report.html"}
    table = format_table(_display_rows(rows), COLUMNS)
    _emit(doc, table + ("" if lost else f"\n\nreport: {out}/report.html (and report.md)"), as_json, None)
    if lost:
        raise lost


@click.command("experiment")
@click.argument("name")
@click.option("--task", default=None, help="Task (default: sst2 for icl-*, reviews otherwise; spot-*: tasks a,b,...; "
                                          "held-out-clusters: clusters, default sentiment,nli,topic,acceptability).")
@click.option("--model", default=None, help="Model (default: smollm2-135m-instruct).")
@click.option("--out", default=None, help="Output folder (default: runs/experiment-<name>-<task>).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Test examples (first N).")
@click.option("--data", default=None, help="Folder of <split>.jsonl or hf:<dataset>[:<config>].")
@click.option("--n-adapters", type=click.IntRange(min=1), default=100, show_default=True, help="storage only.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="held-out-clusters only: mixture, ablation, counts, method, train_limit, max_steps, batch_size, "
                   "max_seq_len (repeatable).")
def experiment_cmd(name, task, model, out, seeds, limit, data, n_adapters, sets) -> None:
    """Presets reproducing published claims: icl-demos and icl-flipped (Min et al. 2022, demonstrations'
    labels), specialist-vs-generalist, storage (Houlsby et al. 2019 / Hu et al. 2021, one base and many
    adapters), black-box (Sun et al. 2022, BBT), spot-library and spot-transfer (Vu et al. 2022, SPoT;
    --task a,b,... for these two), held-out-clusters (Wei et al. 2022, FLAN: instruction tuning
    with a cluster held out, and the cluster-count ablation; --task C1,C2,... the held-out clusters)."""
    from adaptlab.config import parse_sets
    from adaptlab.experiments import run_experiment
    from adaptlab.report import COLUMNS, _display_rows, format_table, summarize

    res = run_experiment(name, task=task, model=model, out=out, seeds=seeds, limit=limit, data=data,
                         n_adapters=n_adapters, sets=parse_sets(sets))
    if "records" in res:
        click.echo(format_table(_display_rows(summarize(res["records"])), COLUMNS))
    if "records" in res or "rows" in res:
        if "rows" in res:
            click.echo(format_table(res["rows"], ["held_out", "task", "untuned", "tuned", "std", "seeds", "gain"]))
        click.echo(f"\nreport: {res['out']}/report.html (and report.md)")


@click.command("serve")
@click.option("--model", default=None, help="The base: default name, HF id or model folder.")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH", help="An adapter to serve (repeatable).")
@click.option("--adapter-root", "roots", multiple=True, metavar="DIR",
              help="Folder that runtime /v1/load_lora_adapter paths must stay inside (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, help="Required bearer key (default: $ADAPTLAB_API_KEY; none: no auth).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Queued requests beyond this get 429 + Retry-After.")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True, help="Rows per forward.")
@click.option("--continuous/--no-continuous", default=True, show_default=True,
              help="Requests join the running decode loop between steps (else: batched in groups).")
def serve_cmd(model, adapters, roots, host, port, api_key, max_queue, max_batch, continuous) -> None:
    """Serve one base and many adapters behind an OpenAI-compatible API (FastAPI + uvicorn)."""
    from adaptlab.errors import ConfigError
    from adaptlab.models import check_model_ref
    from adaptlab.serve import ServeConfig, serve
    from adaptlab.serve.registry import NAME
    from adaptlab.tuning.io import read_adapter

    named = {}
    for a in adapters:
        name, sep, path = a.partition("=")
        if not sep or not NAME.match(name) or not path:
            raise ConfigError(f"--adapter {a!r}: expected NAME=PATH, NAME of [A-Za-z0-9._-]")
        if name in named:
            raise ConfigError(f"--adapter {name!r} given twice")
        read_adapter(path)                       # missing folder / pickle weights: refused before loading
        named[name] = path
    check_model_ref(model)
    serve(ServeConfig(model=model, adapters=named, adapter_roots=list(roots), host=host, port=port,
                      api_key=api_key, max_queue=max_queue, max_batch=max_batch,
                      continuous=continuous))


COMMANDS: dict[str, click.Command] = {
    "models": models_cmd,
    "tasks": tasks_cmd,
    "eval": eval_cmd,
    "tune": tune_cmd,
    "pretrain": pretrain_cmd,
    "instruct": instruct_cmd,
    "metaicl": metaicl_cmd,
    "vocab": vocab_cmd,
    "merge": merge_cmd,
    "compare": compare_cmd,
    "experiment": experiment_cmd,
    "serve": serve_cmd,
}


def _apply_threads(ctx, param, value):
    """Every heavy command's --threads: parsed eagerly, so the policy is set before any command
    body imports torch (see adaptlab.threads)."""
    from adaptlab import threads

    threads.apply(value)
    return value


for _name in ("eval", "tune", "pretrain", "instruct", "metaicl", "vocab", "merge", "compare", "experiment", "serve"):
    COMMANDS[_name].params.append(click.Option(
        ["--threads"], default=None, metavar="N|auto|torch", is_eager=True, expose_value=False,
        callback=_apply_threads,
        help="CPU threads for torch (default: ADAPTLAB_THREADS, else auto: the free cores this process may "
             "use; OpenMP waits passively). 'torch' leaves torch's own default."))


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
    except OSError as e:
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE):
            raise
        click.echo(f"error: {e.filename or 'a file'}: could not write ({e.strerror})", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
