import torch

# The evaluations are many tiny ops: one thread is fastest and avoids fighting other processes.
torch.set_num_threads(1)
