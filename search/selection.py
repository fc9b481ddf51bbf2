"""Which program wins a search: held-out evidence first, proxy fitness second.

A search scores every child on the small proxy tasks; the best few by proxy fitness are
re-scored on larger held-out tasks (meta-validation, the funnel of the search paper). Proxy
winners often overfit the proxies, so the winner is the program with the best *held-out* score;
only when nothing was meta-validated does the best proxy score decide. ``report`` lists programs
in this order, ``export --top`` writes them in it, and the main job prints the first.

Example::

    row = winner(Store("search.sqlite"))
    row["meta_fitness"], row["fitness"]      # held-out score, proxy score
"""

from __future__ import annotations

from .store import Store


def ranked(store: Store, k: int) -> list[dict]:
    """The ``k`` best programs: meta-validated ones by held-out score, then the rest by proxy
    fitness (one row per structural hash)."""
    out, seen = [], set()
    for row in store.meta_validated() + store.top(k + len(out)):
        if row["structural_hash"] not in seen:
            seen.add(row["structural_hash"])
            out.append(row)
        if len(out) == k:
            break
    return out


def winner(store: Store) -> dict | None:
    """The program a search reports as its result, or None before anything is scored."""
    best = ranked(store, 1)
    return best[0] if best else None


def verdict(row: dict) -> str:
    """One plain sentence on how the winner compares with tuned AdamW.

    Example:
        >>> verdict({"fitness": 0.1, "meta_fitness": -0.2})
        'It does NOT beat tuned AdamW on the held-out tasks (-0.200): nothing found in this search did.'
    """
    held_out = row.get("meta_fitness")
    if held_out is None:
        return ("It was not checked on the held-out tasks (none were given, or the search ended first): "
                f"its proxy score ({row['fitness']:+.3f}) is all the evidence there is.")
    if held_out > 0:
        return f"It beats tuned AdamW on the held-out tasks ({held_out:+.3f}, mean over tasks)."
    return (f"It does NOT beat tuned AdamW on the held-out tasks ({held_out:+.3f}): nothing found in this "
            "search did.")
