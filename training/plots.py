"""PNG plots of evaluation results (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_singular_values(values: list[float], path: str | Path) -> Path:
    """Bar plot of the label-text space's singular values."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(1, len(values) + 1), values)
    ax.set(xlabel="index", ylabel="singular value", title="label text features (mean-centred)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_embeddings(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, labels: list[str],
                    path: str | Path) -> Path:
    """2-D PCA (fitted on the teacher) of student and teacher features, coloured by label."""
    mean = teacher.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(teacher - mean, q=2, center=False)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
    for ax, feats, name in ((axes[0], teacher, "teacher"), (axes[1], student, "student")):
        xy = ((feats - mean) @ v).numpy()
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=targets.numpy(), cmap="tab20", s=10)
        ax.set_title(f"{name} features (PCA of teacher)")
    handles = sc.legend_elements(num=len(labels))[0]
    fig.legend(handles, labels[:len(handles)], loc="center right", fontsize=6)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
