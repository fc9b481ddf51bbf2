def adamw(w, g, m, v, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """AdamW (Loshchilov & Hutter 2019), as torch.optim.AdamW defines it.

    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    w <- w (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    torch.optim.AdamW checkpoints: exp_avg -> m, exp_avg_sq -> v; requires amsgrad=False, decoupled_weight_decay=True; records amsgrad
    """
    m = interp(g, m, beta1)
    v = interp(g * g, v, beta2)
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    update = lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * w)
    return update, m, v
