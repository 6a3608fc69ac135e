"""Where a detector grasp model's Y_ood answers are lost, on a held-out clutter benchmark (nothing is fitted on it):
per part (Y_id names on X_id frames, Y_ood names on X_ood frames) the ROC AUC of the answer against "graspable",
against "present" and, among present objects, against "graspable", with each factor of the answer left out; the
same read at every visible object's ground-truth centre instead of where the answer peaks; and how often the
embedding there names the object right (top-1 among its own part's names and among all label names), to set
beside the teacher's crop top-1 that `vlkd eval-grasp` prints.

    python benchmarks/grasp_ood_limit.py --model vlkd_ros/models/grasp_default --benchmark data/clutter_heldout
    python benchmarks/grasp_ood_limit.py --model runs/grasp/vild/model --benchmark data/clutter_heldout \
        --embedding distilled       # a model with student.image_embedding: read its distilled embedding
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from training.grasp.data import Episode, EpisodeDataset, episode_targets
from training.grasp.eval import benchmark_data, card_train_config, label_text
from training.grasp.model_dir import load_grasp_model_dir
from vlkd_formats.image_codec import read_rgb
from vlkd_runtime.scoring import FIELDS


def _aucs(graspable: np.ndarray, present: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"graspable": roc_auc_score(graspable, scores), "present": roc_auc_score(present, scores),
            "graspable_among_present": roc_auc_score(graspable[present], scores[present])}


def _centre_cells(episode: Episode, names: list[str], side: int, frame: tuple[int, int]) -> dict[int, int]:
    """name index -> the map cell under the centre of that object's visible box (frame pixels mapped onto the model's
    square input, the inverse of `input_to_frame`), for every visible labelled object."""
    h, w = frame
    square = min(h, w)
    out = {}
    for name, obj in episode.objects.items():
        if obj.bbox is None or name not in names:
            continue
        x0, y0, x1, y1 = obj.bbox
        u = ((x0 + x1 + 1) / 2 - (w - square) / 2) / square
        v = ((y0 + y1 + 1) / 2 - (h - square) / 2) / square
        out[names.index(name)] = min(int(v * side), side - 1) * side + min(int(u * side), side - 1)
    return out


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vlkd_ros/models/grasp_default")
    parser.add_argument("--benchmark", default="data/clutter_heldout")
    parser.add_argument("--embedding", choices=("text", "distilled"), default="text",
                        help="which embedding the centre read-out uses (distilled: a model with two)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    gm = load_grasp_model_dir(args.model, "cpu")
    gm.student.eval()
    ids, oods = gm.card.labels["id"], gm.card.labels["ood"]
    names = ids + oods
    bench = benchmark_data(args.benchmark, card_train_config(gm.root, []), ids, oods, None)
    pos, neg = label_text(gm)
    scorer = gm.scorer()
    scale, d = scorer.log_scale.exp(), pos.shape[-1]
    result = {"model": args.model, "benchmark": args.benchmark, "embedding": args.embedding}
    for part, episodes, lo, hi in (("id_on_id", bench.train + bench.x_id, 0, len(ids)),
                                   ("ood_on_ood", bench.x_ood, len(ids), len(names))):
        feats = torch.cat([gm.student(x) for x, _ in DataLoader(EpisodeDataset(episodes, gm.transform()),
                                                                 batch_size=64)])
        lp = scorer.log_scores(feats, pos[lo:hi], None if neg is None else neg[lo:hi])  # (B, L, N)
        objectness, free = F.logsigmoid(feats[..., :1]), F.logsigmoid(feats[..., 1:2])
        match = lp - objectness - free
        variants = {"answer": lp, "without_free": lp - free, "match_alone": match}
        graspable, present = (t[:, lo:hi].flatten().numpy() > 0.5 for t in episode_targets(episodes, names))
        out = {k: _aucs(graspable, present, v.max(1).values.flatten().numpy()) for k, v in variants.items()}
        emb = feats[..., FIELDS:FIELDS + d] if args.embedding == "text" else feats[..., -d:]
        own = F.log_softmax(scale * emb @ pos.T, -1)  # (B, L, 40): each location's softmax over the label names
        side = int(feats.shape[1] ** 0.5)
        at_centres = torch.full((len(episodes), hi - lo), -1e9)
        right_part, right_all = [], []
        for i, episode in enumerate(episodes):
            frame = read_rgb(episode.images["base_rgb"]).shape[:2]
            for j, cell in _centre_cells(episode, names, side, frame).items():
                at_centres[i] = torch.maximum(at_centres[i], own[i, cell, lo:hi])
                if lo <= j < hi:
                    right_part.append(int(own[i, cell, lo:hi].argmax()) == j - lo)
                    right_all.append(int(own[i, cell].argmax()) == j)
        out["match_at_object_centres"] = _aucs(graspable, present, at_centres.flatten().numpy())
        out["centre_top1_own_part"] = float(np.mean(right_part))
        out["centre_top1_all_names"] = float(np.mean(right_all))
        out["objects"] = len(right_part)
        out["graspable_share_of_present"] = float(graspable[present].mean())
        result[part] = out
    print(json.dumps(result, indent=1, default=float))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=float)


if __name__ == "__main__":
    main()
