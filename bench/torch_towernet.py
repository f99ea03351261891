"""TowerNet, ResNet50 and MobileNetV2 in PyTorch, layer for layer as ours: the bench's reference.

Only ``bench/throughput.py --reference torch|torch-cl`` runs this, as a child process (``serve``), and
only when torch is importable; the project does not depend on torch. ``bench/bf16_gradients.py
--torch-python PYTHON`` runs its ``gradients`` with an interpreter that has torch. A process of
its own keeps PyTorch as its users run it: none of ``app``'s environment (its malloc setting)
and no second OpenMP runtime (Paddle's) spinning on the same two cores.

Same architecture and maths: bias-free convs + BatchNorm(eps=1e-3, Paddle's momentum 0.9 =
torch's 0.1) + ReLU, 3x3/2/1 max pools, the GoogLeNet Inception blocks, SimAM with
n = max(h*w - 1, 1) skipped on maps under 2 positions, adaptive average pooling and a
Linear head. ResNet50 and MobileNetV2 as ``paddle.vision.models`` builds them (the
torchvision designs: stride on the bottleneck's 3x3, ReLU6, dropout 0.2 before the head).
``torch-cl`` is PyTorch's CPU performance guide: model and input in ``channels_last``; when our
run trains in bfloat16 (``train.amp=bf16``) the twin's training step runs under
``torch.autocast("cpu", dtype=torch.bfloat16)``. Inference stays float32 on both sides.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import timed


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


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(_conv_bn(cin, width, 1), _conv_bn(width, width, 3, stride),
                                  _conv_bn(width, cout, 1, act=None))
        self.down = (_conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout
                     else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.down(x))


def resnet50(num_classes: int) -> nn.Module:
    layers, cin = [_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        self.body = nn.Sequential(*layers, _conv_bn(hidden, hidden, 3, stride, hidden, nn.ReLU6),
                                  _conv_bn(hidden, cout, 1, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(num_classes: int) -> nn.Module:
    layers, cin = [_conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers, _conv_bn(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, num_classes))


TWINS = {"towernet": lambda k: TowerNet(k, attention=False),
         "towernet_simam": lambda k: TowerNet(k, attention=True),
         "resnet50": resnet50, "mobilenet_v2": mobilenet_v2}


def build(model: str, num_classes: int, optimizer: dict, threads: int,
          channels_last: bool = False, bf16: bool = False):
    """(network, train_step(x, y) -> loss, infer(x) -> logits) mirroring the Paddle recipe."""
    torch.set_num_threads(threads)
    net = TWINS[model](num_classes)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=optimizer["lr"], momentum=optimizer["momentum"],
                          weight_decay=optimizer["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()

    def train_step(x, y):
        net.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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
    if setup["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    _, step, infer = build(setup["model"], k, setup["optimizer"], setup["threads"],
                           setup["channels_last"], setup["bf16"])
    timed(lambda: step(x, y), setup["warmup"])
    timed(lambda: infer(x), 1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        train = timed(lambda: step(x, y), setup["steps"])
        print(json.dumps({"train": train, "infer": timed(lambda: infer(x), setup["steps"])}),
              flush=True)


def gradients(src: str, dst: str) -> None:
    """Child side of ``bf16_gradients.py --torch-python``: the twin with the weights in
    ``src`` (an .npz: w0..wN in our parameter order, Linear weights already [out, in], the batch
    x, y, the model's name and the thread count), channels_last, training mode, dropout off;
    writes the weight gradients of one step in float32 and under CPU autocast bfloat16 to
    ``dst`` (fp32_0.., bf16_0.., and each pass's loss)."""
    data = np.load(src)
    torch.set_num_threads(int(data["threads"]))
    net = TWINS[str(data["model"])](int(data["num_classes"])).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.from_numpy(data[f"w{i}"]))
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    net.train()
    x = torch.from_numpy(data["x"]).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(data["y"].reshape(-1))
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True), ("fp64", False)):
        if name == "fp64":  # the reference every pass is measured against
            net, x = net.double().to(memory_format=torch.contiguous_format), x.double().contiguous()
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        out[f"{name}_loss"] = np.float64(loss.item())
        out.update({f"{name}_{i}": p.grad.numpy().astype(np.float64 if name == "fp64" else np.float32)
                    for i, p in enumerate(net.parameters())})
    np.savez(dst, **out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["gradients"]:
        gradients(*sys.argv[2:4])
    else:
        serve()
