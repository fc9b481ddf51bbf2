"""Program 4 of "Symbolic Discovery of Optimization Algorithms" (Chen et al. 2023), as printed:
the raw program the search discovered, before the authors reduced it by hand to Lion
(``m / sqrt(m * m)`` is ``sign(m)``; ``m = cosh(update)`` is never read).

    optdsl check examples/paper_program4.py
    optdsl simplify examples/paper_program4.py
"""


def train(w, g, m, v, lr):
    g = clip(g, lr)
    g = arcsin(g)
    m = interp(g, v, 0.899)
    m2 = m * m
    v = interp(g, m, 1.109)
    abs_m = sqrt(m2)
    update = m / abs_m
    wd = w * 0.4602
    update = update + wd
    lr = lr * 0.0002
    m = cosh(update)
    update = update * lr
    return update, m, v
