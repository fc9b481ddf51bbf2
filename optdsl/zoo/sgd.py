def sgd(w, g, lr=0.01):
    """Plain stochastic gradient descent: w <- w - lr g (torch.optim.SGD, momentum 0)."""
    update = lr * g
    return update
