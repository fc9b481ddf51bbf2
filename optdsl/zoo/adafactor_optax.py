def adafactor_optax(w, g, r: row, c: col, v, step, lr=0.01, decay_rate=0.8, decay_offset=0, eps=1e-30,
                    clipping_threshold=1.0, weight_decay_rate=0.0):
    """Adafactor (Shazeer & Stern 2018), as optax.adafactor defines it (factored=True,
    min_dim_size_to_factor=128, multiply_by_parameter_scale=True, momentum=None).

    beta2_t = 1 - (t - decay_offset)^-decay_rate
    factored (the two largest axes have >= 128 entries):
        r <- beta2_t r + (1 - beta2_t) rowmean(g^2 + eps);  c <- likewise with colmean
        vh = r c / mean(s), s the one of r, c that was averaged over the larger axis
    otherwise:  v <- beta2_t v + (1 - beta2_t) (g^2 + eps);  vh = v
    u = g / sqrt(vh);  u <- u / max(1, RMS(u) / clipping_threshold)
    w <- w - lr max(RMS(w), 1e-3) u - weight_decay_rate w
    Restriction: the program factors over the last two axes only. optax factors the two largest;
    the two agree for ndim <= 2 and whenever the last two axes are the largest (leading axes are
    no longer than either); 128 is a literal so that the choice resolves per parameter.
    optax's learning_rate=None (no scaling) is lr=1.
    """
    beta2 = 1 - (step - decay_offset) ** -decay_rate
    factored = 0
    if ndim(w) >= 2:
        factored = min(dim(w, -2), dim(w, -1)) >= 128
    if factored:
        r = interp(rowmean(g * g + eps), r, beta2)
        c = interp(colmean(g * g + eps), c, beta2)
        # optax normalises the statistic averaged over the larger axis (the last one on ties);
        # one mean per leading index (r + 0 * c, c + 0 * r broadcast to full).
        if dim(w, -1) >= dim(w, -2):
            s_mean = colmean(r + 0 * c)
        else:
            s_mean = rowmean(c + 0 * r)
        vh = r * c / s_mean
    else:
        v = interp(g * g + eps, v, beta2)
        vh = v
    u = g * rsqrt(vh)
    u = u / max(1, rms(u) / clipping_threshold)
    return lr * max(rms(w), 0.001) * u + weight_decay_rate * w, r, c, v
