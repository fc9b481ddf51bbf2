"""The discovery benchmark: does a search from AdamW find a rule that beats tuned AdamW on tasks it
never saw, and what does the rule look like once simplified?

For each seed, a fresh process runs ``optdsl search --budget B --seed S`` as a user would; the
benchmark then reads its database: the winner (held-out evidence first), its simplified form,
proxy and held-out scores per task, evaluations per second (every child judged: trained, or
refused by a guard in milliseconds) and children trained per second, cache hit rate and redundant
statements. Last, every winner, AdamW and Lion are trained through their *generated* torch
optimizers (``codegen.build(program, "torch")``, not the search's evaluator) on real tasks that
are neither proxies nor held-out tasks, each with its learning rate tuned on the same grid.

    python benchmarks/discovery.py --seeds 0,1,2 --budget 10m            # prints the tables
    python benchmarks/discovery.py --seeds 0,1,2 --budget 10m --out docs/search.md
    python benchmarks/discovery.py --dir runs/ --reuse --out docs/search.md   # re-read kept searches

``--init``, ``--tasks`` and ``--schedule`` pass to the searches (``--tasks
quadratic@2,logreg@2,embedding@2,mlp@2,transformer@2``: the proxies at twice their batch, the
held-out tasks following); the real tasks train under the same schedule
(the search's default, a cosine decay: torch's ``CosineAnnealingLR`` over each task's steps, for
AdamW and Lion too; ``--schedule constant`` trains them at a constant lr).

``--out`` rewrites only the section between ``<!-- discovery:begin -->`` and
``<!-- discovery:end -->`` of that file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import codegen
from codegen.bench import cpu_name
from optdsl import load, to_source
from optdsl.parser import parse
from search.evaluate import SCHEDULES
from search.evolution import SearchConfig, hurdles_only, weighs_losses
from search.export import exported_program, simplest
from search.family import lion_family
from search.report import totals
from search.selection import winner
from search.store import Store

#: The same absolute grid for every optimizer on the real tasks (1e-5 .. 1e-1, 13 points), extended
#: by up to REAL_REACH points past an edge while an optimizer's best lies on it: a winner may scale
#: its lr inside (``lr * 0.007 * ...``), and an optimum past the grid is not a tuned result.
REAL_LRS = tuple(float(x) for x in np.logspace(-5, -1, 13))
REAL_REACH = 6
REAL_SEEDS = (0, 1, 2, 3)


# --- the real tasks: ordinary torch modules on data that ship with scikit-learn ------------------
def _digits_autoencoder():
    """A ReLU autoencoder 64-32-8-32-64 on the raw 8x8 digits (constant pixels included), MSE."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)
    train, val = x[:1400], x[1400:]

    def model():
        return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 64))

    return "digits autoencoder (ReLU 64-32-8-32-64, MSE, 400 steps)", model, train, train, val, val, \
        torch.nn.functional.mse_loss, 400


def _breast_cancer_mlp():
    """A LayerNorm + GELU MLP classifier on scikit-learn's breast-cancer data (30 features)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    perm = np.random.default_rng(0).permutation(len(data.target))
    x = torch.tensor(data.data[perm], dtype=torch.float32)
    y = torch.tensor(data.target[perm], dtype=torch.long)
    mean, std = x[:450].mean(0), x[:450].std(0)
    x = (x - mean) / std

    def model():
        return torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.LayerNorm(64), torch.nn.GELU(),
                                   torch.nn.Linear(64, 2))

    return "breast-cancer MLP (LayerNorm, GELU, cross-entropy, 300 steps)", model, x[:450], y[:450], x[450:], \
        y[450:], torch.nn.functional.cross_entropy, 300


class _CausalLM(torch.nn.Module):
    """Character embedding + learned positions, one pre-norm ``nn.TransformerEncoderLayer`` (4
    heads, causal mask), LayerNorm, a linear read-out: torch's own modules, unlike the proxies."""

    def __init__(self, vocab: int, d: int = 32, context: int = 32):
        super().__init__()
        self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Parameter(torch.randn(context, d) * 0.1)
        self.block = torch.nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.norm, self.out = torch.nn.LayerNorm(d), torch.nn.Linear(d, vocab)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, x):
        h = self.block(self.emb(x) + self.pos[: x.shape[1]], src_mask=self.mask, is_causal=True)
        return self.out(self.norm(h))


def _char_lm():
    """Next-character prediction on English text (scikit-learn's dataset descriptions: the first
    90% to train on, windows of the last 10% held out)."""
    from search.tasks import english_text

    (ids, vocab, split), context = english_text(), 32
    windows = ids.unfold(0, context + 1, 8)  # (N, 33), a window every 8 characters
    cut = split // 8 - 4  # no training window reaches into the held-out text
    train, val = windows[:cut], windows[cut + 4:]

    def loss(logits, y):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))

    return "character LM (nn.TransformerEncoderLayer, d=32, context 32, 200 steps)", \
        lambda: _CausalLM(vocab, 32, context), train[:, :-1], train[:, 1:], val[:, :-1], val[:, 1:], loss, 200


REAL_TASKS = (_digits_autoencoder, _breast_cancer_mlp, _char_lm)


def train_real(cls, lr: float, task, seed: int, schedule: str = "constant") -> float:
    """Final held-out loss of ``task`` trained with the optimizer class ``cls`` at ``lr``, held or
    (``schedule="cosine"``) decayed to 0 over the steps by torch's ``CosineAnnealingLR``."""
    _, make, xt, yt, xv, yv, loss_fn, steps = task
    torch.manual_seed(seed)
    net = make()
    opt = cls(net.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    gen = torch.Generator().manual_seed(100 + seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (64,), generator=gen)
        opt.zero_grad()
        loss = loss_fn(net(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        if decay is not None:
            decay.step()
        if not torch.isfinite(loss):
            return math.inf
    with torch.no_grad():
        final = float(loss_fn(net(xv), yv))
    return final if math.isfinite(final) else math.inf


def tuned(cls, task, schedule: str = "constant") -> tuple[float, float]:
    """``(loss, lr)``: the lr with the lowest mean held-out loss over the seeds, on
    :data:`REAL_LRS` extended a grid point at a time past an edge where the best lies."""
    step = REAL_LRS[1] / REAL_LRS[0]
    mean_loss = lambda lr: float(np.mean([train_real(cls, lr, task, s, schedule) for s in REAL_SEEDS]))
    losses = {lr: mean_loss(lr) for lr in REAL_LRS}
    for _ in range(REAL_REACH):
        loss, lr = min((v, k) for k, v in losses.items())
        if not math.isfinite(loss) or min(losses) < lr < max(losses):
            break
        nxt = lr / step if lr == min(losses) else lr * step
        losses[nxt] = mean_loss(nxt)
    loss, lr = min((v, k) for k, v in losses.items())
    return (loss, lr) if math.isfinite(loss) else (math.inf, math.nan)


# --- one search per seed -------------------------------------------------------------------------
def search_settings(init: str | None, tasks: str | None, schedule: str) -> tuple[str, ...]:
    """The ``optdsl search`` arguments for the benchmark's ``--init``, ``--tasks`` and ``--schedule``,
    only those that differ from the search's defaults (the table says which were given).

    Example:
        >>> search_settings(None, "mlp@2", "cosine")
        ('--tasks', 'mlp@2')
    """
    return (*(("--init", init) if init else ()), *(("--tasks", tasks) if tasks else ()),
            *(("--schedule", schedule) if schedule != SearchConfig.schedule else ()))


def search_files(folder: str, seed: int) -> tuple[str, str, str]:
    """Seed ``seed``'s folder under ``folder`` (``seed<N>/``, as each search writes
    ``best_optimizer.py`` beside its database), its database and its wall-time file."""
    own = os.path.join(folder, f"seed{seed}")
    return own, os.path.join(own, f"seed{seed}.sqlite"), os.path.join(own, f"seed{seed}.json")


def kept_search(folder: str, seed: int) -> bool:
    """Is a finished search of ``seed`` kept in ``folder`` (its database and wall time)?"""
    return all(map(os.path.exists, search_files(folder, seed)[1:]))


def run_search(seed: int, budget: str, workers: int, folder: str, reuse: bool = False,
               settings: tuple[str, ...] = ()) -> dict:
    """One search as a user runs it (its wall time kept beside the database), or with ``reuse``
    the one already in ``folder`` (:func:`kept_search`): read again, e.g. after a change to how
    winners are shown."""
    kept = reuse and kept_search(folder, seed)
    folder, db, timing = search_files(folder, seed)
    if not kept:
        os.makedirs(folder, exist_ok=True)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "optdsl.cli", "search", "--budget", budget, "--seed", str(seed),
                        "--workers", str(workers), "--db", db, *settings],
                       check=True, stdout=subprocess.DEVNULL)
        with open(timing, "w") as f:  # what --reuse reports: this run's, not the reading command's
            json.dump({"wall_s": time.monotonic() - t0, "budget": budget, "settings": list(settings),
                       "machine": machine(), "code": code_version()}, f)
    with open(timing) as f:
        kept_as = json.load(f)
    wall = kept_as["wall_s"]
    store = Store(db)
    t = totals(store)
    trained = t["evaluated"] - store.by_status().get("guard", {}).get("rows", 0)  # a refusal trains nothing
    best = winner(store)
    program = exported_program(best, loss_averse=weighs_losses(store), hurdle_only=hurdles_only(store))
    out = {"seed": seed, "wall_s": wall, "run_as": _run_as(kept_as), "evaluated": t["evaluated"],
           "evals_per_s": t["evaluated"] / wall,
           "trained_per_s": trained / wall, "cache_hit_rate": t["cache_hit_rate"],
           "redundant": t["redundant_fraction"],
           "winner_id": best["id"], "proxy": best["fitness"], "held_out": best["meta_fitness"],
           "proxy_tasks": best["task_score"], "held_out_tasks": best["meta_task_score"] or {},
           "source": to_source(program)}
    out["lion_family"] = lion_family(program)
    out["lion_scored"], best_lion = lion_family_scored(store.originals())
    out["lion_best"] = best_lion and {"id": best_lion["id"], "proxy": best_lion["fitness"],
                                      "held_out": best_lion["meta_fitness"]}
    store.close()
    return out


def _run_as(kept: dict) -> str:
    """How a search was run, from its kept wall-time file (one written before this was recorded
    says so): ``Machine: M, optdsl at C. Budget B per seed, with/from ...`` (C: :func:`code_version`,
    where recorded)."""
    if "budget" not in kept:
        return "Machine, budget and settings: not recorded with this search."
    settings = kept["settings"]
    how = f"with `{' '.join(settings)}`" if settings else "from AdamW, the README's default settings"
    code = f", optdsl at {kept['code']}" if kept.get("code") else ""
    return f"Machine: {kept['machine']}{code}. Budget {kept['budget']} per seed, {how}."


def lion_family_scored(rows: list[dict]) -> tuple[int, dict | None]:
    """How many of the search's scored programs are in the Lion family once simplified
    (:func:`search.family.lion_family`), and the best of them by proxy fitness. Only programs whose
    live part calls ``sign`` are simplified (all of them would take minutes), so a rule that spells
    the sign out, such as ``m / abs(m)``, is not counted.

    Example:
        >>> signum = "def train(w, g, m, lr):\\n    m = interp(g, m, 0.3)\\n    return lr * sign(m), m\\n"
        >>> rows = [{"id": 1, "status": "ok", "fitness": 0.1, "source": signum, "live_source": signum,
        ...          "task_lr": {"mlp": 0.01}}]
        >>> count, best = lion_family_scored(rows)
        >>> count, best["id"]
        (1, 1)
    """
    found = [r for r in rows if r["status"] == "ok" and r["fitness"] is not None
             and "sign(" in (r["live_source"] or r["source"]) and lion_family(simplest(r).program)]
    return len(found), max(found, key=lambda r: r["fitness"], default=None)


# --- reporting ---------------------------------------------------------------------------------
def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def code_version() -> str | None:
    """The commit of the optdsl checkout that runs this (``+edits`` when its tracked files differ
    from it), kept with each search: ``--reuse`` can read searches made by other code, whose fitness
    may differ, and the table then names each seed's. None outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = lambda *a: subprocess.run(["git", "-C", root, *a], check=True, capture_output=True, text=True,
                                    timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout
        return None
    return head + ("+edits" if dirty else "")


def markdown(searches: list[dict], real: dict, schedule: str = "constant") -> str:
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"
    run_as = sorted({s["run_as"] for s in searches})
    said = run_as if len(run_as) == 1 else [f"Seed {s['seed']}: {s['run_as']}" for s in searches]
    lines = [" ".join(said), "",
             ("| seed | evaluations | evals/s | trained/s | cache hits | redundant | proxy | held-out "
              "| Lion family | Lion-family programs scored (best proxy) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in searches:
        lines.append(f"| {s['seed']} | {s['evaluated']} | {s['evals_per_s']:.2f} | "
                     f"{s['trained_per_s']:.2f} | "
                     f"{100 * s['cache_hit_rate']:.1f}% | "
                     f"{100 * s['redundant']:.1f}% | {fmt(s['proxy'])} | {fmt(s['held_out'])} | "
                     f"{'yes' if s['lion_family'] else 'no'} | {_lion_scored(s)} |")
    lines += ["", "Held-out score per task (log of tuned AdamW's loss over the winner's, clipped to [-1, 1]):", ""]
    tasks = sorted({t for s in searches for t in s["held_out_tasks"]})
    lines += ["| seed | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for s in searches:
        lines.append(f"| {s['seed']} | " + " | ".join(fmt(s["held_out_tasks"].get(t)) for t in tasks) + " |")
    for s in searches:
        lines += ["", f"Seed {s['seed']} winner (#{s['winner_id']}), simplified:", "", "```python",
                  s["source"].rstrip(), "```"]
    decay = "a cosine lr decay to 0, torch's CosineAnnealingLR, for each; " if schedule == "cosine" else ""
    lines += ["", ("Trained through the generated torch optimizers on tasks the search never saw "
                   f"({decay}lr tuned on {len(REAL_LRS)} points 1e-5..1e-1, extended past an edge where the best lies, "
                   f"mean of {len(REAL_SEEDS)} seeds; "
                   "ratio < 1 beats AdamW):"), ""]
    for task, rows in real.items():
        lines += [f"**{task}**", "", "| optimizer | best lr | held-out loss | loss / AdamW's |", "|---|---|---|---|"]
        ref = rows["AdamW"][0]
        for name, (loss, lr) in rows.items():
            lines.append(f"| {name} | {lr:.2g} | {loss:.4g} | {loss / ref:.3f} |")
        lines.append("")
    return "\n".join(lines)


def _lion_scored(search: dict) -> str:
    """'N (#id +proxy)': how many Lion-family programs a search scored, and the best."""
    best = search["lion_best"]
    return f"{search['lion_scored']}" + (f" (#{best['id']} {best['proxy']:+.3f})" if best else "")


BEGIN, END = "<!-- discovery:begin -->", "<!-- discovery:end -->"


def check_out(path: str) -> None:
    """DslError, before any work, where ``--out`` could not take the section: not a writable
    file, or markers that do not pair up (:func:`write_section` would misplace it)."""
    from codegen.generated import output_path
    from optdsl.errors import DslError

    output_path(path)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            doc = f.read()
        if doc.count(BEGIN) != doc.count(END) or doc.count(BEGIN) > 1 or doc.find(BEGIN) > doc.find(END):
            raise DslError(f"its {BEGIN} ... {END} markers do not pair up", path,
                           hint="leave one pair, or none (the section is then appended)")


def write_section(path: str, text: str) -> None:
    """Replace the text between the markers of ``path`` with ``text`` (appended where it has none),
    atomically."""
    from codegen.generated import write_atomic

    doc = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            doc = f.read()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc += "\n" + block + "\n"
    write_atomic(path, doc)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers >= 0, comma-separated")
    return seeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default=[0, 1, 2], type=_seeds, help="comma-separated (default 0,1,2)")
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", help="keep the search databases here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true",
                    help="read the searches already in --dir instead of running them again")
    ap.add_argument("--out", help="write the results section into this markdown file")
    ap.add_argument("--json", help="also dump the raw results here")
    ap.add_argument("--init", help=f"the searches' warm start(s) (default: the search's, {SearchConfig.init})")
    ap.add_argument("--tasks", help="the searches' proxy tasks (default: the search's); NAME@F for F times "
                    "NAME's batch, the held-out tasks following")
    ap.add_argument("--schedule", choices=SCHEDULES, default=SearchConfig.schedule,
                    help=f"the searches' lr schedule, and the real tasks' (default: the search's, {SearchConfig.schedule})")
    args = ap.parse_args(argv)
    if args.reuse and not args.dir:
        ap.error("--reuse reads the searches kept in --dir; name it")
    from optdsl.errors import DslError

    try:  # refused now rather than after an hour of searching
        if args.out is not None:
            check_out(args.out)
        if args.json is not None:
            codegen.generated.output_path(args.json)
    except DslError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    console = Console()
    folder = args.dir or tempfile.mkdtemp(prefix="discovery-")
    os.makedirs(folder, exist_ok=True)
    if not args.dir:
        console.print(f"the searches are kept in {folder} (`--dir {folder} --reuse` reads them again)")
    settings = search_settings(args.init, args.tasks, args.schedule)
    searches = []
    for seed in args.seeds:
        kept = args.reuse and kept_search(folder, seed)
        doing = "reading the search kept in --dir" if kept else f"searching for {args.budget} ..."
        console.print(f"seed {seed}: {doing}")
        searches.append(run_search(seed, args.budget, args.workers, folder, args.reuse, settings))
        s = searches[-1]
        console.print(f"  winner #{s['winner_id']}: proxy {s['proxy']:+.3f}, held-out "
                      f"{'-' if s['held_out'] is None else format(s['held_out'], '+.3f')}, "
                      f"{s['evals_per_s']:.2f} evals/s")
        print(s["source"])
    optimizers = {"AdamW": load("adamw"), "Lion": load("lion")}
    for s in searches:
        optimizers[f"seed {s['seed']} winner"] = parse(s["source"], f"<seed {s['seed']}>")
    real = {}
    for make in REAL_TASKS:
        task = make()
        real[task[0]] = {}
        for name, program in optimizers.items():
            cls = codegen.build(program, "torch")
            real[task[0]][name] = tuned(cls, task, args.schedule)
            console.print(f"{task[0]}: {name}: loss {real[task[0]][name][0]:.4g} at lr {real[task[0]][name][1]:.2g}")
    table = Table(title="Real tasks, generated torch optimizers (loss / tuned AdamW's)")
    table.add_column("optimizer")
    for task in real:
        table.add_column(task.split(" (")[0], justify="right")
    for name in optimizers:
        table.add_row(name, *[f"{real[t][name][0] / real[t]['AdamW'][0]:.3f}" for t in real])
    console.print(table)
    text = markdown(searches, real, args.schedule)
    if args.json is not None:
        codegen.generated.write_atomic(args.json, json.dumps({"searches": searches, "real": real}, indent=1))
    if args.out is not None:
        write_section(args.out, text)
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
