"""app.build: the loss hapi trains on and the eval loss it logs."""
import numpy as np
import paddle
import paddle.nn.functional as F

from app.build.network import build_network
from app.config.load import load_config
from app.train.trainer import build_model
from models.attention import nam_sparsity_penalty


def test_nam_penalty_is_trained_on_but_left_out_of_the_eval_loss():
    cfg = load_config(model="towernet_nam", overrides=[("data.image_size", 64)])
    paddle.seed(0)
    network = build_network("towernet_nam", 4, cfg["model"]["kwargs"])
    model = build_model(cfg, network, 4, 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 64, 64)).astype(np.float32)
    y = rng.integers(0, 4, (6, 1)).astype(np.int64)

    logs = model.evaluate(paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)]),
                          batch_size=6, verbose=0)
    network.eval()
    with paddle.no_grad():
        logits = network(paddle.to_tensor(x))
        cross_entropy = float(F.cross_entropy(logits, paddle.to_tensor(y)))
        penalty = float(nam_sparsity_penalty(network, cfg["optimizer"]["nam_penalty"]))
        trained_on = float(model._loss(logits, paddle.to_tensor(y)))
    assert penalty > 0
    assert abs(trained_on - (cross_entropy + penalty)) < 1e-5
    assert abs(logs["mean_loss"] - cross_entropy) < 1e-5
