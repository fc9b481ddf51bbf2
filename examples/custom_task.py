"""Search for an optimizer on your own model: a small MLP on scikit-learn's breast-cancer data.

    optdsl search --task examples/custom_task.py:make_task --budget 2m
    optdsl search --task examples/custom_task.py:make_task \
                  --meta-task examples/custom_task.py:make_held_out_task --budget 10m

``make_task()`` takes no arguments and returns a search task. ``search.task_from_module`` turns
ordinary torch code into one: a factory of a fresh ``nn.Module`` (the search seeds torch before
each call), the minibatch of each step, a loss, the number of steps and a held-out batch whose
final loss is the task's result. Everything must be deterministic: every candidate optimizer
sees the same data. Workers import this file themselves, so keep it importable on its own.
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from torch import nn

from search import task_from_module

BATCH = 32


def model() -> nn.Module:
    """30 features -> 32 hidden units -> 2 classes."""
    return nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 2))


def wider_model() -> nn.Module:
    """30 -> 64 -> 64 -> 2 with layer norm: an architecture the search never trained."""
    return nn.Sequential(nn.Linear(30, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 64), nn.GELU(),
                         nn.Linear(64, 2))


def _breast_cancer(name: str, build, steps: int, seed: int, description: str):
    """569 tumours (30 measurements each, malignant or benign): 400 to train on, 169 held out;
    features standardised on the training split; minibatches of 32 drawn with ``seed``."""
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    mean, std = x[:400].mean(0), x[:400].std(0)
    x = torch.tensor((x - mean) / std, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    picks = torch.randint(0, 400, (steps, BATCH), generator=torch.Generator().manual_seed(seed))
    return task_from_module(
        name=name,
        model=build,
        batches=lambda t: (x[picks[t - 1]], y[picks[t - 1]]),  # the minibatch of step t = 1..steps
        loss=F.cross_entropy,
        steps=steps,
        eval_batch=(x[400:], y[400:]),
        description=f"{description} on breast cancer (400 train / 169 held out), {steps} steps of {BATCH}",
    )


def make_task():
    """The task the search trains on (``--task``)."""
    return _breast_cancer("breast_cancer_mlp", model, steps=120, seed=0, description="MLP 30-32-2")


def make_held_out_task():
    """A held-out task for meta-validation (``--meta-task``): a wider, deeper model, other
    minibatches, more steps."""
    return _breast_cancer("breast_cancer_wide", wider_model, steps=200, seed=1,
                          description="MLP 30-64-64-2 with layer norm")


if __name__ == "__main__":  # a quick look: the task and the AdamW baseline the search scores against
    from search.evaluate import CONFIRM_SEEDS, HELD_OUT_SEEDS, baseline
    from search.evolution import SearchConfig

    for make, fresh in ((make_task, CONFIRM_SEEDS), (make_held_out_task, HELD_OUT_SEEDS)):
        task = make()
        print(f"{task.name}: {task.description}, {task.size} parameters")
        tuned = baseline(f"{__file__}:{make.__name__}", fresh_seeds=fresh, schedule=SearchConfig.schedule)
        print("  tuned AdamW:", tuned)
