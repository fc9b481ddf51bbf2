def lars(w, g, b, lr=0.1, weight_decay=0.0, trust_coefficient=0.001, eps=0.0, momentum=0.9, nesterov=0.0):
    """LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"), as optax.lars
    defines it: the trust ratio is taken on the decayed gradient u = g + wd w, and momentum
    accumulates the scaled step (optax.trace). pytorch_optimizer.LARS differs: its trust ratio is
    eta ||w|| / (||g|| + wd ||w||) and skips tensors of ndim <= 1.

    u = g + wd w;  trust = eta ||w|| / (||u|| + eps)  (1 when ||w|| or ||u|| is 0)
    u <- lr trust u;  b <- mu b + u;  w <- w - b  (nesterov=1: w <- w - (u + mu b))
    """
    u = g + weight_decay * w
    w_norm = norm(w)
    u_norm = norm(u)
    trust = 1 if w_norm == 0 or u_norm == 0 else trust_coefficient * w_norm / (u_norm + eps)
    u = lr * trust * u
    b = momentum * b + u
    update = u + momentum * b if nesterov else b
    return update, b
