"""The seven models CompVis released for ImageBART, and where their files sit in a release folder.

A release folder is laid out as the original README says: the repository root (``configs/``,
``data/``) with the model zips extracted to ``models/`` and ``vqgan.zip`` to ``vqgan/``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    name: str
    sampling_config: str  # relative to the release folder
    scale_configs: tuple[str, ...]  # scale 1 first (used when the sampling yaml is absent)
    vqgan_checkpoint: str
    description: str

    @property
    def checkpoints(self) -> tuple[str, ...]:
        return tuple(f"models/{self.name}/scale{s}.ckpt" for s in range(1, len(self.scale_configs) + 1))


def _cfgs(fmt: str, n: int) -> tuple[str, ...]:
    return tuple(fmt.format(s=s) for s in range(1, n + 1))


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("ffhq_4_scales_geometric", "configs/sampling/ffhq/ffhq_4_scales_geometric.yaml",
                _cfgs("configs/ffhq/4_scales/ffhq-geometric-scale{s}.yaml", 4), "vqgan/vqgan-ffhq.ckpt",
                "FFHQ faces, 4 scales, geometric schedule"),
        Release("ffhq_2_scales_custom", "configs/sampling/ffhq/ffhq_2_scales_custom.yaml",
                _cfgs("configs/ffhq/2_scales/ffhq-custom-scale{s}.yaml", 2), "vqgan/vqgan-ffhq.ckpt",
                "FFHQ faces, 2 scales, custom (PSIM) schedule"),
        Release("cin_4_scales_geometric", "configs/sampling/imagenet/imagenet_4_scales_geometric.yaml",
                _cfgs("configs/imagenet/4_scales/imagenet_geometric_scale{s}.yaml", 4), "vqgan/vqgan-imagenet.ckpt",
                "class-conditional ImageNet, 4 scales, geometric schedule"),
        Release("cin_5_scales_custom", "configs/sampling/imagenet/imagenet_5_scales_custom.yaml",
                _cfgs("configs/imagenet/5_scales/imagenet-custom-scale{s}.yaml", 5), "vqgan/vqgan-imagenet.ckpt",
                "class-conditional ImageNet, 5 scales, custom (PSIM) schedule"),
        Release("bedrooms_3_scales", "configs/sampling/lsun/beds_3_scales.yaml",
                _cfgs("configs/lsun-beds/lsun-beds-scale{s}.yaml", 3), "vqgan/vqgan-bedrooms.ckpt",
                "LSUN bedrooms, 3 scales"),
        Release("cats_3_scales", "configs/sampling/lsun/cats_3_scales.yaml",
                _cfgs("configs/lsun-cats/lsun-cats-scale{s}.yaml", 3), "vqgan/vqgan-cats.ckpt",
                "LSUN cats, 3 scales"),
        Release("churches_3_scales", "configs/sampling/lsun/churches_3_scales.yaml",
                _cfgs("configs/lsun-churches/lsun-churches-scale{s}.yaml", 3), "vqgan/vqgan-churches.ckpt",
                "LSUN churches, 3 scales"),
    )
}
