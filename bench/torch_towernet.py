"""TowerNet in PyTorch, layer for layer as ``models/towernet.py``: the bench's reference.

Only ``bench/throughput.py --reference torch`` runs this, as a child process (``serve``), and
only when torch is importable; the project does not depend on torch. A process of its own
keeps PyTorch as its users run it: none of ``app``'s environment (its malloc setting) and no
second OpenMP runtime (Paddle's) spinning on the same two cores.

Same architecture and maths: bias-free convs + BatchNorm(eps=1e-3, Paddle's momentum 0.9 =
torch's 0.1) + ReLU, 3x3/2/1 max pools, the GoogLeNet Inception blocks, SimAM with
n = max(h*w - 1, 1) skipped on maps under 2 positions, adaptive average pooling and a
Linear head.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import timed  # noqa: E402


class BasicConv2d(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1), nn.ReLU())


class SimAM(nn.Module):
    min_hw = 2

    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(y)


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c2: tuple, c3: tuple, c4: int) -> None:
        super().__init__()
        self.p1 = BasicConv2d(cin, c1, 1)
        self.p2 = nn.Sequential(BasicConv2d(cin, c2[0], 1), BasicConv2d(c2[0], c2[1], 3))
        self.p3 = nn.Sequential(BasicConv2d(cin, c3[0], 1), BasicConv2d(c3[0], c3[1], 5))
        self.p4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BasicConv2d(cin, c4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], dim=1)


def _maxpool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2, padding=1)


class TowerNet(nn.Module):
    def __init__(self, num_classes: int = 16, attention: bool = True) -> None:
        super().__init__()
        att = SimAM if attention else nn.Identity
        self.b1 = nn.Sequential(BasicConv2d(3, 64, 3, stride=2), _maxpool())
        self.b2 = nn.Sequential(BasicConv2d(64, 128, 3), _maxpool())
        self.b3 = nn.Sequential(BasicConv2d(128, 256, 3), _maxpool())
        self.att3 = att()
        self.b4 = nn.Sequential(BasicConv2d(256, 256, 3), _maxpool())
        self.att4 = att()
        self.inc1 = Inception(256, 64, (64, 128), (16, 32), 32)
        self.pool1 = _maxpool()
        self.att5a = att()
        self.inc2 = Inception(256, 64, (64, 128), (16, 32), 32)
        self.pool2 = _maxpool()
        self.att5b = att()
        self.inc3 = Inception(256, 64, (64, 128), (16, 32), 32)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    @staticmethod
    def _attend(attention: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] * x.shape[3] < getattr(attention, "min_hw", 1):
            return x
        return attention(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b2(self.b1(x))
        x = self._attend(self.att3, self.b3(x))
        x = self._attend(self.att4, self.b4(x))
        x = self._attend(self.att5a, self.pool1(self.inc1(x)))
        x = self._attend(self.att5b, self.pool2(self.inc2(x)))
        return self.fc(self.avgpool(self.inc3(x)).flatten(1))


def build(model: str, num_classes: int, optimizer: dict, threads: int):
    """(network, train_step(x, y) -> loss, infer(x) -> logits) mirroring the Paddle recipe."""
    torch.set_num_threads(threads)
    net = TowerNet(num_classes, attention=model == "towernet_simam")
    opt = torch.optim.SGD(net.parameters(), lr=optimizer["lr"], momentum=optimizer["momentum"],
                          weight_decay=optimizer["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()

    def train_step(x, y):
        net.train()
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    @torch.no_grad()
    def infer(x):
        net.eval()
        return net(x)

    return net, train_step, infer


def serve() -> None:
    """Child side of ``throughput.py --reference torch``: one JSON setup line on stdin, then
    per ``round`` line a JSON line of train and infer step seconds on stdout."""
    setup = json.loads(sys.stdin.readline())
    s, bs, k = setup["image_size"], setup["batch_size"], setup["num_classes"]
    torch.manual_seed(setup["seed"])
    rng = np.random.default_rng(0)  # the same batch as the Paddle side
    x = torch.from_numpy(rng.standard_normal((bs, 3, s, s), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, k, (bs, 1)).astype(np.int64).reshape(-1))
    _, step, infer = build(setup["model"], k, setup["optimizer"], setup["threads"])
    timed(lambda: step(x, y), setup["warmup"])
    timed(lambda: infer(x), 1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        train = timed(lambda: step(x, y), setup["steps"])
        print(json.dumps({"train": train, "infer": timed(lambda: infer(x), setup["steps"])}),
              flush=True)


if __name__ == "__main__":
    serve()
