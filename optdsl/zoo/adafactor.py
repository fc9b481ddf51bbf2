def adafactor(w, g, r: row, c: col, v, step, lr=0.01, beta2_decay=-0.8, eps1=1.1920928955078125e-07,
              eps2=0.001, d=1.0, weight_decay=0.0):
    """Adafactor (Shazeer & Stern 2018), as torch.optim.Adafactor defines it.

    beta2_t = 1 - t^beta2_decay;  rho_t = min(lr, 1 / sqrt(t));  a_t = max(eps2, RMS(w)) rho_t
    ndim(w) >= 2, factored over the last two axes:
        r <- beta2_t r + (1 - beta2_t) rowmean(g^2);  c <- beta2_t c + (1 - beta2_t) colmean(g^2)
        vh = r c / max(mean of r over the rows, eps1)   (one mean per leading index)
    otherwise:  v <- beta2_t v + (1 - beta2_t) g^2;  vh = v
    u = g / sqrt(max(vh, eps1^2));  u <- u / max(1, RMS(u) / d)
    w <- w (1 - lr wd) - a_t u   (a_t is taken from w before the decay)
    torch's eps1=None means the parameter dtype's machine epsilon; the default here is float32's.
    torch.optim.Adafactor checkpoints: row_var -> r, col_var -> c, variance -> v, eps -> (eps1, eps2)
    """
    beta2_weight = step ** beta2_decay
    alpha = max(eps2, rms(w)) * min(lr, 1 / sqrt(step))
    if ndim(w) >= 2:
        r = interp(r, rowmean(g * g), beta2_weight)
        c = interp(c, colmean(g * g), beta2_weight)
        r_mean = mean(r)
        if ndim(w) > 2:
            # r broadcast to full (0 * c only lends the shape): colmean gives each slice's mean.
            r_mean = colmean(r + 0 * c)
        vh = r * c / max(r_mean, eps1)
    else:
        v = interp(v, g * g, beta2_weight)
        vh = v
    u = g * rsqrt(max(vh, eps1 * eps1))
    u = u / max(1, rms(u) / d)
    return alpha * u + lr * weight_decay * w, r, c, v
