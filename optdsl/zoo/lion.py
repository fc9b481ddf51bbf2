def lion(w, g, m, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Program 1).

    c = interp(g, m, beta1);  w <- w - lr (sign(c) + wd w);  m <- interp(g, m, beta2).
    Defaults follow the paper; optax.lion uses weight_decay=1e-3.
    """
    update = sign(interp(g, m, beta1)) + weight_decay * w
    update = update * lr
    m = interp(g, m, beta2)
    return update, m
