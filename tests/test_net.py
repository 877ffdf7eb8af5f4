"""DetectorNet (paper Sec. 3): shapes, range, gradients, input checks."""
import pytest
import torch

from dnnod.net import DetectorNet


@pytest.mark.parametrize("arch,size", [("paper", 225), ("tiny", 96)])
@pytest.mark.parametrize("activation", ["linear", "sigmoid"])
def test_output_shape_and_range(arch, size, activation):
    torch.manual_seed(0)
    net = DetectorNet(num_classes=3, arch=arch, activation=activation).to("cpu").eval()
    assert net.input_size == size
    x = torch.rand(2, 3, size, size)
    y = net(x)
    assert y.shape == (2, 3, 5, 24, 24)
    assert y.min() >= 0 and y.max() <= 1


def test_outputs_actually_vary_with_input():
    torch.manual_seed(0)
    net = DetectorNet(arch="tiny").eval()
    y = net(torch.rand(2, 3, 96, 96))
    assert not torch.allclose(y[0], y[1])


def test_d_is_respected():
    net = DetectorNet(arch="tiny", d=7, num_classes=2)
    assert net(torch.rand(1, 3, 96, 96)).shape == (1, 2, 5, 7, 7)


@pytest.mark.parametrize("arch", ["paper", "tiny"])
def test_gradient_reaches_first_layer(arch):
    torch.manual_seed(0)
    net = DetectorNet(arch=arch).train()
    s = net.input_size
    y = net(torch.rand(2, 3, s, s))
    # Target far from the output, so even clamped units get a gradient (straight-through clamp).
    loss = ((y - torch.rand_like(y)) ** 2).sum()
    loss.backward()
    g = net.features[0].weight.grad
    assert g is not None and g.abs().sum() > 0


def test_straight_through_clamp_gradient_is_identity():
    """Activation 'linear': forward clamps, backward passes the gradient unchanged (our choice)."""
    net = DetectorNet(arch="tiny").train()
    with torch.no_grad():
        net.regressor.bias.fill_(3.0)     # push every output far above 1
        net.regressor.weight.zero_()
    y = net(torch.rand(1, 3, 96, 96))
    assert torch.all(y == 1.0)
    y.sum().backward()
    assert torch.allclose(net.regressor.bias.grad, torch.ones_like(net.regressor.bias))


def test_describe_lists_layers_and_parameter_count():
    net = DetectorNet(arch="paper")
    text = net.describe()
    total = sum(p.numel() for p in net.parameters())
    assert f"{total:,}" in text
    assert "[256, 5, 5]" in text            # AlexNet's last pooled feature map for 225x225 input
    assert "[96, 54, 54]" in text            # conv1: 11x11 stride 4 on 225 -> 54
    # the paper's regression layer: 4096 -> 1 class x 5 types x 24 x 24
    assert net.regressor.in_features == 4096 and net.regressor.out_features == 2880


def test_runs_on_cpu_device_argument():
    net = DetectorNet(arch="tiny").to(torch.device("cpu"))
    assert net(torch.rand(1, 3, 96, 96, device="cpu")).device.type == "cpu"


@pytest.mark.parametrize("kwargs,msg", [
    ({"arch": "resnet"}, "arch"), ({"num_classes": 0}, "num_classes"), ({"d": 0}, "d must"),
    ({"activation": "relu"}, "activation")])
def test_bad_constructor_args(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        DetectorNet(**kwargs)


@pytest.mark.parametrize("x,msg", [
    (torch.rand(1, 3, 64, 64), r"\[B, 3, 96, 96\]"),
    (torch.rand(3, 96, 96), r"\[B, 3, 96, 96\]"),
    (torch.zeros(1, 3, 96, 96, dtype=torch.uint8), "float"),
])
def test_bad_input_is_a_clear_error(x, msg):
    net = DetectorNet(arch="tiny")
    with pytest.raises(ValueError, match=msg):
        net(x)


@pytest.mark.parametrize("arch", ["paper", "tiny"])
def test_fully_convolutional_head(arch):
    """head='conv' (ours): same interface, far fewer parameters than the paper's FC regression layer."""
    torch.manual_seed(0)
    conv = DetectorNet(num_classes=2, arch=arch, head="conv")
    fc = DetectorNet(num_classes=2, arch=arch, head="fc")
    s = conv.input_size
    y = conv(torch.rand(2, 3, s, s))
    assert y.shape == (2, 2, 5, 24, 24) and y.min() >= 0 and y.max() <= 1
    assert conv.num_parameters() < fc.num_parameters() / 5
    assert conv.config()["head"] == "conv"
    assert DetectorNet(**conv.config()).num_parameters() == conv.num_parameters()


@pytest.mark.parametrize("arch,fine", [("tiny", 24), ("paper", 26)])
def test_skip_head_shape_and_source(arch, fine):
    """head='skip' (ours): same interface; the skip leaves the trunk at its last map >= d×d
    (24×24 in the tiny trunk, 26×26 after the paper's second convolution)."""
    torch.manual_seed(0)
    net = DetectorNet(num_classes=2, arch=arch, head="skip").eval()
    seen = {}
    net.features[net._skip_at].register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    s = net.input_size
    y = net(torch.rand(2, 3, s, s))
    assert y.shape == (2, 2, 5, 24, 24) and y.min() >= 0 and y.max() <= 1
    assert tuple(seen["shape"][-2:]) == (fine, fine)
    assert DetectorNet(**net.config()).num_parameters() == net.num_parameters()


def test_skip_head_carries_local_detail():
    """With the deep path silenced, a change in the window's top-left corner moves only the
    mask cells near that corner: the skip connection is a local path to every cell. With the
    deep path on, the change reaches the far cells too (through the 6×6 map)."""
    torch.manual_seed(0)
    net = DetectorNet(num_classes=1, arch="tiny", head="skip").eval()
    x = torch.rand(1, 3, 96, 96)
    x2 = x.clone()
    x2[:, :, :8, :8] = 1 - x2[:, :, :8, :8]
    with torch.no_grad():
        net.regressor.bias.fill_(0.5)          # outputs inside the clamp, so changes show
        both = (net(x) - net(x2)).abs().amax(2)[0, 0]          # [24, 24]
        net.fc[0].weight.zero_()
        net.fc[0].bias.zero_()
        skip = (net(x) - net(x2)).abs().amax(2)[0, 0]
    assert skip[:4, :4].max() > 1e-4                            # the corner's own cells react
    assert skip[10:, :].max() == 0 and skip[:, 10:].max() == 0  # far cells cannot
    assert both[12:, 12:].max() > 0


@pytest.mark.parametrize("size,beta", [(5, 0.75), (4, 0.5), (3, 1.0)])
def test_fast_lrn_equals_torch_lrn(size, beta):
    """The inference form of LocalResponseNorm (shifted adds, rsqrt power) gives torch's
    F.local_response_norm, and training takes torch's own implementation."""
    import torch.nn.functional as F
    from dnnod.net import LocalResponseNorm
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2, 7, 5, 6, generator=g) * 30)
    lrn = LocalResponseNorm(size, alpha=1e-3, beta=beta, k=2.0)
    ref = F.local_response_norm(x, size, alpha=1e-3, beta=beta, k=2.0)
    with torch.no_grad():
        torch.testing.assert_close(lrn(x), ref, rtol=1e-5, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    out = lrn(xg)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=0)


def test_packed_linear_matches_and_follows_weight_updates():
    """Inference through oneDNN's pre-packed weights gives F.linear's numbers, and a changed
    weight (optimizer step, load_state_dict) is packed again, never served stale."""
    from dnnod.net import _linear
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 300)
    x = torch.randn(7, 64)
    with torch.no_grad():
        torch.testing.assert_close(_linear(layer, x), F_linear(layer, x), rtol=1e-5, atol=1e-5)
        layer.weight.mul_(-2.0)                       # in-place change: version counter moves
        torch.testing.assert_close(_linear(layer, x), F_linear(layer, x), rtol=1e-5, atol=1e-5)
        layer.load_state_dict({"weight": torch.randn(300, 64), "bias": torch.randn(300)})
        torch.testing.assert_close(_linear(layer, x), F_linear(layer, x), rtol=1e-5, atol=1e-5)
    # with gradients the plain layer runs (and gradients flow)
    y = _linear(layer, x.requires_grad_(True))
    y.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def F_linear(layer, x):
    return torch.nn.functional.linear(x, layer.weight, layer.bias)


def test_forward_hooks_fire_on_the_packed_layers():
    """The paper head's linear layers stay modules at inference: a forward hook on the regressor
    sees its input (chapter 4 reads the features this way)."""
    net = DetectorNet(num_classes=1, arch="paper").eval()
    seen = []
    h = net.regressor.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
    with torch.no_grad():
        out = net(torch.rand(2, 3, 225, 225))
    h.remove()
    assert seen == [(torch.Size([2, 4096]), torch.Size([2, 5 * 24 * 24]))]
    assert out.shape == (2, 1, 5, 24, 24)


@pytest.mark.parametrize("head", ["conv", "skip"])
def test_head_norm_batch(head):
    """head_norm='batch' (ours): a BatchNorm after every hidden convolution of the head (none in
    'none'), same output interface, and the config rebuilds the same network. In training mode
    each normalised channel has mean 0 and variance 1 over the batch (before the in-place ReLU)."""
    torch.manual_seed(0)
    plain = DetectorNet(num_classes=2, arch="tiny", head=head)
    net = DetectorNet(num_classes=2, arch="tiny", head=head, head_norm="batch")
    head_mods = [m for n, m in net.named_modules() if n.split(".")[0] in ("fc", "lateral", "fuse")]
    convs = [m for m in head_mods if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in head_mods if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(convs) >= 2 and all(c.bias is None for c in convs)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for n, m in plain.named_modules()
                   if n.split(".")[0] in ("fc", "lateral", "fuse"))
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone())) for b in bns]
    y = net.train()(torch.rand(4, 3, 96, 96))
    for h in hooks:
        h.remove()
    assert y.shape == (4, 2, 5, 24, 24) and y.min() >= 0 and y.max() <= 1
    for o in seen:
        assert torch.allclose(o.mean((0, 2, 3)), torch.zeros(o.shape[1]), atol=1e-4)
        assert torch.allclose(o.var((0, 2, 3), unbiased=False), torch.ones(o.shape[1]), atol=1e-2)
    cfg = net.config()
    assert cfg["head_norm"] == "batch" and plain.config()["head_norm"] == "none"
    assert DetectorNet(**cfg).num_parameters() == net.num_parameters()
    assert "head_norm='batch'" in net.describe()


def test_head_norm_bad_values():
    with pytest.raises(ValueError, match="head_norm must be one of"):
        DetectorNet(arch="tiny", head="conv", head_norm="layer")
    with pytest.raises(ValueError, match="convolutional heads"):
        DetectorNet(arch="tiny", head="fc", head_norm="batch")


def test_checkpoint_without_head_norm_loads(tmp_path):
    """Checkpoints written before head_norm existed (config without the key, e.g. the previous
    shipped Penn-Fudan file) load as head_norm='none'; a head_norm mismatch is a clear error."""
    from dnnod import checkpoint as C
    m = DetectorNet(2, arch="tiny", d=6, head="conv")
    cfg = {k: v for k, v in m.config().items() if k != "head_norm"}
    old = tmp_path / "old.pt"
    C.save_checkpoint({"format": "dnnod", "version": 1, "kind": "localizer", "config": cfg,
                       "class_names": ["a", "b"], "aspect_ratios": [1.0],
                       "state_dict": m.state_dict()}, old)
    back = C.load_checkpoint(old, device="cpu")
    assert back.head_norm == "none"
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(back(x), m.eval()(x))
    C.load_weights_into(DetectorNet(2, arch="tiny", d=6, head="conv"), old)
    with pytest.raises(ValueError, match="head_norm"):
        C.load_weights_into(DetectorNet(2, arch="tiny", d=6, head="conv", head_norm="batch"), old)
