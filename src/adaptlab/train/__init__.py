"""Training: the ONE loop (``loop.train``) and what plugs into it.

    loop.py         train(model, data, objective, stepper, cfg, hooks): batching, steps, dev hooks,
                    best-keeping, checkpoint/resume, multi-process (Accelerate), bf16 autocast
    objectives.py   what is minimised: LM target, head cross-entropy, masked LM, causal LM; per-candidate
                    losses for the black-box methods (verbalizer over a population, scores via the LM)
    steppers.py     how parameters move: AdamW (+ warmup/decay, clipping, accumulation); CMA-ES
                    (``cma``) and REINFORCE, which only call the loss under no_grad
    checkpoint.py   resume state on disk
    tune.py         ``adaptlab tune``: a labelled task + a tuning method -> an adapter folder
    pretrain.py     ``adaptlab pretrain``: unlabelled in-domain text (TAPT / DAPT) -> a model folder
"""

from adaptlab.train.loop import Hooks, TrainConfig, bf16_ok, make_batches, process_state, train
from adaptlab.train.tune import split_sets, train_on_task, train_subset, tune

__all__ = ["Hooks", "TrainConfig", "bf16_ok", "make_batches", "process_state", "split_sets", "train",
           "train_on_task", "train_subset", "tune"]
