def tiger(w, g, m, step, lr=0.001, beta=0.965, weight_decay=0.01, grad_accum_steps=1, shrink_ratio=0.99,
          embedding=0, centre=0):
    """Tiger (Su Jianlin 2023, "Tiger: A Tight-fisted Optimizer", kexue.fm/archives/9512 and
    github.com/bojone/tiger, tiger.py): Lion with beta1 = beta2 = beta, a per-tensor learning
    rate, a NaN guard and gradient accumulation folded into the momentum (k = grad_accum_steps).

    x_t = [k divides t];  m <- (beta if k divides t - 1 else 1) m + ((1 - beta) / k) g
    w <- w - x_t lr_w (sign(m) + wd w)
    lr_w = 0.5 lr and wd = 0 for ndim(w) < 2 (biases, norm gains); lr RMS(row) for each row of an
    embedding table (set embedding=1 on its parameter group); lr RMS(w) for every other tensor.
    NaN guard: if g holds a NaN, m stays as it is and w <- (w - c) shrink_ratio + c, with c the
    parameter's init centre (set centre=1 on norm gains, 0 elsewhere).
    With k = 1 and lr_w = lr this is pytorch_optimizer.Tiger.
    """
    has_nan = amax(g != g)
    g = 0 if has_nan else g
    # m decays only on the first micro-step of a window (and not on a skipped NaN step).
    decay = beta if (step - 1) % grad_accum_steps == 0 and not has_nan else 1
    m = decay * m + (1 - beta) / grad_accum_steps * g
    lr_w = lr * (sqrt(rowmean(w * w)) if embedding else rms(w))
    wd = weight_decay
    if ndim(w) < 2:
        lr_w = 0.5 * lr
        wd = 0
    apply = step % grad_accum_steps == 0
    update = apply * lr_w * (sign(m) + wd * w)
    update = (w - centre) * (1 - shrink_ratio) if has_nan else update
    return update, m
