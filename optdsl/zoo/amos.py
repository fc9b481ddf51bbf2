def amos(w, g, v: scalar, b: scalar, m, step, lr=0.001, beta=0.999, momentum=0.0, extra_l2=0.0, c_coef=0.25,
         d_coef=0.25, eps=1e-18):
    """Amos (Tian & Parikh 2022, "Amos: An Adam-style Optimizer with Adaptive Weight Decay towards
    Model-Oriented Scale"), as pytorch_optimizer.Amos defines it (the jestimator original scales
    per variable from user-given expected scales; pytorch_optimizer derives them from the shape).

    s = 0.5 (ndim <= 1), sqrt(2 / dim(w, 1)) (ndim 2), sqrt(1 / dim(w, 1)) (ndim > 2);  lr_0 = lr s
    v <- beta v + (1 - beta) mean(g^2);  rv = (1 - beta^t) / (v + eps)
    gamma = lr^2 rv mean(g^2) / sqrt(1 + c_coef sqrt(lr) b)
    u = ((gamma - extra_l2) w / 2 + lr_0 sqrt(rv) g) / (1 + d_coef sqrt(lr_0) b)
    b <- b (1 + gamma) + gamma;  m <- momentum m + (1 - momentum) u;  w <- w - m
    (with momentum 0, m is u itself).
    """
    scale = 0.5
    if ndim(w) == 2:
        scale = sqrt(2 / dim(w, 1))
    if ndim(w) > 2:
        scale = sqrt(1 / dim(w, 1))
    init_lr = lr * scale
    g2 = mean(g * g)
    v = interp(g2, v, beta)
    rv = (1 - beta ** step) / (v + eps)
    gamma = rsqrt(1 + c_coef * sqrt(lr) * b) * lr * lr * rv * g2
    u = ((gamma - extra_l2) / 2 * w + init_lr * sqrt(rv) * g) / (1 + d_coef * sqrt(init_lr) * b)
    b = b * (1 + gamma) + gamma
    m = interp(u, m, momentum)
    return m, v, b, m
