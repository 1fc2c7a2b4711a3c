"""Measure the peak memory of converting one full-size ImageNet scale (random weights, original layout).

Builds, under a temporary folder, a release-shaped tree whose scale 1 is a full-size class-conditional
ImageNet encoder-decoder scale (XTransformer, dim 1152, 32 + 6 layers: 616,660,661 parameters, stored
twice as in the release: raw ``transformer.*`` and ``transformer_ema.*``, plus the full 72M-parameter VQGAN
under ``first_stage_model.*``; ~5.2 GB) and whose top scale is a tiny minGPT. Key names and shapes come
from the original layout dumps in ``../shared/reference/official-layout``. Then it runs
``python -m imagebart_core.convert`` in a fresh process and reports that process's peak resident set
(``VmHWM``) and the peak of its anonymous (non file-backed) memory, sampled every 50 ms. Everything is
deleted afterwards.

    python scripts/measure_convert_memory.py [--workdir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYOUT = REPO.parent / "shared" / "reference" / "official-layout"

CHILD = r"""
import sys, threading, time
peak = {"anon": 0}
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out
def sample():
    while True:
        peak["anon"] = max(peak["anon"], status().get("RssAnon", 0))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
from imagebart_core.original.convert import main
t0 = time.time()
rc = main(sys.argv[1:])
st = status()
import json
print("MEASURE " + json.dumps({"rc": rc, "seconds": time.time() - t0, "vm_hwm": st["VmHWM"],
                                "peak_rss_anon": max(peak["anon"], st.get("RssAnon", 0))}))
"""


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _read_layout(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    path = LAYOUT / name
    if not path.is_file():
        raise SystemExit(f"layout dump not found: {path} (needs ../shared/reference/official-layout)")
    rows = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")[:3]
        rows.append((key, tuple(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]"))), dtype))
    return rows


def _tensor(shape, dtype: str, gen):
    import torch

    if dtype.startswith("float"):
        t = torch.empty(shape, dtype=torch.float32)
        return t.normal_(0.0, 0.02, generator=gen) if t.numel() else t
    return torch.zeros(shape, dtype=getattr(torch, dtype))


def build_release(root: Path) -> None:
    import numpy as np
    import torch
    import yaml

    gen = torch.Generator().manual_seed(0)
    used = np.sort(np.random.default_rng(0).choice(16384, 973, replace=False)).astype(np.int64)
    (root / "data" / "vqgan_indices").mkdir(parents=True)
    np.save(root / "data" / "vqgan_indices" / "imagenet_indices.npy", used)
    alphats = torch.tensor([1.0, 0.5, 0.0])
    sd = {"sos_token": torch.zeros(1, dtype=torch.long), "alphats": alphats, "alphacum": torch.cumprod(alphats, 0)}
    for key, shape, dtype in _read_layout("cin_5_scales_custom-vqgan.txt"):
        sd[key] = _tensor(shape, dtype, gen)
    sd["first_stage_model.quantize.used"] = torch.from_numpy(used)
    for key, shape, dtype in _read_layout("cin_5_scales_custom-scale1-transformer.txt"):
        sd[key] = _tensor(shape, dtype, gen)
    for key, shape, dtype in _read_layout("cin_5_scales_custom-scale1-ema.txt"):
        sd[key] = _tensor(shape, dtype, gen)
    n_params = sum(v.numel() for k, v in sd.items() if k.startswith("transformer."))
    models = root / "models" / "cin_mem"
    models.mkdir(parents=True)
    ckpt = {"epoch": 1, "global_step": 1, "pytorch-lightning_version": "1.4.2", "state_dict": sd,
            "callbacks": {}, "optimizer_states": [], "lr_schedulers": []}
    torch.save(ckpt, models / "scale1.ckpt")
    del ckpt, sd
    # a tiny top scale (minGPT) so that the release is a complete 2-scale chain
    E, L = 16, 258
    gpt = {"tok_emb.weight": (1000, E), "pos_emb": (1, L, E), "blocks.0.ln1.weight": (E,), "blocks.0.ln1.bias": (E,),
           "blocks.0.ln2.weight": (E,), "blocks.0.ln2.bias": (E,), "ln_f.weight": (E,), "ln_f.bias": (E,),
           "head.weight": (973, E), "blocks.0.mlp.0.weight": (4 * E, E), "blocks.0.mlp.0.bias": (4 * E,),
           "blocks.0.mlp.2.weight": (E, 4 * E), "blocks.0.mlp.2.bias": (E,)}
    for p in ("query", "key", "value", "proj"):
        gpt[f"blocks.0.attn.{p}.weight"], gpt[f"blocks.0.attn.{p}.bias"] = (E, E), (E,)
    sd2 = {"sos_token": torch.zeros(1, dtype=torch.long), "alphats": alphats, "alphacum": torch.cumprod(alphats, 0)}
    for k, shape in gpt.items():
        sd2["transformer." + k] = _tensor(shape, "float32", gen)
        sd2["transformer_ema." + k.replace(".", "")] = _tensor(shape, "float32", gen)
    mask = torch.ones(L, L).tril()
    mask[:2, :2] = 1
    sd2["transformer.blocks.0.attn.mask"] = mask.view(1, 1, L, L)
    torch.save({"global_step": 2, "epoch": 2, "state_dict": sd2}, models / "scale2.ckpt")

    first_stage = {"target": "imagebart.models.vqgan.VQGANWrapper", "params": {
        "ckpt_path": "vqgan/vqgan-imagenet.ckpt", "remap": "data/vqgan_indices/imagenet_indices.npy",
        "sane_index_shape": True, "embed_dim": 256, "n_embed": 16384,
        "ddconfig": {"double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
                     "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                     "dropout": 0.0},
        "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"}}}
    common = {"n_scales": 2, "redraw_prob": "geometric", "top_k": 973, "first_stage_config": first_stage,
              "conditioner_config": {"target": "imagebart.util.ClassProvider", "params": {"key": "class_label"}}}
    x = {"target": "imagebart.modules.xtransformers.x_transformer.XTransformer", "params": {
        "wrap_decoder": False, "dim": 1152, "enc_num_tokens": 1000, "enc_depth": 32, "enc_heads": 16,
        "enc_max_seq_len": 258, "dec_num_tokens": 973, "dec_depth": 6, "dec_heads": 16, "tie_token_emb": False,
        "dec_max_seq_len": 256}}
    g = {"target": "imagebart.modules.transformer.mingpt.GPT", "params": {
        "input_vocab_size": 1000, "vocab_size": 973, "block_size": L, "n_layer": 1, "n_head": 1, "n_embd": E,
        "n_unmasked": 2}}
    cfgdir = root / "configs" / "cin_mem"
    cfgdir.mkdir(parents=True)
    for s, (target, tcfg) in enumerate((("imagebart.models.diffusion.DenoisingXTransformer", x),
                                        ("imagebart.models.diffusion.DecoderOnlyDenoiser", g)), start=1):
        doc = {"model": {"target": target, "params": dict(common, single_scale=s, transformer_config=tcfg)}}
        (cfgdir / f"scale{s}.yaml").write_text(yaml.safe_dump(doc))
    samp = root / "configs" / "sampling"
    samp.mkdir(parents=True)
    (samp / "cin_mem.yaml").write_text(yaml.safe_dump({
        "checkpoints": ["models/cin_mem/scale1.ckpt", "models/cin_mem/scale2.ckpt"],
        "configs": ["configs/cin_mem/scale1.yaml", "configs/cin_mem/scale2.yaml"]}))
    _say(f"built {models / 'scale1.ckpt'}: {n_params:,} transformer parameters (stored raw + EMA), "
          f"{(models / 'scale1.ckpt').stat().st_size / 2**30:.2f} GiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ib_convert_mem_", dir=args.workdir))
    try:
        t0 = time.time()
        build_release(root)
        _say(f"release built in {time.time() - t0:.0f}s")
        out = root / "converted.safetensors"
        cmd = [sys.executable, "-c", CHILD, "--release", str(root), "--model", "cin_mem", "--out", str(out),
               "--no-hash"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEASURE ")), None)
        if proc.returncode != 0 or line is None:
            return 1
        m = json.loads(line[len("MEASURE "):])
        ckpt = (root / "models" / "cin_mem" / "scale1.ckpt").stat().st_size
        _say(f"scale checkpoint {ckpt / 2**30:.2f} GiB -> output {out.stat().st_size / 2**30:.2f} GiB in "
              f"{m['seconds']:.0f}s; peak RSS (VmHWM, incl. mapped file pages) {m['vm_hwm'] / 2**30:.2f} GiB; "
              f"peak anonymous memory {m['peak_rss_anon'] / 2**30:.2f} GiB")
        import imagebart_core as ib

        cfg = ib.read_config(out)
        _say(f"output config: {cfg.n_scales} scales, scale 1 dim {cfg.scales[0].dim}, K={cfg.vocab_size}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
