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


def run_all() -> dict:
    torch.set_num_threads(1)
    pairs = [fastflow_pair("resnet18"), fastflow_pair("wide_resnet50_2"), uflow_cnn_pair("resnet18"), uflow_mscait_pair()]
    return {"anomalib": anomalib.__version__, "torch": torch.__version__, "timm": timm.__version__, "pairs": pairs}
