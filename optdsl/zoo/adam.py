def adam(w, g, m, v, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba 2015), as torch.optim.Adam defines it (weight decay is coupled L2).

    g <- g + wd w;  m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    w <- w - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    torch.optim.Adam checkpoints: exp_avg -> m, exp_avg_sq -> v; requires amsgrad=False, decoupled_weight_decay=False; records amsgrad
    """
    g = g + weight_decay * w
    m = interp(g, m, beta1)
    v = interp(g * g, v, beta2)
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return lr * m_hat / (sqrt(v_hat) + eps), m, v
