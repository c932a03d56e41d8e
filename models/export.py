"""Export a models/train.py checkpoint to a jitvoc model file (docs/model.md, "File format").

    python -m models.export .ckpt models/NAME.npz        # a checkpoint folder or compact copy

PyTorch's gate order (r, z, n) becomes jitvoc's (u, r, e) = (z, r, n); `weight_ih` splits into
`gru.I` (its first 3 columns) and `cond.proj` (the rest); `bias_ih` is `gru.b`, `bias_hh` is
`gru.bR`; the masks are stored as uint8. `meta.quantization` carries the activation ranges that
models/train.py measured on teacher-forced training data, `meta.provenance` the data, split,
steps, sparsity per matrix, commands and losses. `meta.representation` is the training
config's, with its DC blocker r ("dc_block", docs/model.md "Samples") from --dc-block if given,
else from the config, else DC_BLOCK for a model with pre-emphasis (0 without).
--coarse-temperature T folds a sampling temperature into the coarse head: out.O2 and out.b2 are
divided by T, so every engine draws the coarse byte from softmax(logits / T) at no cost per
sample (recorded in meta.provenance.sampling; models/TRAINING.md measures it). Needs numpy only
(not torch).
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

import numpy as np

from jitvoc.model import Model
from models.checkpoint import read_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DC_BLOCK = 0.995   # docs/model.md "Samples": a −3 dB corner at 12.7 Hz (16 kHz), measured there


def torch_to_jitvoc_rows(H):
    """Row permutation taking PyTorch's [r; z; n] gate stack to jitvoc's [u; r; e] = [z; r; n]."""
    return np.concatenate([np.arange(H, 2 * H), np.arange(0, H), np.arange(2 * H, 3 * H)])


def convert(weights, ckpt_masks, meta):
    """Checkpoint arrays (models.checkpoint.read_checkpoint) -> (weights, masks) with the file's keys."""
    cfg = meta["config"]
    H = cfg["hidden"]
    m = lambda k: np.asarray(weights[k], np.float32)
    perm = torch_to_jitvoc_rows(H)
    w, masks = {}, {}
    for i, _ in enumerate(cfg["cond_layers"]):
        w[f"cond.conv{i}.weight"] = m(f"convs.{i}.weight")
        w[f"cond.conv{i}.bias"] = m(f"convs.{i}.bias")
    wih = m("gru.weight_ih_l0")[perm]
    w["gru.I"] = np.ascontiguousarray(wih[:, :3])
    w["cond.proj"] = np.ascontiguousarray(wih[:, 3:])
    w["gru.b"] = m("gru.bias_ih_l0")[perm]
    w["gru.bR"] = m("gru.bias_hh_l0")[perm]
    masks["gru.R"] = np.asarray(ckpt_masks["gru.R"], np.uint8)[perm]
    w["gru.R"] = m("gru.weight_hh_l0")[perm] * masks["gru.R"]
    for i in (1, 2, 3, 4):
        masks[f"out.O{i}"] = np.asarray(ckpt_masks[f"out.O{i}"], np.uint8)
        w[f"out.O{i}"] = m(f"O{i}.weight") * masks[f"out.O{i}"]
        w[f"out.b{i}"] = m(f"O{i}.bias")
    h2 = H // 2
    for g in range(3):  # exact zeros (the trainer holds them at zero already)
        w["gru.I"][g * H:g * H + h2, 2] = 0.0
    for k in w:
        w[k] = np.ascontiguousarray(w[k], np.float32) + np.float32(0.0)  # no -0.0
    return w, masks


def sparsity_report(masks, H):
    out = {}
    for gi, g in enumerate("ure"):
        out[f"gru.R.{g}"] = round(1.0 - float(masks["gru.R"][gi * H:(gi + 1) * H].mean()), 4)
    for k in sorted(masks):
        out[k] = round(1.0 - float(masks[k].mean()), 4)
    return out


def _sha256(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _data_provenance(split):
    """Each training voice: its Debian package, speaker, licence, notice and split sizes."""
    from models.prepare_data import VOICES
    return {v: {"package": VOICES[v]["package"], "speaker": VOICES[v]["speaker"],
                "licence": VOICES[v]["licence"], "notice": VOICES[v]["notice"],
                "train": len(e["train"]), "test": len(e["test"])}
            for v, e in split.get("voices", {}).items() if v in VOICES}


def file_representation(cfg_rep, dc_block=None) -> dict:
    """The model file's representation entry: the config's, with r as the module docstring says."""
    rep = dict(cfg_rep)
    if dc_block is not None:
        rep["dc_block"] = dc_block
    elif "dc_block" not in rep:
        rep["dc_block"] = DC_BLOCK if rep.get("preemphasis") else 0.0
    return rep


def fold_coarse_temperature(w, calibration, T):
    """Divide the coarse logits by T inside out.O2 and out.b2 (and their measured range)."""
    if not T > 0:
        raise SystemExit(f"--coarse-temperature must be positive, got {T}")
    for k in ("out.O2", "out.b2"):
        w[k] = (w[k] / np.float32(T)).astype(np.float32)
    ranges = (calibration or {}).get("activation_ranges", {})
    if "logits.coarse" in ranges:
        ranges["logits.coarse"] = {k: v / T for k, v in ranges["logits.coarse"].items()}


def export(ckpt, out, command=None, extra_provenance=None, dc_block=None, coarse_temperature=1.0):
    weights, ckpt_masks, meta, _, _ = read_checkpoint(ckpt)
    cfg = meta["config"]
    w, masks = convert(weights, ckpt_masks, meta)
    if coarse_temperature != 1.0:
        fold_coarse_temperature(w, meta.get("calibration"), coarse_temperature)
    H = cfg["hidden"]
    split_path = os.path.join(HERE, "split.json")
    split = json.load(open(split_path)) if os.path.exists(split_path) else {}
    layers = [{"name": f"cond.conv{i}", "kernel": int(l["kernel"]), "activation": l["activation"]}
              for i, l in enumerate(cfg["cond_layers"])]
    provenance = {
        "kind": "trained",
        "recipe": ("models/train.py (teacher-forced WaveRNN, dual softmax, input noise, late "
                   "gradual 16x1 block pruning)"),
        "data": _data_provenance(split),
        "split": {"file": "models/split.json", "sha256": _sha256(split_path)},
        "steps": meta.get("step"),
        "total_steps": cfg.get("total_steps"),
        "batch_size": cfg.get("batch_size"), "crop_samples": cfg["crop_frames"] * cfg["mel"]["hop_length"],
        "input_noise": cfg.get("input_noise"),
        "sparsity": sparsity_report(masks, H),
        "pruning": dict(cfg["prune"], blocks="16x1 (16 consecutive rows of one column), L2 score; "
                                             "R's u, r, e gates pruned separately"),
        "final_train_loss": meta.get("final_ce"),
        "runs": meta.get("runs", []),
        "train_command": "python -m models.prepare_data && python -m models.train (see models/CARD.md)",
        "export_command": command or f"python -m models.export {ckpt} {out}",
        "date": datetime.date.today().isoformat(),
    }
    hist = meta.get("history", [])
    zR = cfg["prune"]["R"]
    started = [h["step"] for h in hist if h.get("R", 0) > 0]
    reached = [h["step"] for h in hist if h.get("R", 0) >= zR - 1e-3]
    if started:
        provenance["pruning_observed"] = {
            "R_sparsity_first_logged_above_0_at_step": started[0],
            "R_sparsity_at_target_from_step": reached[0] if reached else None}
    if meta.get("heldout"):
        provenance["heldout_teacher_forced"] = meta["heldout"][-1]
    if coarse_temperature != 1.0:
        provenance["sampling"] = {"coarse_temperature": coarse_temperature,
                                  "how": "folded into out.O2 and out.b2 (coarse logits / T)"}
    if extra_provenance:
        provenance.update(extra_provenance)
    file_meta = {"format": "jitvoc-model", "version": 1, "hidden": H,
                 "sample_rate": cfg["sample_rate"], "mel": cfg["mel"],
                 "conditioning": {"layers": layers, "upsample": "linear"},
                 "representation": file_representation(cfg["representation"], dc_block),
                 "provenance": provenance}
    if "calibration" in meta:
        file_meta["quantization"] = meta["calibration"]
    model = Model(w, masks, file_meta)
    model.save(out)
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("output")
    ap.add_argument("--note", default=None, help="free text stored as meta.provenance.note")
    ap.add_argument("--dc-block", type=float, default=None,
                    help=f"the DC blocker's r (default: the config's, else {DC_BLOCK} with "
                         "pre-emphasis, 0 without)")
    ap.add_argument("--coarse-temperature", type=float, default=1.0,
                    help="sampling temperature of the coarse softmax, folded into out.O2/out.b2")
    args = ap.parse_args(argv)
    cmd = "python -m models.export " + " ".join(sys.argv[1:] if argv is None else argv)
    model = export(args.checkpoint, args.output, command=cmd,
                   extra_provenance={"note": args.note} if args.note else None,
                   dc_block=args.dc_block, coarse_temperature=args.coarse_temperature)
    print(f"{args.output}: {model!r}, {os.path.getsize(args.output) / 2**20:.2f} MiB")
    print(json.dumps(model.meta["provenance"]["sparsity"]))


if __name__ == "__main__":
    main()
