"""The learning curve of the shipped model's training chain, from its logs.

    python -m models.learning_curve [--out models/learning_curve.png]

The chain is the line of runs whose checkpoints the next run resumed (models/TRAINING.md): where a
side-by-side variant won, the chain continued from the variant, so its log is the chain's. For
each run the plot takes the training seconds and the held-out teacher-forced bits/sample at the
run's end (models/logs/*.log), and the free-running PESQ-wb / STOI of the run's last checkpoint
where it was scored (models/logs/freerun_*.md, matched by step).
"""

import argparse
import ast
import json
import re
from pathlib import Path

LOGS = Path(__file__).with_name("logs")

# run -> log of the checkpoint the next run resumed (TRAINING.md: crops 800 won in runs 5-6,
# crops 400 in run 7, input noise σ = 3 in runs 8-10).
CHAIN = ["multivoice_run1", "multivoice_run2", "multivoice_run3", "multivoice_run4",
         "multivoice_run5_crop800", "multivoice_run6_crop800", "multivoice_run7_crop400",
         "multivoice_run8_noise3", "multivoice_run9_noise3", "multivoice_run10_noise3",
         "multivoice_run11", "multivoice_run12", "multivoice_run13",
         "multivoice_run14", "multivoice_run15", "multivoice_run16"]
VOICES = ("festvox_ru", "all")


def run_record(name):
    """(end step, training seconds, held-out bits/sample per voice) of one run's log."""
    text = (LOGS / f"{name}.log").read_text()
    summary = ast.literal_eval(re.search(r"run: (\{.*)", text).group(1).split(", 'device'")[0] + "}")
    held_out = json.loads(re.search(r"held-out teacher-forced bits/sample: (\{[^}]*\})", text).group(1))
    return summary["steps"][1], summary["seconds"], held_out


def free_running_scores():
    """{step: {voice: (PESQ-wb, STOI)}} from every table of models/logs/freerun_*.md."""
    scores = {}
    for path in sorted(LOGS.glob("freerun_*.md")):
        steps = []
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "voice":
                steps = [int(m.group(1)) if (m := re.search(r"step (\d+)", c)) else None
                         for c in cells[1:]]
            elif cells[0] in VOICES and steps:
                for step, cell in zip(steps, cells[1:]):
                    pesq, stoi = (float(v) for v in cell.split(" / ")[:2])
                    scores.setdefault(step, {})[cells[0]] = (pesq, stoi)
    return scores


def curve():
    """One row per chain run: GPU minutes so far, end step, held-out bits, free-running scores."""
    scores, minutes, rows = free_running_scores(), 0.0, []
    for name in CHAIN:
        step, seconds, held_out = run_record(name)
        minutes += seconds / 60
        rows.append({"run": name, "minutes": minutes, "step": step, "held_out": held_out,
                     "free_running": scores.get(step, {})})
    return rows


def plot(rows, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    minutes = [r["minutes"] for r in rows]
    for voice in VOICES:
        top.plot(minutes, [r["held_out"][voice] for r in rows], "o-", label=voice)
        scored = [r for r in rows if voice in r["free_running"]]
        bottom.plot([r["minutes"] for r in scored], [r["free_running"][voice][0] for r in scored],
                    "o-", label=f"{voice}, free-running")
    top.set_ylabel("held-out bits/sample (teacher-forced)")
    bottom.set_ylabel("PESQ-wb, free-running 3 s")
    bottom.axhline(2.8, color="grey", linestyle="--", label="target (festvox_ru, int8)")
    bottom.set_xlabel("H200-minutes of chain training")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend()
    top.set_title("multivoice_wavernn_16k: the training chain (models/TRAINING.md)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("learning_curve.png")))
    args = parser.parse_args(argv)
    rows = curve()
    print("| run | H200-min | step | held-out festvox_ru / all | free-running PESQ-wb festvox_ru / all |")
    print("|---|---:|---:|---|---|")
    for r in rows:
        fr = r["free_running"]
        pesq = " / ".join(f"{fr[v][0]:.2f}" for v in VOICES) if fr else "—"
        print(f"| {r['run']} | {r['minutes']:.0f} | {r['step']:,} | "
              f"{r['held_out']['festvox_ru']:.2f} / {r['held_out']['all']:.2f} | {pesq} |")
    plot(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
