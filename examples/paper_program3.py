"""Program 3 of "Symbolic Discovery of Optimization Algorithms" (Chen et al. 2023), as printed:
AdamW, the search's warm start, with the learning rate rescaled in the body.

    optdsl check examples/paper_program3.py
"""


def train(w, g, m, v, lr):
    g2 = square(g)
    m = interp(g, m, 0.9)
    v = interp(g2, v, 0.999)
    sqrt_v = sqrt(v)
    update = m / sqrt_v
    wd = w * 0.01
    update = update + wd
    lr = lr * 0.001
    update = update * lr
    return update, m, v
