"""Shared test setup: one torch thread, since several test runs share a 2-core machine."""

import torch

torch.set_num_threads(1)
