def lamb(w, g, m, v, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), as optax.lamb
    defines it: Adam's bias-corrected direction plus decoupled weight decay, scaled per tensor by
    the trust ratio ||w|| / ||r|| (1 when either norm is 0).

    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    r = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t) + eps_root) + eps) + wd w
    w <- w - lr (||w|| / ||r||) r
    """
    m = interp(g, m, beta1)
    v = interp(g * g, v, beta2)
    r = (m / (1 - beta1 ** step)) / (sqrt(v / (1 - beta2 ** step) + eps_root) + eps) + weight_decay * w
    w_norm = norm(w)
    r_norm = norm(r)
    trust = 1 if w_norm == 0 or r_norm == 0 else w_norm / r_norm
    return lr * trust * r, m, v
