"""Fine-tuned features under grouped cross-validation: the net is trained inside each fold.

A net fine-tuned on every FF++ video and then used as a feature extractor in a CV over the same
videos would have seen the test videos: its scores would be a lie. Here, for each of the 5
grouped folds of the FF++ videos (c23 and c40; the unpaired actor originals left out), the net is
fine-tuned on the training groups only (``fakeprobe finetune`` with ``groups=``, a fixed number of
epochs, no validation split), its ``embedding`` layer becomes the feature set of that fold's
heads (fitted on the training groups' frames), and the test groups are scored:

* ``net``: the fine-tuned net's own output P(fake), mean over a video's frames;
* ``logreg`` / ``xgb``: the classical heads on the 128-d embedding (video = mean of frames).

Out-of-fold video scores give one ROC-AUC per scorer. ``--fakes`` chooses the training fakes:
``real`` (true fakes), ``all`` (true fakes + self-blended pseudo-fakes) or ``self-blend`` (only
pseudo-fakes); pseudo-fakes are never scored. ``--lomo`` also holds one manipulation method out
of training in every fold and scores the reals and that method's fakes. ``--always-train``
adds other people's footage to every fold's training (and never scores it): with
``--fakes self-blend`` that is training on real footage of many identities alone. ``--seeds``
runs the whole CV once per seed (its own folds, training draws and heads) and adds the mean of
the seeds' out-of-fold scores, item by item: an ensemble that is still out of fold. The JSON
keeps every scored item's out-of-fold scores.

    .venv/bin/python benchmarks/finetune_cv.py runs/sbi/videos.h5 --fakes real all \\
        --epochs 5 --input-size 128 --json-out r.json --markdown r.md

The cache needs stored crops (``extract --keep-crops``) and, for ``all``/``self-blend``,
pseudo-fakes (``--self-blend``). Prints JSON on stdout and a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fakeprobe.classifiers.data import Selection
from fakeprobe.classifiers.heads import fit_head, new_head
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.training.cv import fake_proba
from _nets import item_mean, net_outputs
from _output import emit
from fakeprobe.classifiers.metrics import binary_metrics, fmt
from fakeprobe.core.provenance import environment
from fakeprobe.training.finetune import FinetuneConfig, finetune, load_crops, sidecar_path

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
HEADS = ("logreg", "xgb")
#: The unpaired 24 fps actor originals and their pseudo-fakes are left out (data README).
LEFT_OUT_GROUPS = ("ffpp:actor:*",)


def run_condition(cache: Path, workdir: Path, fakes: str, config: FinetuneConfig, folds: int,
                  seed: int, held_out: str | None = None,
                  always_train: tuple[str, ...] = ()) -> dict:
    """Out-of-fold video scores of every scorer for one choice of training fakes.

    Items whose group matches an ``always_train`` pattern (other people: FFHQ photos, the actor
    originals, DFDC) train in every fold and are never scored."""
    from fnmatch import fnmatchcase

    from sklearn.model_selection import StratifiedGroupKFold

    data = load_crops(cache, Selection(), config.input_size)
    n_items = len(data.ids)
    extra = np.array([any(fnmatchcase(g, p) for p in always_train) for g in data.groups])
    in_ffpp = np.array([d.startswith("FaceForensics++") for d in data.datasets])
    in_ffpp &= ~np.array([any(fnmatchcase(g, p) for p in LEFT_OUT_GROUPS)
                          for g in data.groups]) & ~extra
    pseudo = data.methods == SELF_BLEND_METHOD
    true_fake = (data.labels == 1) & ~pseudo
    # folds over the items that are scored (FF++ reals and true fakes), by group
    scored = np.flatnonzero(~pseudo & in_ffpp)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    oof = {name: np.full(n_items, np.nan) for name in ("net", *HEADS)}
    seconds = []
    for k, (_, test) in enumerate(splitter.split(scored, data.labels[scored],
                                                 data.groups[scored])):
        test_groups = set(data.groups[scored[test]])
        train_groups = sorted((set(data.groups[in_ffpp]) - test_groups)
                              | set(data.groups[extra]))
        train_items = np.flatnonzero(np.isin(data.groups, train_groups))
        if held_out:  # leave one method out of training
            train_items = train_items[data.methods[train_items] != held_out]
            train_groups = sorted(set(data.groups[train_items]))
        out = workdir / f"{fakes}-{held_out or 'all'}-fold{k}.keras"
        method_filter = Selection(exclude_methods=(held_out,) if held_out else ())
        finetune(cache, out, config, selection=method_filter, groups=train_groups,
                 fakes=fakes, val_fraction=0.0)
        # the epochs' own times, so that a net reused from an earlier run reports its training
        history = json.loads(sidecar_path(out).read_text(encoding="utf-8"))["history"]
        seconds.append(sum(epoch["seconds"] for epoch in history))
        emb, prob = net_outputs(out, data.crops)
        test_items = np.flatnonzero(np.isin(data.groups, list(test_groups)) & ~pseudo)
        if held_out:
            test_items = test_items[(data.labels[test_items] == 0)
                                    | (data.methods[test_items] == held_out)]
        test_rows = np.isin(data.item, test_items)
        oof["net"][test_items] = item_mean(prob, data.item, n_items)[test_items]
        use = {"real": ~pseudo, "all": np.ones(n_items, bool),
               "self-blend": ~true_fake}[fakes]
        fit_items = train_items[use[train_items]]
        fit_rows = np.isin(data.item, fit_items)
        y_rows = data.labels[data.item]
        for head in HEADS:
            model = fit_head(new_head(head, random_state=seed), emb[fit_rows], y_rows[fit_rows],
                             data.item[fit_rows], data.groups[data.item[fit_rows]])
            frame = np.full(len(data.item), np.nan)
            frame[test_rows] = fake_proba(model, emb[test_rows])
            video = item_mean(np.nan_to_num(frame), data.item, n_items)
            oof[head][test_items] = video[test_items]
        print(f"  fold {k}: {len(train_groups)} training groups, {len(test_items)} test items, "
              f"fine-tune {seconds[-1]:.0f} s", file=sys.stderr)
    result = {"fakes": fakes, "held_out": held_out, "always_train": list(always_train),
              "extra_items": int(extra.sum()), "seed": seed, "finetune_seconds": seconds}
    scored_items = np.flatnonzero(~np.isnan(oof["net"]))
    result["scores"] = {"ids": [str(data.ids[i]) for i in scored_items],
                        "labels": data.labels[scored_items].tolist(),
                        "methods": [str(data.methods[i]) for i in scored_items],
                        **{name: oof[name][scored_items].tolist() for name in oof}}
    result.update(_metrics(result["scores"]))
    return result


def _metrics(scores: dict) -> dict:
    """AUC and log loss of every scorer from a result's ``scores`` (per scored item)."""
    labels = np.asarray(scores["labels"])
    out = {}
    for name in ("net", *HEADS):
        metrics = binary_metrics(labels, np.asarray(scores[name], float))
        out[name] = {"auc": metrics["roc_auc"], "log_loss": metrics["log_loss"],
                     "n": len(labels)}
    return out


def seed_ensemble(runs: list[dict]) -> dict:
    """The mean of every scorer's out-of-fold video score over the seeds' runs of one condition.

    Each seed draws its own folds, so every item is scored by nets that never saw its group;
    averaging those scores is an ensemble of independent fits, still out of fold."""
    common = set.intersection(*(set(r["scores"]["ids"]) for r in runs))
    ids = [i for i in runs[0]["scores"]["ids"] if i in common]
    first = runs[0]["scores"]
    row = {i: k for k, i in enumerate(first["ids"])}
    scores = {"ids": ids, "labels": [first["labels"][row[i]] for i in ids],
              "methods": [first["methods"][row[i]] for i in ids]}
    for name in ("net", *HEADS):
        per_seed = []
        for r in runs:
            at = {i: k for k, i in enumerate(r["scores"]["ids"])}
            per_seed.append([r["scores"][name][at[i]] for i in ids])
        scores[name] = np.mean(per_seed, axis=0).tolist()
    result = {key: runs[0][key] for key in ("fakes", "held_out", "always_train", "extra_items")}
    result.update({"seeds": [r["seed"] for r in runs],
                   "finetune_seconds": [s for r in runs for s in r["finetune_seconds"]],
                   "scores": scores, **_metrics(scores)})
    return result


def markdown(result: dict) -> str:
    lines = ["Video ROC-AUC, out of fold (grouped 5-fold CV on the FF++ videos; the net "
             "fine-tuned inside each fold)", "",
             "| training fakes | also trains on | held out | seed | net | logreg on embedding | "
             "xgb on embedding | fine-tune s/fold |", "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        extra = ", ".join(r.get("always_train", [])) or "-"
        seed = ("mean of " + ", ".join(map(str, r["seeds"]))) if "seeds" in r else r["seed"]
        lines.append(f"| {r['fakes']} | {extra} | {r['held_out'] or '-'} | {seed} | "
                     f"{fmt(r['net']['auc'])} | "
                     f"{fmt(r['logreg']['auc'])} | {fmt(r['xgb']['auc'])} | "
                     f"{np.mean(r['finetune_seconds']):.0f} |")
    env = result["environment"]
    c = result["config"]
    lines += ["", f"{c['base']} at {c['input_size']} px, {c['epochs']} epochs, lr {c['lr']}; "
              f"{env['cpu']}, {env['cores']} cores"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("--workdir", default="runs/finetune-cv/seed{seed}",
                        help="where the fold nets go; {seed} is replaced by the seed. A run "
                        "again with the same folder reuses the finished nets")
    parser.add_argument("--fakes", nargs="+", default=["real", "all"])
    parser.add_argument("--lomo", action="store_true", help="also leave each method out")
    parser.add_argument("--always-train", nargs="*", default=[],
                        help="group patterns that train in every fold and are never scored "
                        "(e.g. 'real/*' for FFHQ photos, 'ffpp:actor:*', 'dfdc:*')")
    parser.add_argument("--base", default="mobilenet-v2")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--frames-per-item", type=int, default=0,
                        help="at most this many frames of each item train the net (0: all)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per seed (folds, net and heads); with several, also the "
                        "mean of their out-of-fold scores")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    config = FinetuneConfig(base=args.base, input_size=args.input_size, epochs=args.epochs,
                            lr=args.lr, val_fraction=0.0, frames_per_item=args.frames_per_item)
    results = []
    for fakes in args.fakes:
        for held_out in (None, *(FF_METHODS if args.lomo else ())):
            runs = []
            for seed in args.seeds:
                print(f"fakes={fakes} held out={held_out} seed={seed}", file=sys.stderr)
                workdir = Path(args.workdir.format(seed=seed))
                workdir.mkdir(parents=True, exist_ok=True)
                runs.append(run_condition(args.cache, workdir, fakes, replace(config, seed=seed),
                                          args.folds, seed, held_out, tuple(args.always_train)))
                results.append(runs[-1])
                _say(runs[-1])
            if len(runs) > 1:
                results.append(seed_ensemble(runs))
                _say(results[-1])
    shared = {k: v for k, v in config.to_dict().items() if k != "seed"}  # seeds: per run
    result = {"benchmark": "finetune_cv", "cache": str(args.cache), "seeds": args.seeds,
              "folds": args.folds, "config": shared, "environment": environment(),
              "results": results}
    emit(result, markdown(result), args.json_out, args.markdown)


def _say(r: dict) -> None:
    print(f"  net {fmt(r['net']['auc'])} logreg {fmt(r['logreg']['auc'])} xgb "
          f"{fmt(r['xgb']['auc'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
