"""Write Lion in the language, compile it to an optax transformation in memory, and train a small
MLP on scikit-learn's digits with it and with optax.adamw.

    python examples/train_digits_jax.py

The program below is parsed (never executed), compiled to JAX source by ``codegen.build`` and
loaded; the result is an ordinary optax ``GradientTransformation``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import codegen
import optdsl

LION = '''
def lion(w, g, m, lr=3e-4, beta1=0.9, beta2=0.99, weight_decay=0.1):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, plus decoupled weight decay."""
    update = sign(interp(g, m, beta1)) + weight_decay * w
    m = interp(g, m, beta2)
    return lr * update, m
'''

EPOCHS, BATCH = 8, 64


def init_mlp(key, sizes=(64, 64, 10)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def loss_fn(params, x, y):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    logits = x @ params[-1]["w"] + params[-1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(opt, x, y, x_test, y_test):
    """Mini-batch training; returns (epoch, train loss, test accuracy) per epoch."""
    params = init_mlp(jax.random.PRNGKey(0))
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    @jax.jit
    def accuracy(params):
        h = x_test
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        return jnp.mean(jnp.argmax(h @ params[-1]["w"] + params[-1]["b"], -1) == y_test)

    order = np.random.default_rng(0)
    curve = []
    for epoch in range(1, EPOCHS + 1):
        perm = order.permutation(len(x))
        losses = []
        for i in range(0, len(x) - BATCH + 1, BATCH):
            idx = perm[i:i + BATCH]
            params, state, loss = step(params, state, x[idx], y[idx])
            losses.append(float(loss))
        curve.append((epoch, float(np.mean(losses)), float(accuracy(params))))
    return curve


def main():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    split = int(0.8 * len(x))
    data = (jnp.asarray(x[:split]), jnp.asarray(y[:split]), jnp.asarray(x[split:]), jnp.asarray(y[split:]))

    lion = codegen.build(optdsl.parse(LION), "jax")  # the factory: lion(learning_rate=..., beta1=...)
    runs = {"lion (from the DSL)": train(lion(learning_rate=2e-3), *data),
            "optax.adamw": train(optax.adamw(3e-3, weight_decay=1e-4), *data)}
    for name, curve in runs.items():
        print(f"\n{name}")
        print("  epoch  train loss  test accuracy")
        for epoch, loss, acc in curve:
            print(f"  {epoch:5d}  {loss:10.4f}  {acc:13.3f}")


if __name__ == "__main__":
    main()
