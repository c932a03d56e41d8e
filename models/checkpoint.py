"""Training checkpoints: the folder an exact resume reads (weights, masks, RNG state and Adam's
moments) and the compact fp16 copy kept in the repository; written by models/train.py, read by
it and by models/export.py.
"""
import json
import os

import numpy as np

from jitvoc.atomic import atomic_file


def _meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


def save_npz(path, arrays):
    """A compressed .npz written atomically (no partial file on failure)."""
    with atomic_file(path, OSError) as f:
        np.savez_compressed(f, **arrays)


ADAM_FILES = {"exp_avg": "adam_m.npz", "exp_avg_sq": "adam_v.npz"}


def save_checkpoint(out, model, pruner, optimizer, meta, gen):
    """`out`/weights.npz, adam_m.npz and adam_v.npz (fp32, about 14 MB each for H = 896: each
    under the 16 MiB one file may take back from the GPU machine): an exact resume."""
    os.makedirs(out, exist_ok=True)
    arrays = {"model/" + n: p.detach().float().cpu().numpy() for n, p in model.state_dict().items()}
    arrays.update({"mask/" + n: m.detach().cpu().numpy().astype(np.uint8) for n, m in pruner.masks.items()})
    arrays["rng"] = gen.get_state().cpu().numpy()
    names = {id(p): n for n, p in model.named_parameters()}
    moments = {key: {} for key in ADAM_FILES}
    for p, st in optimizer.state.items():
        for key in ADAM_FILES:
            moments[key][names[id(p)]] = st[key].detach().cpu().numpy()
        meta["adam_step"] = float(st["step"])
    arrays["meta"] = _meta_array(meta)
    for key, f in ADAM_FILES.items():
        save_npz(os.path.join(out, f), moments[key])
    save_npz(os.path.join(out, "weights.npz"), arrays)


def save_compact(path, state, masks, meta):
    """fp16 weights, bit-packed masks and meta (numpy arrays by state_dict / matrix name): the
    copy kept in the repository."""
    arrays = {"model/" + n: np.asarray(w).astype(np.float16) for n, w in state.items()}
    for n, m in masks.items():
        mask = np.asarray(m).astype(bool)
        arrays["maskbits/" + n] = np.packbits(mask)
        arrays["maskshape/" + n] = np.array(mask.shape, np.int64)
    arrays["meta"] = _meta_array(dict(meta, compact=True))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_npz(path, arrays)


def read_checkpoint(path):
    """(float32 weights by state_dict name, uint8 masks by matrix name, meta, rng or None,
    Adam's moments as float32 by '<param>/<key>', empty for a compact copy)."""
    full = os.path.isdir(path)
    z = np.load(os.path.join(path, "weights.npz") if full else path, allow_pickle=False)
    meta = json.loads(bytes(z["meta"]).decode())
    weights = {k[6:]: z[k].astype(np.float32) for k in z.files if k.startswith("model/")}
    masks = {k[5:]: z[k] for k in z.files if k.startswith("mask/")}
    for k in z.files:
        if k.startswith("maskbits/"):
            n = k[9:]
            shape = tuple(z["maskshape/" + n])
            masks[n] = np.unpackbits(z[k], count=int(np.prod(shape))).reshape(shape)
    rng = z["rng"] if "rng" in z.files else None
    adam = {}
    for key, f in ADAM_FILES.items() if full else ():
        a = np.load(os.path.join(path, f), allow_pickle=False)
        adam.update({f"{n}/{key}": a[n] for n in a.files})
    return weights, masks, meta, rng, adam
