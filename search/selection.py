"""Which program wins a search: held-out evidence first, proxy fitness second.

A search scores every child on the small proxy tasks; the best few by proxy fitness are
re-scored on larger held-out tasks (meta-validation, the funnel of the search paper). Proxy
winners often overfit the proxies, so the winner is the program with the best *held-out* score;
only when nothing was meta-validated does the best proxy score decide. Held-out scores within
:data:`META_TOLERANCE` of the best are ties, won by the program with the fewest live statements:
that is how a simplification by ablation (:mod:`search.ablation`) that scores as well as the
program it came from takes its place. ``report`` lists programs
in this order, ``export --top`` writes them in it, and the main job prints the first.

Example::

    row = winner(Store("search.sqlite"))
    row["meta_fitness"], row["fitness"]      # held-out score, proxy score
"""

from __future__ import annotations

import shlex

from .candidate import rule_key
from .evaluate import aggregate_words
from .store import FAILED, Store

#: Held-out scores this close to the best one are ties. On the four seed pairs of one README
#: winner's held-out tasks (docs/search.md), its ablations that changed nothing that matters
#: (``sin(m) -> m``, ``expm1(v) -> v``) moved the score by 0.000-0.016 (never down), the one that
#: dropped its momentum lost 0.026-0.083 on every pair.
META_TOLERANCE = 0.01


def ties(held_out: float, best: float) -> bool:
    """Does a held-out score of ``held_out`` tie with the best one, ``best``? Within
    :data:`META_TOLERANCE` below it, beating tuned AdamW (> 0) if ``best`` does, and beating it
    clearly (by more than the tolerance, :func:`verdict`'s "beats") if ``best`` does: a simpler
    program that only draws level never takes the place of one that clearly beats AdamW.

    Example:
        >>> ties(0.095, 0.1), ties(0.08, 0.1), ties(-0.001, 0.005), ties(0.006, 0.015)
        (True, False, False, False)
    """
    return (held_out >= best - META_TOLERANCE and (held_out > 0 or best <= 0)
            and (held_out > META_TOLERANCE or best <= META_TOLERANCE))


def _by_held_out(rows: list[dict]) -> list[dict]:
    """Meta-validated rows, best held-out score first, except that those that :func:`ties` with
    the best come first, fewest live statements first."""
    if not rows:
        return rows
    tied = [r for r in rows if ties(r["meta_fitness"], rows[0]["meta_fitness"])]
    ids = {r["id"] for r in tied}
    return sorted(tied, key=lambda r: r["n_live"]) + [r for r in rows if r["id"] not in ids]


def ranked(store: Store, k: int) -> list[dict]:
    """The ``k`` best programs: meta-validated ones by held-out score (ties within
    :data:`META_TOLERANCE` to the smaller program), then the rest by proxy fitness; one row per
    rule (:func:`search.candidate.rule_key`: programs that differ by a constant factor on the
    step, which the tuned learning rate absorbs, are one rule, listed once).

    Example (held-out evidence first: #2, meta-validated, before #1, the better proxy score):
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> for name, fitness in [("sgd", 0.2), ("adamw", 0.1), ("lion", 0.15)]:
        ...     _ = store.add(**describe(load(name)), status="ok", fitness=fitness)
        >>> store.set_meta_validation(2, 0.05, {"mlp_large": 0.05})
        >>> [r["id"] for r in ranked(store, 3)]
        [2, 1, 3]
    """
    def candidates():
        yield from _by_held_out(store.meta_validated())
        yield from store.top(4 * k)
        yield from store.top(store.count())  # only when those held fewer than k rules

    out, seen = [], set()
    for row in candidates():
        keys = {row["structural_hash"], rule_key(row["live_source"])}
        if not keys & seen:
            out.append(row)
        seen |= keys
        if len(out) == k:
            break
    return out


def winner(store: Store) -> dict | None:
    """The program a search reports as its result (the first of :func:`ranked`), or None before
    anything is scored.

    Example:
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> winner(store) is None
        True
        >>> _ = store.add(**describe(load("sgd")), status="ok", fitness=0.2)
        >>> winner(store)["id"], winner(store)["fitness"]
        (1, 0.2)
    """
    best = ranked(store, 1)
    return best[0] if best else None


def no_winner(store: Store) -> str:
    """Why a search has no winner, in plain words: it stopped before scoring any program, or no
    program trained to a score, so none beat tuned AdamW; where the warm start itself failed, how.

    Example:
        >>> from optdsl import load
        >>> from search.candidate import describe
        >>> store = Store(":memory:")
        >>> print(no_winner(store))  # doctest: +NORMALIZE_WHITESPACE
        No program was scored yet: the search stopped before its first evaluation. Continue it with
        `optdsl search --resume :memory:`.
        >>> _ = store.add(**describe(load("sgd")), mutation="init sgd", status="diverged",
        ...               error="every learning rate failed on mlp")
        >>> print(no_winner(store))  # doctest: +NORMALIZE_WHITESPACE
        No program trained to a score (all failed, were refused by the guards or stopped at a hurdle), so
        none beat tuned AdamW. The warm start #1 (init sgd): diverged (every learning rate failed on mlp).
    """
    if store.count() == 0:  # (stopped while tuning AdamW, say: nothing failed)
        return ("No program was scored yet: the search stopped before its first evaluation. Continue it with "
                f"`optdsl search --resume {shlex.quote(store.path)}`.")
    text = ("No program trained to a score (all failed, were refused by the guards or stopped at a hurdle), "
            "so none beat tuned AdamW.")
    said = {**FAILED, "hurdle": "stopped at a hurdle"}  # (the store's words for each status)
    for row in store.warm_starts():
        if row["status"] != "ok":
            how = said.get(row["status"], row["status"])
            text += f" The warm start #{row['id']} ({row['mutation']}): {how} ({row['error']})."
    return text


def verdict(row: dict, loss_averse: bool | None = True) -> str:
    """One plain sentence on how the winner compares with tuned AdamW (``loss_averse``: how its
    search aggregates task scores, :func:`search.evolution.weighs_losses`).

    Example:
        >>> verdict({"fitness": 0.1, "meta_fitness": -0.2})
        'It does NOT beat tuned AdamW on the held-out tasks (-0.200): nothing found in this search did.'
        >>> row = {"fitness": 0.1, "meta_fitness": 0.2, "meta_task_score": {"mlp_large": 0.4, "conv_large": -0.02}}
        >>> verdict(row, loss_averse=False).split("). ")[1]
        'It loses to AdamW on conv_large (-0.020).'
    """
    held_out = row.get("meta_fitness")
    if held_out is None:
        return ("It was not checked on the held-out tasks (none were given, or the search ended first): "
                f"its proxy score ({row['fitness']:+.3f}) is all the evidence there is.")
    # the warm start itself scores -0.005 .. +0.012 against tuned AdamW (-0.013 with losses weighted)
    if abs(held_out) <= META_TOLERANCE:
        return (f"It is level with tuned AdamW on the held-out tasks ({held_out:+.3f}: within "
                f"{META_TOLERANCE}, which the selection counts as a tie): no clear gain.")
    if held_out > 0:
        scores = row.get("meta_task_score") or {}
        how = aggregate_words(loss_averse, len(scores))
        text = f"It beats tuned AdamW on the held-out tasks ({held_out:+.3f}, {how})."
        lost = ", ".join(f"{task} ({s:+.3f})" for task, s in scores.items() if s < 0)
        if lost:  # the mean hides them: say so (a loss anywhere is what a user would try first)
            return f"{text} It loses to AdamW on {lost}."
        return f"{text} It is at or above AdamW on each of them." if len(scores) > 1 else text
    return (f"It does NOT beat tuned AdamW on the held-out tasks ({held_out:+.3f}): nothing found in this "
            "search did.")
