"""The anomalib side of benchmarks/equivalence.py (importable only in its environment).

State-dict mappings (ours -> anomalib 2.7.0), written out:
- FastFlow: ``backbone.model.*`` -> ``feature_extractor.*``, ``norms.*`` -> ``norms.*``,
  ``flows.*`` -> ``fast_flow_blocks.*``; our flow built with FrEIA's AllInOneBlock
  (``lean_permutation=False``: anomalib's block), same parameter names inside.
- U-Flow (CNN): ``backbone.model.*`` -> ``feature_extractor.feature_extractor.*``,
  ``norms.<s>.*`` -> ``feature_extractor.feature_normalizations.<s>.*``; the flow's
  AllInOneBlocks block by block, coarsest stage first (our ``flow.stages[S-1].blocks[0..]``,
  then ``stages[S-2]``, ...) -> the AllInOneBlocks of anomalib's ``flow.module_list`` in
  order (its GraphINN lists the coarsest stage first; split, upsampling and concatenation
  have no parameters; its AllInOneBlock is anomalib's vendored copy of FrEIA's, same names).
- U-Flow (MS-CaiT): the flow only, on the same post-norm transformer features.
- CFlow (WRN50-2 layer2/3/4, our ``wide_resnet50_2_l234``): ``backbone.model.*`` ->
  ``encoder.feature_extractor.*``, ``decoders.<l>.module_list.<b>.*`` ->
  ``decoders.<l>.module_list.<b>.*`` (FrEIA's AllInOneBlock and anomalib's vendored copy have
  the same names; the fixed rotations ``w_perm``/``w_perm_inv`` travel with the state dict,
  so anomalib is built with hard permutations, its default, and then holds our soft ones).
- CS-Flow (the flow on 304-channel features, anomalib's hard-coded width): our
  ``flow.couplings.<k>.net2`` / ``net1`` (CrossConvolutions) -> anomalib's
  ``graph.module_list`` coupling k's ``cross_convolution2`` / ``cross_convolution1``, per
  scale s: ``inner.<s>`` -> ``conv_scale<s>_0``, ``outer.<s>`` -> ``conv_scale<s>_1``,
  ``up.<s>`` -> ``up_conv<s+1><s>``, ``down.<s>`` -> ``down_conv<s><s+1>``, ``gamma[s]``
  -> ``gamma<s>``; our per-block permutations (the official ones) are written into
  anomalib's ``ParallelPermute.perm``/``perm_inv`` lists.
anomalib hard-codes ``pretrained=True`` for its extractors; offline, its ``timm.create_model``
is wrapped to build them random, and our backbone weights are copied over them.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from FrEIA.modules import AllInOneBlock

import anomalib
from uadflows.methods import create

SIZE = 64  # the computation does not depend on the size; small keeps it cheap on a CPU


def offline_timm(module) -> None:
    real = timm.create_model

    def create_model(*args, **kwargs):
        kwargs["pretrained"] = False
        return real(*args, **kwargs)

    module.timm = type("timm_offline", (), {"create_model": staticmethod(create_model)})


def perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Move the trainable weights off their initial values (zero-initialised couplings would
    make every flow an identity and the comparison empty)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def compare_maps(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """Largest |difference| after removing the mean offset, and that offset."""
    diff = (ours - theirs).double()
    offset = float(diff.mean())
    return float((diff - offset).abs().max()), offset


def fastflow_pair(backbone: str) -> dict:
    from anomalib.models.image.fastflow import torch_model as ff

    torch.manual_seed(0)
    np.random.seed(0)
    ours = create("fastflow", backbone=backbone, pretrained=False, image_size=SIZE, lean_permutation=False)
    perturb(ours)
    small = backbone == "resnet18"
    ano = ff.FastflowModel((SIZE, SIZE), backbone, pre_trained=False, flow_steps=8, conv3x3_only=small, hidden_ratio=1.0)
    mapping = {k: k.replace("backbone.model.", "feature_extractor.").replace("flows.", "fast_flow_blocks.")
               for k in ours.state_dict()}
    ano.load_state_dict({mapping[k]: v for k, v in ours.state_dict().items()}, strict=True)
    x = torch.rand(2, 3, SIZE, SIZE)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (ours.backbone.spec.mean, ours.backbone.spec.std))
    with torch.no_grad():
        ours.eval()
        ano.eval()
        map_ours = ours.predict(x)["map"]
        map_ano = ano((x - mean) / std).anomaly_map[:, 0]
        ours.train()
        ano.train()
        loss_ours = float(ours.loss(ours(ours.extract(x))))
        z, jac = ano((x - mean) / std)
        loss_ano = float(ff.FastflowLoss()(z, jac)) if hasattr(ff, "FastflowLoss") else float(_fastflow_loss(z, jac))
    diff, offset = compare_maps(map_ours, map_ano)
    return {"pair": f"FastFlow {backbone} @{SIZE}", "params_ours": trainable(ours), "params_anomalib": trainable(ano),
            "max_map_diff": diff, "map_offset": offset, "loss_ours": loss_ours, "loss_anomalib": loss_ano,
            "mapping": "backbone.model.* -> feature_extractor.*; flows.* -> fast_flow_blocks.*; norms.* -> norms.*"}


def _fastflow_loss(z, jac):
    from anomalib.models.image.fastflow.loss import FastflowLoss

    return FastflowLoss()(z, jac)


def _blocks_ours(model) -> list[AllInOneBlock]:
    return [b for s in range(len(model.flow.stages) - 1, -1, -1) for b in model.flow.stages[s].blocks]


def _blocks_anomalib(ano) -> list[torch.nn.Module]:
    # anomalib ships its own copy of FrEIA (anomalib.models.components.flow): matched by name
    return [m for m in ano.flow.module_list if type(m).__name__ == "AllInOneBlock"]


def copy_flow(ours, ano) -> None:
    pairs = list(zip(_blocks_ours(ours), _blocks_anomalib(ano), strict=True))
    for mine, theirs in pairs:
        theirs.load_state_dict(mine.state_dict(), strict=True)


def uflow_loss_official(z, ljd) -> torch.Tensor:
    """mtailanian/uflow src/train.py:81-82: per sample sum over scales, then the batch mean."""
    lpz = torch.sum(torch.stack([0.5 * torch.sum(zi**2, dim=(1, 2, 3)) for zi in z]), dim=0)
    return torch.mean(lpz - ljd)


def uflow_cnn_pair(backbone: str = "resnet18") -> dict:
    from anomalib.models.components.feature_extractors import timm as anomalib_timm
    from anomalib.models.image.uflow import torch_model as uf
    from anomalib.models.image.uflow.loss import UFlowLoss

    offline_timm(anomalib_timm)
    torch.manual_seed(0)
    np.random.seed(0)
    ours = create("uflow", backbone=backbone, pretrained=False, image_size=SIZE, compute_nfa=False)
    perturb(ours)
    ano = uf.UflowModel((SIZE, SIZE), flow_steps=4, backbone=backbone, affine_clamp=2.0,
                        affine_subnet_channels_ratio=1.0, permute_soft=False)
    fe = ano.feature_extractor
    fe.feature_extractor.load_state_dict(ours.backbone.model.state_dict(), strict=True)
    fe.feature_normalizations.load_state_dict(ours.norms.state_dict(), strict=True)
    copy_flow(ours, ano)
    x = torch.rand(2, 3, SIZE, SIZE)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (ours.backbone.spec.mean, ours.backbone.spec.std))
    with torch.no_grad():
        ours.eval()
        ano.eval()
        map_ours = ours.predict(x)["map"]
        map_ano = ano((x - mean) / std).anomaly_map[:, 0]
        out = ours(ours.extract(x))
        z, ljd = ano.encode(fe((x - mean) / std))
        loss_ours = float(ours.loss(out))
        loss_ano = float(UFlowLoss()(z, ljd))
        loss_official = float(uflow_loss_official(z, ljd))
    diff, offset = compare_maps(map_ours, map_ano)
    return {"pair": f"U-Flow {backbone} @{SIZE}", "params_ours": trainable(ours), "params_anomalib": trainable(ano),
            "max_map_diff": diff, "map_offset": offset, "loss_ours": loss_ours, "loss_anomalib": loss_ano,
            "loss_official_formula": loss_official, "batch": 2,
            "mapping": "backbone.model.* -> feature_extractor.feature_extractor.*; norms.* -> "
                       "feature_extractor.feature_normalizations.*; flow blocks coarsest stage first -> flow.module_list"}


def uflow_mscait_pair() -> dict:
    """The flow on MS-CaiT's feature shapes (768@28, 384@14), same random features."""
    from anomalib.models.image.uflow import feature_extraction as fx
    from anomalib.models.image.uflow import torch_model as uf
    from anomalib.models.image.uflow.loss import UFlowLoss

    offline_timm(fx)
    torch.manual_seed(0)
    np.random.seed(0)
    ours = create("uflow", backbone="ms_cait", pretrained=False, build_backbone=False, compute_nfa=False)
    perturb(ours)
    ano = uf.UflowModel((448, 448), flow_steps=4, backbone="mcait", affine_clamp=2.0,
                        affine_subnet_channels_ratio=1.0, permute_soft=False)
    copy_flow(ours, ano)
    features = [torch.randn(2, *shape) for shape in ours.flow.input_shapes]
    with torch.no_grad():
        out = ours(features)
        map_ours = ours.anomaly_maps(out, (448, 448))["map"]
        z, ljd = ano.encode(features)
        map_ano = ano.anomaly_map_generator(z)[:, 0]
        loss_ours = float(ours.loss(out))
        loss_ano = float(UFlowLoss()(z, ljd))
        loss_official = float(uflow_loss_official(z, ljd))
    diff, offset = compare_maps(map_ours, map_ano)
    flow_params_ano = sum(p.numel() for m in _blocks_anomalib(ano) for p in m.parameters() if p.requires_grad)
    return {"pair": "U-Flow MS-CaiT flow (448)", "params_ours": trainable(ours), "params_anomalib": flow_params_ano,
            "max_map_diff": diff, "map_offset": offset, "loss_ours": loss_ours, "loss_anomalib": loss_ano,
            "loss_official_formula": loss_official, "batch": 2,
            "mapping": "flow blocks coarsest stage first -> flow.module_list (no norms: none on MS-CaiT)"}


def quick_rotations() -> None:
    """FrEIA draws each soft permutation with scipy's special_ortho_group (minutes at 2048
    channels); any dense orthogonal matrix serves here, since ours is copied into anomalib:
    two Householder reflections of a random permutation (determinant +-1, O(n^2))."""
    import FrEIA.modules.all_in_one_block as aio

    class Householder:
        @staticmethod
        def rvs(n):
            w = np.eye(n)[np.random.permutation(n)]
            for _ in range(2):
                v = np.random.randn(n, 1)
                w = w - (2 / float((v * v).sum())) * v @ (v.T @ w)
            return w

    aio.special_ortho_group = Householder


def cflow_pair(size: int = SIZE) -> dict:
    """Official set-up (WRN50-2 layer2/3/4, 8 blocks, 128-channel condition, clamp 1.9),
    random backbone; the batch is the "test set" of the set-level map on both sides."""
    from anomalib.models.components.feature_extractors import timm as anomalib_timm
    from anomalib.models.image.cflow import torch_model as cf
    from anomalib.models.image.cflow.utils import get_logp, positional_encoding_2d

    offline_timm(anomalib_timm)
    quick_rotations()
    torch.manual_seed(0)
    np.random.seed(0)
    ours = create("cflow", backbone="wide_resnet50_2_l234", pretrained=False, image_size=size)
    perturb(ours)
    ano = cf.CflowModel("wide_resnet50_2", layers=["layer2", "layer3", "layer4"], pre_trained=False,
                        condition_vector=128, coupling_blocks=8, clamp_alpha=1.9, permute_soft=False)
    ano.encoder.feature_extractor.load_state_dict(ours.backbone.model.state_dict(), strict=True)
    ano.decoders.load_state_dict(ours.decoders.state_dict(), strict=True)
    x = torch.rand(2, 3, size, size)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (ours.backbone.spec.mean, ours.backbone.spec.std))
    with torch.no_grad():
        ours.eval()
        ano.eval()
        pred_ours = ours.predict(x)
        pred_ano = ano((x - mean) / std)
        feats = ours.extract(x)
        loss_ours = float(ours.loss(ours(feats)))
        # anomalib's training loss (lightning_model.py:206-209) on every position at once
        losses = []
        for feat, decoder in zip(ano.encoder((x - mean) / std).values(), ano.decoders):
            b, c, h, w = feat.shape
            cond = positional_encoding_2d(128, h, w).reshape(128, h * w).T.repeat(b, 1)
            p_u, log_jac = decoder(feat.permute(0, 2, 3, 1).reshape(-1, c), [cond])
            losses.append(-torch.nn.functional.logsigmoid(get_logp(c, p_u, log_jac) / c))
        loss_ano = float(torch.cat(losses).mean())
    map_ano = pred_ano.anomaly_map.reshape(pred_ours["map"].shape)  # (B, H, W) or (B, 1, H, W)
    diff, offset = compare_maps(pred_ours["map"], map_ano)
    return {"pair": f"CFlow wide_resnet50_2 layer2-4 @{size}", "params_ours": trainable(ours),
            "params_anomalib": trainable(ano), "max_map_diff": diff, "map_offset": offset,
            "max_score_diff": float((pred_ours["score"] - pred_ano.pred_score.flatten()).abs().max()),
            "max_map_diff_raw": float((pred_ours["map"] - map_ano).abs().max()),
            "loss_ours": loss_ours, "loss_anomalib": loss_ano, "batch": 2,
            "mapping": "backbone.model.* -> encoder.feature_extractor.*; decoders.* -> decoders.* (soft "
                       "rotations copied in)"}


def _csflow_state_for_anomalib(ours) -> dict[str, torch.Tensor]:
    """Our CrossScaleFlow's parameters under anomalib's names (module docstring)."""
    out = {}
    for k, coupling in enumerate(ours.flow.couplings):
        node = f"graph.module_list.{2 * k + 1}"  # permute k, coupling k, permute k+1, ...
        for mine, theirs in (("net1", "cross_convolution1"), ("net2", "cross_convolution2")):
            net, prefix = getattr(coupling, mine), f"{node}.{theirs}"
            for s in range(net.n_scales):
                for kind, conv in ((f"conv_scale{s}_0", net.inner[s]), (f"conv_scale{s}_1", net.outer[s])):
                    out[f"{prefix}.{kind}.weight"], out[f"{prefix}.{kind}.bias"] = conv.weight, conv.bias
                out[f"{prefix}.gamma{s}"] = net.gamma[s : s + 1]
            for s in range(net.n_scales - 1):
                for kind, conv in ((f"up_conv{s + 1}{s}", net.up[s]), (f"down_conv{s}{s + 1}", net.down[s])):
                    out[f"{prefix}.{kind}.weight"], out[f"{prefix}.{kind}.bias"] = conv.weight, conv.bias
    return {k: v.detach().clone() for k, v in out.items()}


def csflow_pair(hidden: int = 64, side: int = 8) -> dict:
    """The flow (4 blocks, kernels 3, 3, 3, 5, clamp 3) on random 304-channel features of
    sides side, side/2, side/4; hidden width ``hidden`` (the paper's 1024: 275 M parameters
    per side, counted separately in params_paper_*)."""
    from anomalib.models.image.csflow import torch_model as cs
    from anomalib.models.image.csflow.anomaly_map import AnomalyMapGenerator, AnomalyMapMode
    from anomalib.models.image.csflow.loss import CsFlowLoss

    from uadflows.backbones.base import SpecOnlyExtractor
    from uadflows.backbones.spec import ExtractorSpec

    def spec(px):
        return ExtractorSpec(name="b5-304", image_size=(px, px), channels=(304,) * 3,
                             shapes=tuple((px // 32 >> s, px // 32 >> s) for s in range(3)),
                             mean=(0.5,) * 3, std=(0.5,) * 3, weights="none", layers="stage5@1,1/2,1/4")

    def pair_models(width, px):
        torch.manual_seed(0)
        np.random.seed(0)
        mine = create("csflow", backbone=SpecOnlyExtractor(spec(px)), hidden_channels=width)
        theirs = cs.CrossScaleFlow(input_dims=(3, px, px), n_coupling_blocks=4, clamp=3,
                                   cross_conv_hidden_channels=width)
        return mine, theirs

    with torch.device("meta"):
        big_ours, big_ano = pair_models(1024, 768)
    params_paper = (trainable(big_ours), trainable(big_ano))
    ours, ano = pair_models(hidden, 32 * side)
    kinds = [type(m).__name__ for m in ano.graph.module_list]
    assert kinds == ["ParallelPermute", "ParallelGlowCouplingLayer"] * 4, kinds  # the indices used below
    perturb(ours)
    missing = ano.load_state_dict(_csflow_state_for_anomalib(ours), strict=False)
    assert not missing.unexpected_keys and not missing.missing_keys, missing
    for k in range(4):  # the official permutations (ours) into anomalib's ParallelPermute
        permute = ano.graph.module_list[2 * k]
        permute.perm = list(getattr(ours.flow, f"perm_{k}"))
        permute.perm_inv = list(getattr(ours.flow, f"perm_inv_{k}"))
    gen = torch.Generator().manual_seed(2)
    feats = [torch.randn(2, 304, side >> s, side >> s, generator=gen) for s in range(3)]
    with torch.no_grad():
        out = ours(feats)
        z_ano, jac_ano = ano(feats)
        maps_ours = ours.anomaly_maps(out, (32 * side, 32 * side))
        score_ano = cs.CsFlowModel._compute_anomaly_scores(z_ano)
        map_ano = AnomalyMapGenerator((3, 32 * side, 32 * side), mode=AnomalyMapMode.ALL)(z_ano)[:, 0]
        z_diff = max(float((a - b).abs().max()) for a, b in zip(out.z, z_ano))
        jac_ours = sum(out.log_jac)
        loss_official = float(torch.mean(0.5 * torch.cat([z.flatten(1) for z in z_ano], 1).pow(2).sum(1) - jac_ours)
                              / sum(z[0].numel() for z in z_ano))
    return {"pair": f"CS-Flow flow, 304 ch @{32 * side} (hidden {hidden})", "params_ours": trainable(ours),
            "params_anomalib": trainable(ano), "params_paper_ours": params_paper[0],
            "params_paper_anomalib": params_paper[1], "max_z_diff": z_diff,
            "max_score_diff": float((maps_ours["score"] - score_ano).abs().max()),
            "max_map_diff": float("nan"), "map_offset": float("nan"),
            "anomalib_map_range": [float(map_ano.min()), float(map_ano.max())],
            "jac_ours_per_sample": [float(v) for v in jac_ours], "jac_anomalib": float(jac_ano.sum()),
            "loss_ours": float(ours.loss(out)), "loss_anomalib": float(CsFlowLoss()(z_ano, jac_ano)),
            "loss_official_formula": loss_official, "batch": 2,
            "mapping": "flow.couplings.k.net2/net1 -> graph coupling k cross_convolution2/1 (per-scale conv names); "
                       "official permutations copied into ParallelPermute"}


def run_all() -> dict:
    torch.set_num_threads(1)
    pairs = [fastflow_pair("resnet18"), fastflow_pair("wide_resnet50_2"), uflow_cnn_pair("resnet18"), uflow_mscait_pair(),
             cflow_pair(), csflow_pair()]
    return {"anomalib": anomalib.__version__, "torch": torch.__version__, "timm": timm.__version__, "pairs": pairs}
