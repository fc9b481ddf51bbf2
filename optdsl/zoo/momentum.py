def momentum(w, g, b, step, lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0):
    """SGD with heavy-ball momentum (Polyak 1964), as torch.optim.SGD(momentum=...) defines it.

    g <- g + wd w  (coupled L2, torch's weight_decay)
    b <- g at step 1, else mu b + (1 - dampening) g
    w <- w - lr b
    The first step copies g into b undamped, as torch does (a zero-initialised buffer would
    give (1 - dampening) g instead).
    torch.optim.SGD checkpoints: momentum_buffer -> b; requires nesterov=False
    """
    g = g + weight_decay * w
    b = g if step == 1 else momentum * b + (1 - dampening) * g
    return lr * b, b
