def sgd(w, g, lr=0.01):
    """Plain stochastic gradient descent: w <- w - lr g (torch.optim.SGD, momentum 0).

    torch.optim.SGD checkpoints: ; requires momentum=0, weight_decay=0, nesterov=False
    """
    update = lr * g
    return update
