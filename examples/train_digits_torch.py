"""Write Lion in the optdsl language, compile it to a torch optimizer in memory, and train a small MLP
on sklearn's digits with it and with torch.optim.AdamW.

    python examples/train_digits_torch.py
"""

import torch
from sklearn.datasets import load_digits

import codegen
import optdsl

LION = '''
def lion(w, g, m, lr=3e-4, beta1=0.9, beta2=0.99, weight_decay=0.1):
    """Lion: the sign of an interpolated momentum, plus decoupled weight decay."""
    update = sign(interp(g, m, beta1)) + weight_decay * w
    m = interp(g, m, beta2)
    return lr * update, m
'''


def train(make_optimizer, x, y, epochs=8, batch=64, seed=0):
    """Mean training loss of each epoch."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = make_optimizer(model.parameters())
    curve = []
    for _ in range(epochs):
        order, total = torch.randperm(len(x)), 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        curve.append(total / len(x))
    return curve


def main():
    features, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(features / 16.0, dtype=torch.float32), torch.tensor(labels)
    Lion = codegen.build(optdsl.parse(LION), "torch")
    curves = {
        "Lion (generated)": train(lambda ps: Lion(ps, lr=1e-3, backend="eager"), x, y),
        "torch.optim.AdamW": train(lambda ps: torch.optim.AdamW(ps, lr=3e-3), x, y),
    }
    for name, curve in curves.items():
        print(f"{name:>18}: " + " ".join(f"{v:.3f}" for v in curve))


if __name__ == "__main__":
    main()
