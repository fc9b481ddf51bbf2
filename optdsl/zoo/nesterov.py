def nesterov(w, g, b, step, lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0):
    """SGD with Nesterov momentum (Sutskever et al. 2013), as torch.optim.SGD(nesterov=True)
    defines it.

    g <- g + wd w  (coupled L2)
    b <- g at step 1, else mu b + (1 - dampening) g
    w <- w - lr (g + mu b)
    torch.optim.SGD checkpoints: momentum_buffer -> b; requires nesterov=True
    """
    g = g + weight_decay * w
    b = g if step == 1 else momentum * b + (1 - dampening) * g
    return lr * (g + momentum * b), b
