def lion_rewritten(w, g, momentum, unused, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
    """Lion written another way: renamed state, expanded interps, a dead state and a dead line.

    `optdsl equiv lion examples/lion_rewritten.py` proves it equal to the zoo's Lion.
    """
    c = beta1 * momentum + (1 - beta1) * g
    scratch = exp(c)
    unused = unused + g
    momentum = beta2 * momentum + g * (1 - beta2)
    return lr * (sign(c) + weight_decay * w), momentum, unused
