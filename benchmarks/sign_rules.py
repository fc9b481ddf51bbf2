"""Do sign rules catch up with tuned AdamW as the batch grows? The Lion paper reports Lion's gain
over AdamW growing with the batch size; this benchmark asks it of the search's own proxies.

Each proxy is rebuilt with its minibatch ``B`` times larger (the noisy quadratic with its gradient
noise divided by ``sqrt(B)``, the same thing for a mean over ``B`` times more samples), tuned AdamW
is measured again at that batch, and Lion, signum and the search's AdamW warm start are scored as
the search scores a candidate (2 seeds x its 10 learning rates, ``clip(log(AdamW / loss), -1, 1)``
per task, fitness = :func:`search.evaluate.aggregate` of those, no hurdles; the tables in docs/search.md
before a5cc8e8 took the plain mean without the best task).

    python benchmarks/sign_rules.py --batch 1,4,16            # prints one table per batch factor
    python benchmarks/sign_rules.py --batch 1,16,64 --device cuda
    python benchmarks/sign_rules.py --tasks charlm,charlm_large,transformer_sort   # other tasks, as built
    python benchmarks/sign_rules.py --tasks mlp_large,logreg_large,conv_large --decay 0.3,1,3 --wider 2
    python benchmarks/sign_rules.py --batch 1 --schedule cosine --wider 5   # the search's default schedule

Under a cosine decay the sign rules' best learning rates lie above the candidates' grid (the rules
scale ``lr`` by 1e-4), so give them ``--wider``.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from optdsl.parser import parse
from search import tasks
from search.evaluate import CANDIDATE_LRS, SCHEDULES, baseline, evaluate_programs
from search.warm_start import initial_program, prepare


def _rule(body: str) -> object:
    return prepare(parse(f"def train(w, g, m, lr):\n{body}", "<sign_rules>"))


def rules(decays: list[float] = ()) -> dict[str, object]:
    """The rules compared, in the search's form (``lr`` 1 means the rule's usual learning rate); with
    ``decays``, Lion (0.9 and 0.5, 0.99) with each decoupled weight decay, ``(sign(.) + wd w) lr``."""
    decayed = {f"Lion ({b1}, 0.99) + {wd} w":
               _rule(f"    update = (sign(interp(g, m, {b1})) + {wd} * w) * (lr * 0.0001)\n"
                     "    m = interp(g, m, 0.99)\n    return update, m\n")
               for b1 in (0.9, 0.5) for wd in decays if wd}  # (wd 0: the Lions above)
    return {
        "AdamW warm start": initial_program("adamw"),
        "torch_adamw warm start": initial_program("torch_adamw"),
        "Lion (0.9, 0.99)": initial_program("lion"),
        **{f"Lion ({b1}, {b2})": _rule(f"    update = sign(interp(g, m, {b1})) * (lr * 0.0001)\n"
                                      f"    m = interp(g, m, {b2})\n    return update, m\n")
           for b1, b2 in ((0.5, 0.99), (0.3, 0.9))},
        **{f"signum ({b})": _rule(f"    m = interp(g, m, {b})\n    return sign(m) * (lr * 0.0001), m\n")
           for b in (0.9, 0.5, 0.3)},
        "signSGD": _rule("    return sign(g) * (lr * 0.0001), m\n"),
        **decayed,
    }


def proxies_at(factor: int) -> list[str]:
    """The five proxies with ``factor`` times their minibatch (:func:`search.tasks.at_batch`)."""
    return [f"{name}@{factor}" for name in tasks.PROXY_TASKS]


def _listed(kind: type, low: float, what: str):
    """An argparse type: comma-separated ``kind`` values >= ``low`` (exit 2 with ``what`` otherwise)."""

    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            values = []
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}, comma-separated")
        return values

    return parse


def _task_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if not tasks.is_task(n)] or ([] if names else ["(none given)"])
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown task(s) {', '.join(unknown)}; "
                                         "`optdsl search --help` lists them")
    return names


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise argparse.ArgumentTypeError(str(e).split("\n")[0]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU on this machine")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default=[1, 4, 16], type=_listed(int, 1, "whole numbers >= 1"),
                    help="batch factors, comma-separated")
    ap.add_argument("--tasks", type=_task_names, help="score on these tasks (comma-separated, as registered) "
                    "instead of the proxies at each --batch")
    ap.add_argument("--decay", default=[], type=_listed(float, 0, "numbers >= 0"),
                    help="weight decays to add to Lion, comma-separated (e.g. 0.3,1,3)")
    ap.add_argument("--wider", type=int, default=0, help="learning rates added above the candidates' grid")
    ap.add_argument("--schedule", default="constant", choices=SCHEDULES,
                    help="the learning rate over each task's steps, for the rules and tuned AdamW alike")
    ap.add_argument("--device", default="cpu", type=_device)
    args = ap.parse_args(argv)
    if args.wider < 0:
        ap.error(f"--wider {args.wider}: a number of learning rates, >= 0")
    console = Console()
    compared = rules(args.decay)
    lrs = tuple(CANDIDATE_LRS) + tuple(float(f"{CANDIDATE_LRS[-1] * 2.5 ** k:.4g}")
                                       for k in range(1, args.wider + 1))
    suites = ({"as built": args.tasks} if args.tasks else {f"batch x{f}": proxies_at(f) for f in args.batch})
    for title, names in suites.items():
        t0 = time.perf_counter()
        with console.status(f"{title}: tuning AdamW, scoring {len(compared)} rules ..."):
            base = {n: baseline(n, device=args.device, schedule=args.schedule)["loss"] for n in names}
            results = evaluate_programs(list(compared.values()), names, base, hurdle=None, lrs=lrs,
                                        device=args.device, schedule=args.schedule)
        table = Table(title=f"{title} ({time.perf_counter() - t0:.0f} s): score against tuned AdamW")
        table.add_column("rule")
        for n in names:
            table.add_column(n.split("@")[0], justify="right")
        table.add_column("fitness", justify="right")
        for label, r in zip(compared, results):
            table.add_row(label, *[f"{r['task_score'][n]:+.2f}" for n in names], f"{r['fitness']:+.2f}")
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
