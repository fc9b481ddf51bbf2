import math
import os
import signal
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optdsl import load, parse, to_source
from optdsl.canonical import structural_hash
from optdsl.passes import eliminate_dead_code
from search.candidate import Seen, describe, lr_factor
from search.evaluate import (
    BASELINE_LRS,
    BASELINE_REACH,
    CANDIDATE_LRS,
    CONFIRM_SEEDS,
    HELD_OUT_SEEDS,
    SCORE_BOUND,
    _train,
    aggregate,
    baseline,
    best_over_sweep,
    evaluate_program,
    evaluate_programs,
    run_job,
    score,
    sweep_window,
    train_copies,
    widening_sweep,
)
from search.executors import LocalExecutor
from search.guards import guard, horizon_fault
from search.mutate import mutate
from search.tasks import (
    FACTORIES,
    PROXY_TASKS,
    Task,
    _block,
    at_batch,
    causal_mask,
    get_task,
    meta_tasks_for,
    proxy_of,
)
from search.warm_start import adamw_program, initial_program, prepare

BASE = {"quadratic": 0.13, "logreg": 0.1}
TRAIN = "def train(w, g, lr):\n    update = {}\n    return update\n"


def test_warm_start_trains_every_proxy_task_to_a_finite_loss():
    for task in PROXY_TASKS:
        losses, errors = train_copies([adamw_program()], task, [1.0, 10.0])
        assert errors == [None] and np.all(np.isfinite(losses)), task


def test_proxies_have_exactly_zero_gradients_that_the_papers_eps_free_adamw_cannot_take():
    # Constant pixels (logreg), untouched embedding rows, a zero-initialised output layer (mlp):
    # m / sqrt(v) is 0 / 0 there, so the listing as printed fails; AdamW's eps makes it train.
    for task in ("logreg", "embedding", "mlp"):
        losses, _ = train_copies([initial_program("paper_adamw"), adamw_program()], task, [1.0, 10.0])
        assert np.all(np.isinf(losses[0])) and np.all(np.isfinite(losses[1])), task


def test_tasks_at_a_larger_batch_are_the_same_tasks_with_f_times_the_batch():
    """``NAME@F`` (the Lion paper's batch sizes, for GPU searches): F times the minibatch (the
    quadratic: its gradient noise / sqrt(F)), everything else as built; its held-out task is the
    larger one at the same factor."""
    def rows(batch):
        return (batch[0] if isinstance(batch, tuple | list) else batch).shape[0]

    for name in (*PROXY_TASKS, *(t for t in meta_tasks_for(PROXY_TASKS) if t != "conv_large")):  # (no batch)
        task, big = get_task(name), get_task(f"{name}@4")
        assert (big.name, big.description, big.shapes, big.steps) == (f"{name}@4", task.description,
                                                                       task.shapes, task.steps)
        if not name.startswith("quadratic"):
            assert rows(big.batch(1)) == 4 * rows(task.batch(1))
    noise = [FACTORIES["quadratic"].func.__defaults__[3], at_batch("quadratic@16").keywords["noise"]]
    assert noise == [0.1, 0.025]
    assert meta_tasks_for(["mlp@64", "quadratic@64"]) == ("mlp_large@64", "quadratic_large@64")
    assert proxy_of("mlp_large@64") == "mlp@64"


def test_the_autoencoder_task_rewards_bias_correction_which_the_default_proxies_do_not():
    """Adam without bias correction takes a first step (1 - beta1) / sqrt(1 - beta2) times Adam's. On
    the default proxies that scores higher (a step-size decay the short tasks reward); on the
    low-rank autoencoder it kills bottleneck units, as on the real autoencoder of the discovery
    benchmark (docs/search.md, "Bias correction": 1.03x tuned AdamW's loss there, 0.87x with it)."""
    adam = "def a(w, g, m, v, step, lr=0.001):\n    m = interp(g, m, 0.62)\n    v = interp(g * g, v, 0.999)\n"
    corrected = prepare(parse(adam + "    return lr * (m / (1 - 0.62 ** step)) / "
                            "(sqrt(v / (1 - 0.999 ** step)) + 1e-8), m, v\n"))
    plain = prepare(parse(adam + "    return lr * m / (sqrt(v) + 1e-8), m, v\n"))
    base = {t: baseline(t)["loss"] for t in ("lowrank_ae", "logreg")}
    ae = evaluate_programs([corrected, plain], ["lowrank_ae"], base, hurdle=None)
    assert ae[0]["fitness"] > ae[1]["fitness"] + 0.3  # measured +0.41 against -0.13
    logreg = evaluate_programs([corrected, plain], ["logreg"], base, hurdle=None)
    assert logreg[0]["fitness"] < logreg[1]["fitness"]  # +0.16 against +0.20


def test_the_sparse_autoencoder_holds_out_a_square_root_step_that_fails_a_real_autoencoder():
    """``sign(m) sqrt(|m|)`` (a 10-minute winner, held out +0.020 on the six other tasks) trains the
    discovery benchmark's digits autoencoder to 1.61x tuned AdamW's loss, where an RMSprop winner
    reaches 0.92x; ``sparse_ae_large`` ranks them so, scored as meta-validation scores (measured
    -0.134 against +0.346)."""
    root = prepare(parse("def r(w, g, m, step, lr=0.458):\n    m = interp(g, m, 0.7474)\n"
                         "    return lr * (m / (sqrt(m) + 1e-08) + 0.9 ** step * w), m\n"))
    rmsprop = prepare(parse("def r(w, g, v, step, lr=0.127):\n    v = interp(square(g), v, 0.8175)\n"
                            "    return lr * (g / (sqrt(v / (1.061 - 0.92 ** step)) + 3.324e-09) + 0.01 * w), v\n"))
    task = "sparse_ae_large"
    base = {task: baseline(task, schedule="cosine", fresh_seeds=HELD_OUT_SEEDS)["loss"]}
    scored = evaluate_programs([root, rmsprop], [task], base, hurdle=None, schedule="cosine",
                               fresh_seeds=HELD_OUT_SEEDS)
    assert scored[0]["fitness"] < -0.05 and scored[1]["fitness"] > 0.2


def test_a_cosine_schedule_moves_every_copys_learning_rate_over_the_steps():
    """On a loss whose gradient is 1 everywhere, SGD moves each weight by lr times the sum of the
    schedule's factors: T held, (T + 1) / 2 under the cosine decay (sum of cos(pi k / T) is 1)."""
    task = Task("slope", "sum of the weights", {"w": (3,)}, lambda gen: {"w": torch.full((3,), 10.0)},
                lambda p, batch: p["w"].sum(1), lambda t: None, None, steps=10)
    sgd = parse("def train(w, g, lr):\n    return lr * g\n")
    lr = torch.tensor([[1.0], [0.5]])
    for schedule, moved in (("constant", 10.0), ("cosine", 5.5)):
        final, errors = _train([sgd], task, torch.full((2, 3), 10.0), lr, [2], schedule)
        assert errors == [None] and final.tolist() == pytest.approx([30 - 3 * moved, 30 - 1.5 * moved])
    assert baseline("quadratic", schedule="cosine")["loss"] != baseline("quadratic")["loss"]


def test_reading_which_copies_live_every_few_steps_changes_no_loss():
    """On a GPU the host reads which copies live every SYNC_EVERY steps, not every step (each read
    waits for the device). Copies that diverge in between are zeroed at every step, so the losses,
    the copies that fail and the candidates' errors are those of reading at every step."""
    task = get_task("logreg")
    programs = [parse("def train(w, g, lr):\n    return lr * g\n"), adamw_program(),
                parse("def train(w, g, lr):\n    return lr * exp(g * 1000)\n"),  # every copy diverges
                parse("def train(w, g, lr):\n    return lr * g * exp(w * w)\n")]  # its largest rate does
    lr = torch.tensor([0.01, 1.0, 1e4] * 4).reshape(-1, 1)
    runs = [_train(programs, task, task.init_copies([0], 1).repeat(12, 1), lr, [3] * 4, "cosine", every)
            for every in (1, 16)]
    (each, each_errors), (sparse, sparse_errors) = runs
    assert np.isinf(each[6:9]).all() and np.isinf(each[9:]).tolist() == [False, False, True]
    assert each_errors == sparse_errors and np.array_equal(each, sparse)


def test_language_and_sequence_tasks_train():
    task = get_task("charlm")
    first = task.eval_loss(task.unflatten(task.init_params(1))).item()
    losses, errors = train_copies([adamw_program()], "charlm", [10.0], seeds=[0])
    assert errors == [None] and losses[0, 0, 0] < first - 1.0  # ~5.7 -> ~2.8 nats
    for name in ("transformer_sort", "transformer_reverse", "transformer_cumsum", "transformer_max_prefix"):
        losses, errors = train_copies([adamw_program()], name, [10.0], seeds=[0])
        assert errors == [None] and np.isfinite(losses).all(), name


def test_convnet_loss_matches_grouped_convolutions_written_out():
    """conv_large's first layer (shared image patches times every copy's filters) computes what a
    grouped convolution over the copies does: the loss agrees with the model written with conv2d."""
    task = get_task("conv_large")
    p = task.unflatten(task.init_params(3))
    x, y = task.batch(1)
    k, n = 3, x.shape[0]
    h = x.reshape(n, 1, 8, 8).expand(n, k, 8, 8)
    for i, c_in in enumerate((1, 8)):
        h = F.gelu(F.conv2d(h, p[f"c{i}"].reshape(k * 8, c_in, 3, 3), p[f"cb{i}"].reshape(-1), padding=1, groups=k))
    h = F.avg_pool2d(h, 2).reshape(n, k, -1)
    logits = torch.einsum("nki,kio->kno", h, p["w"]) + p["b"][:, None]
    want = torch.stack([F.cross_entropy(logits[j], y) for j in range(k)])
    torch.testing.assert_close(task.train_loss(p, 1), want, rtol=1e-5, atol=1e-6)


def test_the_language_models_attention_is_causal():
    # position i's output may not change when a later position's input does
    length, d = 6, 4
    gen = torch.Generator().manual_seed(0)
    qkv, o, m1, m2 = (torch.randn(1, *s, generator=gen) for s in ((d, 3 * d), (d, d), (d, 2 * d), (2 * d, d)))
    h = torch.randn(1, length, d, generator=gen)
    changed = h.clone()
    changed[:, 3] += 1.0
    out, out_changed = (_block(x, qkv, o, m1, m2, length, causal_mask(length)) for x in (h, changed))
    assert torch.equal(out[:, :3], out_changed[:, :3]) and not torch.equal(out[:, 3:], out_changed[:, 3:])
    unmasked = _block(changed, qkv, o, m1, m2, length)
    assert not torch.allclose(unmasked[:, :3], out[:, :3])  # without the mask it would leak


def test_score_is_a_bounded_log_ratio_against_the_baseline():
    assert score(0.5, 1.0) == pytest.approx(math.log(2))
    assert score(1.0, 1.0) == 0.0
    assert score(math.inf, 1.0) == -SCORE_BOUND
    assert score(1e-12, 1.0) == SCORE_BOUND  # a collapsed loss cannot outweigh the other tasks


def test_fitness_drops_the_best_task_so_one_task_never_makes_a_winner():
    assert aggregate([SCORE_BOUND, -0.1, -0.1, -0.1]) < 0
    assert aggregate([0.2, 0.1, 0.3]) == pytest.approx(0.15)


def test_a_loss_weighs_about_twice_a_gain_and_a_failure_stays_the_bottom():
    """A rule that gives up one task for as much gained on another ranks below one that is level
    on both (the 10-minute winners gave up ``embedding`` and lost its held-out version more)."""
    gives_up_one, level = [0.3, 0.15, -0.15, 0.0], [0.3, 0.0, 0.0, 0.0]
    assert aggregate(gives_up_one, loss_averse=False) == pytest.approx(aggregate(level, loss_averse=False))
    assert aggregate(gives_up_one) < aggregate(level) == pytest.approx(0.0)
    assert aggregate([0.4, -0.01, 0.0]) == pytest.approx(-0.0199 / 2)
    assert aggregate([-SCORE_BOUND] * 3) == -SCORE_BOUND and aggregate([SCORE_BOUND] * 3) == SCORE_BOUND
    assert aggregate([0.2, 0.1, 0.3]) == aggregate([0.2, 0.1, 0.3], loss_averse=False)  # gains unchanged
    assert aggregate([-3.0, -3.0]) == -SCORE_BOUND  # outside the bounds, where (1 + s)^2 - 1 rises again


def test_a_job_scores_with_its_search_s_aggregate():
    """A worker aggregates as the job says: a search stored before the loss weight keeps the plain
    mean when resumed (SearchConfig.from_dict), its jobs saying so."""
    job = {"id": 1, "kind": "evaluate", "tasks": ["quadratic"], "baselines": {"quadratic": 0.15},
           "sources": ["def train(w, g, lr):\n    return lr * g\n"]}
    weighed, plain = (run_job({**job, "loss_averse": flag})["results"][0] for flag in (True, False))
    s = weighed["task_score"]["quadratic"]
    assert s < 0 and plain["task_score"]["quadratic"] == s
    assert (weighed["fitness"], plain["fitness"]) == (aggregate([s]), aggregate([s], loss_averse=False))
    assert weighed["fitness"] < plain["fitness"]


def test_a_hurdle_only_task_can_stop_a_program_but_is_not_in_its_fitness():
    """``logreg`` of the default proxies ranked rules against real tasks (tasks.HURDLE_ONLY): it is
    trained and scored, stops a program below the hurdle, and is left out of the fitness."""
    job = {"id": 1, "kind": "evaluate", "tasks": ["quadratic", "quadratic_large"],
           "baselines": {"quadratic": 0.15, "quadratic_large": 0.15},
           "sources": ["def train(w, g, lr):\n    return lr * g\n"]}
    counted, hurdle = (run_job({**job, "hurdle_only": only})["results"][0] for only in ([], ["quadratic"]))
    assert counted["task_score"] == hurdle["task_score"] and len(counted["task_score"]) == 2
    first, second = (counted["task_score"][t] for t in job["tasks"])
    assert counted["fitness"] == aggregate([first, second]) and hurdle["fitness"] == aggregate([second])
    stopped = run_job({**job, "hurdle_only": ["quadratic"], "hurdle": first + 0.1})["results"][0]
    assert stopped["status"] == "hurdle" and stopped["fitness"] == aggregate([-SCORE_BOUND])


def test_best_learning_rate_is_chosen_on_the_mean_over_seeds():
    losses = np.array([[1.0, 0.2, 0.5], [1.0, 0.9, 0.5]])
    assert best_over_sweep(losses, [1, 2, 3]) == (0.5, 3)
    losses[1, 2] = np.inf  # a failed seed fails that learning rate
    assert best_over_sweep(losses, [1, 2, 3]) == (pytest.approx(0.55), 2)



@pytest.mark.parametrize("window", [(0, 1), (4, 6), (8, 9)])
def test_a_widening_sweep_finds_the_whole_sweeps_best_from_any_window(window):
    programs = [adamw_program(), parse(TRAIN.format("lr * 0.01 * g"))]
    full, _ = train_copies(programs, "logreg", CANDIDATE_LRS)
    part, _ = widening_sweep(programs, "logreg", CANDIDATE_LRS, [window, (4, 6)])
    for f, p in zip(full, part):
        assert best_over_sweep(p, CANDIDATE_LRS) == pytest.approx(best_over_sweep(f, CANDIDATE_LRS), rel=1e-5)
    trained = np.isfinite(part)
    np.testing.assert_allclose(part[trained], full[trained], rtol=1e-5)
    # around the best, the points beyond the window's reach are never trained
    j = CANDIDATE_LRS.index(best_over_sweep(full[0], CANDIDATE_LRS)[1])
    alone, _ = widening_sweep(programs[:1], "logreg", CANDIDATE_LRS, [(j - 2, j + 2)])
    assert np.isinf(alone[0, :, : j - 2]).all() and np.isinf(alone[0, :, j + 3:]).all()


def test_a_window_where_every_point_fails_widens_to_the_whole_sweep_at_once():
    program = parse(TRAIN.format("lr * 1000.0 * g"))  # diverges at the top of the sweep
    full, _ = train_copies([program], "logreg", CANDIDATE_LRS)
    part, _ = widening_sweep([program], "logreg", CANDIDATE_LRS, [(7, 9)])
    assert np.isinf(full[0, :, 7:]).all()
    assert best_over_sweep(part[0], CANDIDATE_LRS) == pytest.approx(best_over_sweep(full[0], CANDIDATE_LRS), rel=1e-5)


def test_a_childs_sweeps_start_at_its_parents_learning_rates_moved_as_its_own(monkeypatch):
    """A child whose step is 10x or 0.1x its parent's trains the whole sweep on the first task
    only; later tasks start at the parent's lr moved by the child's shift there, and the scores
    are those of whole sweeps."""
    import search.evaluate as ev

    tasks, base = ["quadratic", "logreg", "embedding"], {**BASE, "embedding": 0.3}
    parent = evaluate_program(parse(TRAIN.format("lr * 0.01 * g")), tasks, base, hurdle=None)
    children = [parse(TRAIN.format(f"lr * {c} * g")) for c in (0.001, 0.01, 0.1)]
    full = evaluate_programs(children, tasks, base, hurdle=None)
    trained, real = [], ev.train_copies

    def counted(programs, task, *args, points=None, **kw):
        trained.append((task, [len(p) for p in points]))
        return real(programs, task, *args, points=points, **kw)

    monkeypatch.setattr(ev, "train_copies", counted)
    windowed = evaluate_programs(children, tasks, base, hurdle=None, tuned=[parent["task_lr"]] * 3, from_parent=True)
    for a, b in zip(full, windowed):
        assert a["task_lr"] == b["task_lr"]
        assert a["task_score"] == pytest.approx(b["task_score"], abs=1e-5)
    assert trained[0] == ("quadratic", [len(CANDIDATE_LRS)] * 3)
    later = [n for task, counts in trained[1:] for n in counts]
    assert sum(later) <= 2 * 3 * 6  # within reach of the moved centre, or one widening
    assert trained[-1][0] == "embedding" and max(trained[-1][1]) <= 6


def test_meta_validation_starts_each_held_out_sweep_at_the_proxy_winners():
    tuned = {"quadratic": CANDIDATE_LRS[2], "logreg": CANDIDATE_LRS[6], "mlp": CANDIDATE_LRS[-2]}
    last = len(CANDIDATE_LRS) - 1
    assert sweep_window("logreg_large", tuned) == (4, 8)
    assert sweep_window("mlp_large", tuned) == (last - 3, last)  # clipped to the grid
    assert sweep_window("conv_large", tuned) == (4, 8)  # no proxy version: the median winner
    assert sweep_window("logreg_large", {}) == (0, len(CANDIDATE_LRS) - 1)
    job = {"kind": "evaluate", "id": 0, "sources": [to_source(adamw_program())], "tasks": ["logreg"],
           "baselines": BASE, "hurdle": None}
    full = run_job(job)["results"][0]
    windowed = run_job({**job, "tuned": [{"logreg": full["task_lr"]["logreg"]}]})["results"][0]
    assert windowed["task_lr"] == full["task_lr"]
    assert windowed["task_score"] == pytest.approx(full["task_score"], rel=1e-6)


def test_held_out_losses_are_measured_again_on_fresh_seeds_at_the_lr_the_sweep_chose():
    """Meta-validation chooses each task's lr on SEEDS and scores the loss at that lr on other
    seeds; the AdamW baseline of a held-out task is measured the same way."""
    programs, fresh = [adamw_program(), parse(TRAIN.format("lr * 0.01 * g"))], (2, 3, 4)
    plain = evaluate_programs(programs, ["quadratic"], BASE, hurdle=None)
    again = evaluate_programs(programs, ["quadratic"], BASE, hurdle=None, fresh_seeds=fresh)
    for program, a, b in zip(programs, plain, again):
        lr = a["task_lr"]["quadratic"]
        assert b["task_lr"]["quadratic"] == lr
        losses, _ = train_copies([program], "quadratic", [lr], fresh)
        assert b["task_loss"]["quadratic"] == pytest.approx(losses.mean(), rel=1e-5)
        assert b["task_loss"]["quadratic"] != pytest.approx(a["task_loss"]["quadratic"], rel=1e-4)
        assert b["task_score"]["quadratic"] == score(b["task_loss"]["quadratic"], BASE["quadratic"])
    tuned, remeasured = baseline("quadratic"), baseline("quadratic", fresh_seeds=fresh)
    assert remeasured["lr"] == tuned["lr"]
    losses, _ = train_copies([load("adamw")], "quadratic", [tuned["lr"]], fresh)
    assert remeasured["loss"] == pytest.approx(losses.mean(), rel=1e-5)
    assert remeasured["sweep_loss"] == tuned["sweep_loss"] == tuned["loss"]


def test_tuned_adamws_weight_decay_is_the_zoo_programs_unless_named():
    """``weight_decay`` sets AdamW's decay (benchmarks/adamw_weight_decay.py sweeps it); 0.01 is
    the default's, and on ``logreg`` 0.1 makes the cosine-tuned baseline stronger (0.077 against
    0.097 on seeds 2 and 3)."""
    default = baseline("logreg", schedule="cosine", fresh_seeds=CONFIRM_SEEDS)
    same = baseline("logreg", schedule="cosine", fresh_seeds=CONFIRM_SEEDS, weight_decay=0.01)
    keys = ("loss", "lr", "sweep_loss")
    assert [same[k] for k in keys] == [default[k] for k in keys]
    decayed = baseline("logreg", schedule="cosine", fresh_seeds=CONFIRM_SEEDS, weight_decay=0.1)
    assert decayed["loss"] < 0.85 * default["loss"] and decayed["sweep_loss"] < default["sweep_loss"]


TINY_WEIGHT = """
import torch
from torch import nn
from search import task_from_module

class Tiny(nn.Module):  # one weight at 1e-5 with its optimum at 0: AdamW's best lr lies far below 1e-4
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((1,), 1e-5))

    def forward(self, x):
        return x * self.w

x, y = torch.ones(1, 1), torch.zeros(1, 1)

def make():
    return task_from_module("tiny", Tiny, lambda t: (x, y), nn.functional.mse_loss, 4, (x, y))
"""


def test_tuned_adamw_is_swept_past_an_end_of_its_grid_where_its_best_lies(tmp_path):
    """A baseline at the grid's end is not tuned: the sweep goes on past it, 4 points at a time,
    up to BASELINE_REACH points. The embedding proxy's AdamW is best at 0.32 (the grid ends at
    0.1, where its loss is 0.38 to 0.31); this task's weight needs steps of ~3e-6."""
    path = tmp_path / "tiny.py"
    path.write_text(TINY_WEIGHT)
    tiny = baseline(f"{path}:make")
    assert 1e-6 * 0.99 <= tiny["lr"] < BASELINE_LRS[0]
    at_grid_end, _ = train_copies([load("adamw")], f"{path}:make", [BASELINE_LRS[0]])
    assert tiny["loss"] < at_grid_end.mean() / 10
    high = baseline("embedding", schedule="cosine")
    assert high["lr"] > BASELINE_LRS[-1] and high["lr"] <= 10 ** (-1 + 0.25 * BASELINE_REACH) * 1.01


def test_a_candidate_above_the_confirmation_line_is_scored_on_fresh_seeds_at_its_chosen_lrs():
    """With ``confirm_above``, a candidate scoring above it is scored again on CONFIRM_SEEDS at the
    learning rates its sweep chose; one below keeps its sweep's scores."""
    tasks = ["quadratic", "logreg"]
    programs = [adamw_program(), parse(TRAIN.format("lr * 0.01 * g"))]
    plain = evaluate_programs(programs, tasks, BASE, hurdle=None)
    line = sum(r["fitness"] for r in plain) / 2
    above = int(plain[1]["fitness"] > line)
    confirmed = evaluate_programs(programs, tasks, BASE, hurdle=None, confirm_above=line)
    below = confirmed[1 - above]
    assert "confirmed" not in below and below["task_loss"] == plain[1 - above]["task_loss"]
    a, b = plain[above], confirmed[above]
    assert b["confirmed"] and b["task_lr"] == a["task_lr"] and b["status"] == "ok"
    for name in tasks:
        losses, _ = train_copies([programs[above]], name, [a["task_lr"][name]], CONFIRM_SEEDS)
        assert b["task_loss"][name] == pytest.approx(losses.mean(), rel=1e-5)
        assert b["task_score"][name] == score(b["task_loss"][name], BASE[name])
    assert b["fitness"] == aggregate(list(b["task_score"].values()))
    every = evaluate_programs(programs, tasks, BASE, hurdle=None, confirm_above=-math.inf)
    assert all(r["confirmed"] for r in every) and every[above]["task_score"] == b["task_score"]


def test_the_sweeps_lucky_draw_that_made_a_search_collapse_onto_signsgd_does_not_survive_confirmation():
    """Seed 1 of the 10-minute run of 2026-12-03 kept signSGD at this scale for its score on ``mlp``
    (+0.46 against tuned AdamW, under the search's cosine decay); at the learning rate its sweep
    chose, fresh seeds (and tuned AdamW on the same ones) put it well below AdamW."""
    lucky = parse(TRAIN.format("lr * 0.003775 * sign(g)"))
    swept = baseline("mlp", schedule="cosine")["loss"]
    fresh = baseline("mlp", schedule="cosine", fresh_seeds=CONFIRM_SEEDS)["loss"]
    (plain,) = evaluate_programs([lucky], ["mlp"], {"mlp": swept}, hurdle=None, schedule="cosine")
    (again,) = evaluate_programs([lucky], ["mlp"], {"mlp": fresh}, hurdle=None, schedule="cosine",
                                 confirm_above=-math.inf)
    assert plain["task_score"]["mlp"] > 0.4 and again["task_score"]["mlp"] < -0.3


@pytest.mark.parametrize("body, reason", [
    ("lr * g + 0.0155", "drift"),                  # a constant step for every coordinate
    ("lr * g * (1 + 0.01 * sqrt(abs(g)))", None),  # even factor of an odd term: symmetric
    ("lr * (g + 0.01 * sqrt(abs(g)))", "drift"),   # a small even term: still drift
    ("lr * abs(g)", "drift"),
    ("lr * w * 0.01", "ignores the gradient"),
    ("lr * 0 * g", "ignores the gradient"),
    ("lr * sign(g) + 0.01 * lr * w", None),
    ("lr * sign(g) + 0.01 * w", "lr is not a learning rate"),  # weight decay not scaled by lr
    ("g / lr", "lr is not a learning rate"),      # tuned like any, useless to a user
    ("sin(lr) * g", "lr is not a learning rate"),
    ("0.001 * g", "lr is not a learning rate"),
    ("tanh(lr) * g", "lr is not a learning rate"),  # grows with lr but saturates
    ("clip(g, lr) * lr", "lr is not a learning rate"),  # lr also the clip: tuning it changes the rule
    ("arcsin(lr) * g", "lr is not a learning rate"),  # nan for lr > 1 does not hide the rest
    # a 10-minute winner's floor: proportional over the sweep (0.04 and up), not below it, where its
    # generated optimizer's default lr lies
    ("max(0.01427, lr) * tanh(g)", "lr is not a learning rate"),
    ("lr * g / (1 + abs(g))", None),
    # 0 / 0 where a gradient coordinate is exactly 0 (a 20-second search on a user's task exported
    # AdamW with its eps ablated: every weight of an MLP with a constant input turned to nan)
    ("lr * g / sqrt(g * g)", "not finite where a gradient coordinate is exactly 0"),
    ("lr * g / abs(g)", "not finite where a gradient coordinate is exactly 0"),
    ("lr * g / (sqrt(g * g) + 1e-8)", None),
])
def test_guards_refuse_drift_and_gradient_free_rules(body, reason):
    found = guard(parse(TRAIN.format(body)))
    assert (found is None) if reason is None else found.startswith(reason)


def test_a_rule_where_lr_sets_the_momentum_is_refused():
    # the lineage of one README-job seed: lr is both the step size and the momentum's weight
    entangled = parse("def train(w, g, m, lr):\n    m = interp(g, m, lr)\n    return lr * m, m\n")
    assert guard(entangled).startswith("lr is not a learning rate: the step is not proportional")
    assert guard(parse("def train(w, g, m, lr):\n    m = interp(g, m, 0.9)\n    return lr * m, m\n")) is None


def test_drifting_and_gradient_free_rules_never_win():
    programs = [adamw_program()] + [parse(TRAIN.format(b)) for b in ("lr * 0.001 * g + 0.0155", "lr * w * 0.01")]
    good, drift, still = evaluate_programs(programs, ["quadratic", "logreg"], BASE)
    assert good["status"] == "ok" and good["fitness"] is not None
    assert drift["status"] == still["status"] == "guard" and drift["fitness"] is still["fitness"] is None


# seed 2's winner of a 10-minute search (docs/search.md): its state grows 3.8% per step, an
# exponential learning-rate decay fitted to the tasks' 60-300 steps
SHRINKING = ("def train(w, g, m, lr):\n    m = interp(-0.1053 * square(g), m, 1.038)\n"
             "    return arctan(g / (sqrt(m) + 2.176e-08)) * lr, m\n")


@pytest.mark.parametrize("name", ["adamw", "adam", "lion", "sgd", "momentum", "nesterov", "lars", "lamb"])
def test_zoo_passes_the_guards_and_its_steps_last(name):
    assert guard(load(name)) is None  # lr proportional to 3e-16 (weight decay scaled by lr too)
    assert horizon_fault(load(name)) is None


ADAM_CORRECTED = ("def train(w, g, m, v, step, lr):\n    m = interp(g, m, {})\n    v = interp(g * g, v, {})\n"
                  "    return lr * m / (sqrt(v / (1 - {} ** step)) + 1e-8), m, v\n")


def test_a_rule_whose_step_sets_its_own_schedule_is_refused():
    for b1, b2, correction in [(0.9, 0.999, 0.999), (0.9, 0.9999, 0.9999), (0.6, 0.708, 0.999)]:
        # bias correction, and seed 2's winner under a cosine decay (a correction that no longer
        # matches v's average: a warm-up over ~1,000 steps) settle: allowed
        assert guard(parse(ADAM_CORRECTED.format(b1, b2, correction))) is None
    # seed 1's winner under a cosine decay: its step grows as sqrt(step), 0.28 more by step 1e6
    growing = parse("def train(w, g, v, step, lr):\n    v = max(g * g, v)\n"
                    "    return lr * cbrt(g / (sqrt(v / step ** 3) + 1.8e-08)), v\n")
    assert guard(growing).startswith("a schedule of its own: its updates still change with step at step 100,000")
    decaying = parse("def train(w, g, step, lr):\n    return lr * g / log(1 + step)\n")
    assert guard(decaying).startswith("a schedule of its own")
    blowing_up = parse("def train(w, g, step, lr):\n    return lr * g * exp(step / 1000)\n")
    assert guard(blowing_up) == "a schedule of its own: its updates are not finite by step 100,001"
    # AdaX's step factor sqrt((1 + beta2)^t - 1) grows without bound, held level only by a state
    # growing as fast (both overflow float32 near step 887,000)
    assert guard(load("adax")).startswith("a schedule of its own")


ADAM_TIMES = ("def train(w, g, m, v, {}, lr):\n{}    m = interp(g, m, 0.9)\n    v = interp(g * g, v, 0.999)\n"
              "    return lr * m / (sqrt(v) + 1e-8) * {}, m, v{}\n")


@pytest.mark.parametrize("inputs, body, factor, reason", [
    # an audit's adversary: a state counting the steps is `step` the schedule check did not see
    # (the refused cbrt(g / sqrt(v / step^3)) rule came back through one, +0.069 held out)
    ("c, step", "    c = c + 1\n", "sqrt(c)", "state c counts the steps"),
    ("c, step", "    c = c + 1\n", "(1 + 1e6 * (c > 1500))", "state c counts the steps"),
    # a later audit's: counters that read g to no effect where no gradient coordinate is 0
    ("c, step", "    c = c + 1 + 0 * g\n", "sqrt(c)", "state c counts the steps"),
    ("c, step", "    c = c + abs(sign(g))\n", "sqrt(c)", "state c counts the steps"),
    ("c, step", "    c = c + sign(g) * sign(g) + 1e-12 * w\n", "sqrt(c)", "state c counts the steps"),
    # a window past the tasks and the horizon run where the step explodes or stops: scored exactly as
    # the rule without it, its generated optimizer diverged at step 2,002
    ("step", "", "(1 + 1e6 * (step > 2000 and step < 99990))", "its updates at step 2,251 are"),
    ("step", "", "(step < 2000 or step > 99990)", "its updates at step 2,251 are 0 in size"),
    ("c, step", "", "1", None),  # a state that never changes counts nothing
    ("c, step", "    c = c + abs(g)\n", "1", None),  # a state of the gradient's values: no clock
    # a count of the steps gets step's checks: a bias correction over the steps a coordinate got a
    # gradient (lazy Adam's) passes, as one over step does; a count of another kind is refused
    ("c, step", "    c = c + (g != 0)\n", "(1 / (1 - 0.9 ** max(c, 1)))", None),
    ("c, step", "    c = 0.5 * c + 1\n", "c", "state c counts the steps its own way"),
], ids=["counter", "counter_bomb", "counter_reading_g", "counter_of_nonzero_g", "counter_nearly_of_w",
        "window_bomb", "window_stop", "constant_state", "gradient_state", "bias_correction_over_a_count",
        "other_count"])
def test_a_schedule_hidden_in_a_state_or_a_window_is_refused(inputs, body, factor, reason):
    found = guard(parse(ADAM_TIMES.format(inputs, body, factor, ", c" if "c" in inputs else "")))
    if reason is None:
        assert found is None
    else:
        assert found.startswith("a schedule of its own") and reason in found


def test_a_nan_skipping_count_of_steps_is_a_count_of_the_steps():
    """A per-tensor count of the steps whose gradient is finite (Tiger's kind of guard), read in a
    bias correction: it passed before the clock check judged states by their values, and does again."""
    src = ("def f(w, g, m, s: scalar, lr):\n    ok = allfinite(g)\n    s = s + ok\n"
           "    m = where(ok, interp(g, m, 0.9), m)\n    return lr * ok * m / (1 - 0.9 ** max(s, 1)), m, s\n")
    assert guard(parse(src)) is None
    assert "state s counts the steps" in guard(parse(src.replace("** max(s, 1))", "** max(s, 1)) * sqrt(s)")))


ADAM_GATED = ("def train(w, g, m, v, step, lr):\n    m = interp(g, m, 0.9)\n    v = interp(g * g, v, 0.999)\n"
              "    d = m / (1 - 0.9 ** step) / (sqrt(v / (1 - 0.999 ** step)) + 1e-08) + 0.01 * w\n"
              "    late = sign(max(step - 4, 0))\n    big = size(w) > 12\n    return {}, m, v\n")


@pytest.mark.parametrize("update, reason", [
    # an audit's adversaries: each passed the guards, seen only on steps 1-4 of two small tensors,
    # and the first four shared the warm start's fingerprint (its score, untrained)
    ("lr * 0.001 * (d + 0.1 * late)", "drift"),
    ("lr * 0.001 * d + 1e-4 * late", "drift"),
    ("(10 / lr) * d * late + lr * 0.001 * d * (1 - late)", "lr is not a learning rate"),
    ("lr * 0.001 * d * sign(max(1000.5 - step, 0))",
     "a schedule of its own: its updates are 0 at step 1,000,001"),
    ("lr * 0.001 * (d + where(big, 0.1, 0))", "drift"),
    ("lr * 0.001 * where(big, w, d)", "ignores the gradient of a parameter of shape (13,)"),
    ("where(big, 0.001 / lr, lr * 0.001) * d", "lr is not a learning rate"),
    ("lr * 0.001 * d * where(big, sqrt(step), 1)", "a schedule of its own: its updates still change"),
    ("lr * 0.001 * where(big, m / sqrt(v), d)", "not finite where a gradient coordinate is exactly 0"),
    ("lr * 0.001 * where(ndim(w) == 0, g, d)", None),  # plain SGD on 0-d tensors: a rule like any
], ids=["drift_late", "drift_late_absolute", "inverse_lr_late", "stops_at_1001", "drift_big", "no_grad_big",
        "inverse_lr_big", "sqrt_step_big", "no_eps_big", "sgd_on_scalars"])
def test_a_fault_from_step_5_or_on_larger_tensors_only_is_refused(update, reason):
    found = guard(parse(ADAM_GATED.format(update)))
    assert (found is None) if reason is None else found.startswith(reason)


def test_an_eps_float32_cannot_hold_is_none():
    # 1e-60 kept the float64 guard's 0 / 0 away; in float32, where tasks and users train, it is 0
    tiny = parse("def train(w, g, v, lr):\n    v = interp(g * g, v, 0.999)\n"
                 "    return lr * g / (sqrt(v) + 1e-60), v\n")
    assert guard(tiny).startswith("not finite where a gradient coordinate is exactly 0")


def test_a_step_that_stops_before_the_horizons_window_does_not_last():
    # its gradient part 0 over steps 100-200 had passed ("the tasks judge"): it trains for 99 steps
    stops = parse("def train(w, g, step, lr):\n    return lr * g * (step < 100)\n")
    assert horizon_fault(stops) == "the step does not last: its gradient part is 0 over steps 100-200"


def test_a_step_that_vanishes_or_explodes_past_the_tasks_length_is_caught():
    assert horizon_fault(adamw_program()) is None
    adagrad = parse("def train(w, g, v, lr):\n    v = v + g * g\n    return lr * g / (sqrt(v) + 1e-8), v\n")
    assert horizon_fault(adagrad) is None  # shrinks as 1/sqrt(t): lasts
    assert "falls to" in horizon_fault(parse(SHRINKING))
    growing = parse("def train(w, g, m, lr):\n    m = interp(1, m, 1.01)\n    return lr * g * m, m\n")
    assert "grows to" in horizon_fault(growing)


def test_a_step_that_decays_faster_and_faster_is_caught_before_it_vanishes():
    # seed 2's winner of a 10-minute search of 2026-12-01 (after the lr guard): its state grows 1.4%
    # per step, the step falls 3.5x from steps 125-250 to 250-500, then 9.5x; still 3.7e-3 of its
    # early size at step 1,000, inside the ratio bound
    schedule = ("def train(w, g, m, lr):\n    m = interp(square(g), m, {})\n"
                "    return lr * arctan(g / interp(sqrt(m), 1e-08, -0.9036)), m\n")
    assert "a schedule fitted to the tasks' length" in horizon_fault(parse(schedule.format(1.014)))
    assert horizon_fault(parse(schedule.format(0.999))) is None
    for beta in (0.995, 0.999, 0.9999):  # an EMA of g^2 settling (or not yet) decelerates: it lasts
        slow = parse("def train(w, g, m, v, lr):\n    m = interp(g, m, 0.9)\n"
                     f"    v = interp(g * g, v, {beta})\n    return lr * m / (sqrt(v) + 1e-8), m, v\n")
        assert horizon_fault(slow) is None
    stopped = parse("def train(w, g, step, lr):\n    return lr * g * max(abs(step - 375) - 126, 0)\n")
    assert horizon_fault(stopped) == "the step does not last: its gradient part is 0 over steps 250-500"
    # the mirror of the first: a step growing 0.6% a step stays within the ratio bound over 1,000
    # steps but accelerates, as a schedule fitted to the tasks' length would
    for factor in (1.006, 1 / 1.006):
        growing = parse(f"def train(w, g, c: scalar(init=1), lr):\n    c = c * {factor}\n"
                        "    return lr * g * c, c\n")
        assert "a schedule fitted to the tasks' length" in horizon_fault(growing)


@pytest.mark.parametrize("decades", [1, 2.5, 3.5])
def test_a_floor_on_the_step_below_the_sweep_is_no_learning_rate(decades):
    """lr is checked four decades below the sweep: a `max(c, lr)` floor there trains nothing once a
    user lowers lr (a 10-minute winner's max(0.01427, lr) * tanh(...))."""
    floor = min(CANDIDATE_LRS) * 10.0 ** -decades
    assert "proportional to lr" in guard(parse(f"def train(w, g, lr):\n    return max({floor!r}, lr) * g\n"))


def test_tuned_adamw_is_measured_again_at_its_lr_and_both_neighbours(monkeypatch):
    from search import evaluate

    seen = []
    real = evaluate.remeasure

    def spy(programs, task, chosen, *args, **kw):
        seen.append([lr for _, lr in chosen])
        return real(programs, task, chosen, *args, **kw)

    monkeypatch.setattr(evaluate, "remeasure", spy)
    tuned = baseline("logreg", fresh_seeds=CONFIRM_SEEDS)
    (rates,) = seen  # one pass: three neighbouring points of the grid, 10 ** 0.25 apart
    assert len(rates) == 3 and tuned["lr"] in rates
    np.testing.assert_allclose(np.diff(np.log10(rates)), [0.25, 0.25])


def test_meta_validation_scores_a_step_that_does_not_last_minus_one():
    # trained normally on the proxies; refused, with the reason, when meta-validated
    plain, held_out = (run_job({"kind": "evaluate", "id": 0, "sources": [SHRINKING], "tasks": ["quadratic"],
                                "baselines": BASE, "hurdle": None, "horizon": h})["results"][0] for h in (False, True))
    assert plain["status"] == "ok" and plain["fitness"] > -1
    assert held_out["status"] == "horizon" and held_out["fitness"] == -1 and "does not last" in held_out["error"]


@pytest.mark.parametrize("body, status", [
    ("g * 0 / 0", "diverged"),                     # NaN from the first step
    ("-g * lr * 1000", "diverged"),                # gradient ascent: blows up
    ("lr * g * dim(w, 3)", "error"),               # an exception inside evaluation
])
def test_broken_candidates_are_contained(body, status):
    r = evaluate_program(parse(TRAIN.format(body)), ["quadratic", "logreg"], BASE)
    assert r["status"] == status and r["error"]
    assert r["fitness"] == (-SCORE_BOUND if status == "diverged" else None)


def test_batched_candidates_score_as_they_would_alone():
    rng = np.random.default_rng(1)
    programs = [adamw_program(), parse(TRAIN.format("lr * 0.01 * g")), mutate(adamw_program(), rng)[0]]
    together = evaluate_programs(programs, ["quadratic", "logreg"], BASE, hurdle=None)
    for p, r in zip(programs, together):
        alone = evaluate_program(p, ["quadratic", "logreg"], BASE, hurdle=None)
        assert r["status"] == alone["status"]
        for task, s in alone["task_score"].items():
            assert r["task_score"][task] == pytest.approx(s, abs=1e-4)


def test_a_state_holding_the_weights_keeps_the_value_of_its_step():
    # The copies' weights are updated in place; `m = w` must not follow them.
    body = "def train(w, g, m, lr):\n    update = lr * 0.1 * g + 0.01 * (w - m)\n    return update, {}\n"
    aliased, _ = train_copies([parse(body.format("w"))], "quadratic", [0.1, 1.0])
    copied, _ = train_copies([parse(body.format("w * 1.0"))], "quadratic", [0.1, 1.0])
    np.testing.assert_array_equal(aliased, copied)


def test_nan_in_some_copies_does_not_fail_the_candidate():
    # The largest lrs make plain gradient descent diverge on the quadratic; the smaller ones count.
    r = evaluate_program(parse(TRAIN.format("lr * 0.1 * g")), ["quadratic"], BASE)
    assert r["status"] == "ok" and math.isfinite(r["fitness"]) and r["task_lr"]["quadratic"] < 30


def test_tuned_adamws_loss_on_the_scoring_seeds_is_the_best_near_its_chosen_lr():
    # mlp's lr chosen on seeds 0 and 1 (0.056, by 1%) is past the edge of stability on seeds 2 and 3:
    # 0.106 there against 0.060 one point lower, which gave every candidate +0.57 on the task
    tuned = baseline("mlp", fresh_seeds=CONFIRM_SEEDS, schedule="cosine")
    assert tuned["loss"] < 0.07 and tuned["lr"] < 0.05


def test_hurdle_stops_bad_candidates_after_the_first_task():
    r = evaluate_program(parse(TRAIN.format("lr * 1e-6 * g")), ["quadratic", "logreg"], BASE, hurdle=-0.5)
    assert r["status"] == "hurdle" and list(r["task_score"]) == ["quadratic"]
    assert r["fitness"] == pytest.approx(aggregate([r["task_score"]["quadratic"], -SCORE_BOUND]))


def test_unparsable_job_is_an_error_result_and_the_rest_of_the_batch_is_scored():
    r = run_job({"id": 7, "kind": "evaluate", "sources": ["import os", to_source(adamw_program())],
                 "tasks": ["quadratic"], "baselines": BASE})
    bad, good = r["results"]
    assert r["id"] == 7 and bad["status"] == "error" and bad["fitness"] is None
    assert good["status"] == "ok"


def test_renamed_and_reordered_programs_share_hash_and_fingerprint():
    a = parse("""
def train(w, g, m, v, lr):
    m = interp(g, m, 0.9)
    t = g * g
    v = interp(t, v, 0.999)
    d = w * 0.01
    u = m / sqrt(v)
    update = (u + d) * lr
    return update, m, v
""")
    b = parse("""
def train(w, g, v, m, lr):
    decay = 0.01 * w
    sq = g * g
    junk = exp(g)
    v = interp(g, v, 0.9)
    m = interp(sq, m, 0.999)
    update = lr * (decay + v / sqrt(m))
    return update, v, m
""")
    da, db = describe(a), describe(b)
    assert da["structural_hash"] == db["structural_hash"]
    assert da["fingerprint"] == db["fingerprint"]
    assert db["n_live"] < db["n_statements"]  # the dead `junk` statement is not live
    c = parse(to_source(a).replace("0.999", "0.99"))
    assert describe(c)["structural_hash"] != da["structural_hash"]
    assert describe(c)["fingerprint"] != da["fingerprint"]


def test_seen_finds_a_duplicate_by_live_source_hash_or_fingerprint_with_describes_keys():
    base = adamw_program()
    seen = Seen()
    info, hit = seen.describe(base)
    assert hit is None and info == describe(base)
    row = {**info, "id": 1}
    seen.add(row)
    src = to_source(base)
    dead = parse(src.replace("    return", "    junk = exp(g)\n    return"))  # same live part
    renamed = parse(src.replace("m", "mom"))  # same canonical form, other names
    near = parse(src.replace("0.9,", "0.90001,"))  # the same updates to 4 digits
    rescaled = parse(src.replace("lr * 0.001", "lr * 0.0003"))  # the same rule at other learning rates
    for child in (dead, renamed, near, rescaled):
        info, hit = seen.describe(child)
        assert hit is row and info == describe(child)
    assert lr_factor(row, seen.describe(rescaled)[0]) == pytest.approx(0.001 / 0.0003)
    assert lr_factor(row, seen.describe(renamed)[0]) == 1.0
    other = parse(src.replace("0.999", "0.99"))
    assert seen.describe(other)[1] is None


def test_a_state_kept_at_its_start_value_is_no_memory_and_shares_the_keys():
    # as in a 10-minute winner: k = sign(k) keeps k at 0, so the average is of 0.257 g^2
    kept = parse("def train(w, g, m, k, lr):\n    k = sign(k)\n"
                 "    m = interp(g * interp(g, k, 0.743), m, 0.9)\n    return lr * m, m, k\n")
    plain = parse("def train(w, g, m, lr):\n    m = interp(g * interp(g, 0, 0.743), m, 0.9)\n"
                  "    return lr * m, m\n")
    a, b = describe(kept), describe(plain)
    assert a["memory"] == b["memory"] == 1.0 and a["n_live"] == b["n_live"] == 1
    assert a["live_source"] == b["live_source"] and a["structural_hash"] == b["structural_hash"]
    seen = Seen()
    seen.add({**b, "id": 1})
    assert seen.describe(kept)[1]["id"] == 1


def test_mutants_keys_are_those_of_their_live_part():
    """The cache keys come from the live part alone, which is what makes a child differing only
    in dead code a cheap hit; its canonical form is the whole program's."""
    rng = np.random.default_rng(5)
    program = adamw_program()
    for _ in range(200):
        program, _ = mutate(program, rng)
        live = eliminate_dead_code(program)
        assert structural_hash(live) == structural_hash(program)
        assert describe(live)["fingerprint"] == describe(program)["fingerprint"]


def hang(job):
    """A job that never ends (stands in for an endless loop inside an evaluation)."""
    if job.get("hang"):
        while True:
            time.sleep(0.1)
    return {"id": job["id"], "status": "ok"}


def crash(job):
    """A job whose worker process dies outright."""
    import os

    os._exit(3)


def _collect(ex, n, limit=60):
    out, t0 = [], time.monotonic()
    while len(out) < n and time.monotonic() - t0 < limit:
        out += ex.poll(0.2)
    return out


def test_endless_job_is_killed_and_the_executor_goes_on():
    ex = LocalExecutor(workers=1, timeout=2, target=hang)
    try:
        ex.submit({"id": 1, "hang": True})
        (r,) = _collect(ex, 1)
        assert r["id"] == 1 and r["status"] == "timeout" and r["fitness"] is None
        ex.submit({"id": 2})
        (r,) = _collect(ex, 1)
        assert r == {"id": 2, "status": "ok"}
    finally:
        ex.close()


def test_ctrl_c_during_a_workers_start_neither_kills_it_nor_prints_a_traceback():
    # A terminal's Ctrl-C reaches the whole process group, workers still importing torch included.
    ex = LocalExecutor(workers=1, timeout=30, target=hang)
    try:
        os.kill(ex.slots[0]["proc"].pid, signal.SIGINT)  # at once: the worker is still starting
        ex.submit({"id": 7})
        (r,) = _collect(ex, 1, limit=120)
        assert r == {"id": 7, "status": "ok"} and ex.slots[0]["proc"].is_alive()
    finally:
        ex.close()


ORPHANED = """
import time
from search.executors import LocalExecutor

def forever(job):
    while True:
        time.sleep(0.1)

if __name__ == "__main__":
    ex = LocalExecutor(workers=1, timeout=600, target=forever)
    while not ex.slots[0]["ready"]:
        ex.poll(0.2)
    ex.submit({"id": 1})
    print(ex.slots[0]["proc"].pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_a_worker_whose_search_is_killed_exits_at_once(tmp_path):
    """A search killed by SIGKILL left its workers running their jobs to the end (the audit saw them
    ~10 s later, writing to the user's terminal); one in an endless job never ended."""
    import subprocess
    import sys

    script = tmp_path / "search_like.py"
    script.write_text(ORPHANED)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        time.sleep(1.0)  # the job has begun
    finally:
        parent.kill()
        parent.wait()
    if not _exits_within(worker, 10):
        pytest.fail("the orphaned worker still runs 10 s after its search was killed")


def _exits_within(pid: int, seconds: float) -> bool:
    """Does process ``pid`` end within ``seconds``? (Killed if not, so that no test leaves it.)"""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # exited, not yet reaped by PID 1
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return False


ORPHANED_AT_START = """
import time
from search.executors import LocalExecutor

if __name__ == "__main__":
    ex = LocalExecutor(workers=1, timeout=600)
    print(ex.slots[0]["proc"].pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_a_worker_whose_search_is_killed_while_it_starts_exits(tmp_path):
    """A search killed in its first second left its workers alive for good (an audit counted nine,
    2.4 GB): each took its parent's pid after importing torch, by when init had adopted it."""
    import subprocess
    import sys

    script = tmp_path / "search_like.py"
    script.write_text(ORPHANED_AT_START)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())  # still importing torch
    finally:
        parent.kill()
        parent.wait()
    if not _exits_within(worker, 60):  # (its imports first, on a loaded machine)
        pytest.fail("the worker of a search killed while it started still runs 60 s later")


def test_a_ctrl_c_while_a_worker_is_spawned_is_taken_after_not_lost():
    """Ctrl-C was ignored while a worker was spawned, and one in that moment was lost: a search
    stopped in its first tens of milliseconds ran its whole budget."""
    import threading

    from search.executors import _ctrl_c_held

    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_held():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.05)
        time.sleep(0.05)


def test_a_second_ctrl_c_while_the_workers_stop_kills_them_rather_than_leaving_them():
    ex = LocalExecutor(workers=1, timeout=30, target=hang)
    proc = ex.slots[0]["proc"]
    join = proc.join
    calls = []

    def interrupted_join(timeout=None):  # the user's second Ctrl-C, during the 2 s grace
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt
        join(timeout)

    proc.join = interrupted_join
    try:
        ex.close()
    except KeyboardInterrupt:  # (not raised on: it would end the test session)
        pytest.fail("close() let the Ctrl-C out: the CLI ended with its worker alive")
    assert not proc.is_alive() and ex.slots == [] and len(calls) == 2


def test_dead_worker_is_replaced():
    ex = LocalExecutor(workers=1, timeout=30, target=crash)
    try:
        ex.submit({"id": 5})
        (r,) = _collect(ex, 1)
        assert r["status"] == "error" and "exit code 3" in r["error"]
        assert ex.idle() == 1
    finally:
        ex.close()


def test_a_loss_of_zero_scores_the_top_of_the_scale():
    assert score(0.0, 1.0) == SCORE_BOUND and score(0.0, 0.0) == 0.0


def test_a_sweep_whose_best_lies_on_its_upper_edge_widens_to_the_grids_last_point(monkeypatch):
    """The window ends one point below the grid's end, the loss falls toward the end: the last point
    must be trained (an off-by-one in the widening left it untrained)."""
    from search import evaluate

    last = len(CANDIDATE_LRS) - 1

    def falling(programs, task, lrs, seeds=(0, 1), device="cpu", points=None, schedule="constant"):
        out = np.full((len(programs), len(seeds), len(lrs)), math.inf)
        for i, trained in enumerate(points):
            for j in trained:
                out[i, :, j] = (j - last) ** 2 + 1.0
        return out, [None] * len(programs)

    monkeypatch.setattr(evaluate, "train_copies", falling)
    losses, _ = widening_sweep([None], "quadratic", CANDIDATE_LRS, [(last - 3, last - 1)])
    assert int(np.argmin(losses[0].mean(0))) == last
