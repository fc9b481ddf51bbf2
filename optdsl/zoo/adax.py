def adax(w, g, m, v, step, lr=0.0015, beta1=0.9, beta2=0.0001, eps=1e-12, weight_decay=0.0005):
    """AdaX (Li et al. 2020, "AdaX: Adaptive Gradient Descent with Exponential Long Term Memory"),
    as the authors' release defines it (github.com/switchablenorms/AdaX, class AdaX: coupled L2
    weight decay; eps is added to sqrt(v) before the bias correction is applied).

    g <- g + wd w;  m <- beta1 m + (1 - beta1) g;  v <- (1 + beta2) v + beta2 g^2
    w <- w - lr sqrt((1 + beta2)^t - 1) m / (sqrt(v) + eps)
    """
    g = g + weight_decay * w
    m = interp(g, m, beta1)
    v = (1 + beta2) * v + beta2 * g * g
    step_size = lr * sqrt((1 + beta2) ** step - 1)
    return step_size * m / (sqrt(v) + eps), m, v
