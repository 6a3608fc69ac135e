"""The offline mini-world end to end: render (sim) -> distil -> evaluate, for `vlkd demo` and `vlkd reproduce`.

This module only composes the stages through their artefacts (dataset dir, model dir); it holds no stage logic.
It imports the stages (torch) only when a run starts, so the `vlkd` parser can read its config classes cheaply.
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import training
from vlkd_formats.config import PACKAGED_CONFIGS, load_config
from vlkd_formats.atomic_io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from training.distill import DistillConfig
    from training.evaluate import EvalConfig

log = logging.getLogger(__name__)
CONFIG_DIR = Path(training.__file__).resolve().parent / PACKAGED_CONFIGS  # the shipped job configs (package data)
BASE_CONFIG = CONFIG_DIR / "miniworld_resnet18.yaml"


@dataclass
class MiniWorldConfig:
    """Data and schedule of the mini-world runs (`quick` shrinks both for a smoke run); the demo's grasp stage
    renders `clutter_episodes` table scenes and trains the grasp head from the distilled student. The `help`
    metadata is the text of the `vlkd demo` / `vlkd reproduce` flag of a field."""

    workdir: str = field(default="runs/demo", metadata={"help": "where runs and reports go"})
    data_dir: str = field(default="data/miniworld/classification",
                          metadata={"help": "renders to collect or reuse"})
    clutter_dir: str = "data/miniworld/clutter"
    distill_config: str = str(BASE_CONFIG)
    per_class: int = 30
    image_size: int = 64
    epochs: int = field(default=15, metadata={"help": "distillation epochs"})
    fewshot_steps: int = field(default=60, metadata={"help": "few-shot finetune steps in the k-shot evaluation"})
    k_shot: int = 5
    seed: int = 0
    workers: int = field(default=1, metadata={"help": "render worker processes"})
    clutter_episodes: int = 60
    grasp_epochs: int = 8

    def quick(self) -> "MiniWorldConfig":
        """A copy sized to finish in two to three minutes on two CPU cores."""
        return MiniWorldConfig(**{**self.__dict__, "per_class": 10, "epochs": 10, "fewshot_steps": 20,
                                  "clutter_episodes": 16, "grasp_epochs": 2, "workdir": self.workdir + "-quick",
                                  "data_dir": self.data_dir + "-quick", "clutter_dir": self.clutter_dir + "-quick"})


def collect_renders(config: MiniWorldConfig) -> Path:
    """Render (or resume/reuse) the classification dataset: all offline categories, seeded 50/50 ID/OOD split."""
    from sim.collect_classification import collect_classification
    from sim.config import ClassificationConfig

    sim_config = ClassificationConfig(objects="offline", per_class=config.per_class, image_size=config.image_size,
                                      seed=config.seed, workers=config.workers)
    collect_classification(sim_config, config.data_dir)
    return Path(config.data_dir)


def collect_clutter_scenes(config: MiniWorldConfig) -> Path:
    """Render (or resume/reuse) PickClutter-style table scenes of the offline objects, same split and size."""
    from sim.collect_clutter import collect_clutter
    from sim.config import ClutterConfig

    collect_clutter(ClutterConfig(objects="offline", episodes=config.clutter_episodes, image_size=config.image_size,
                                  seed=config.seed, workers=config.workers), config.clutter_dir)
    return Path(config.clutter_dir)


def train_grasp_from(config: MiniWorldConfig, student_dir: str | Path) -> Path:
    """The grasp model of the shipped `configs/grasp_offline.yaml` on the demo's scenes, starting from the distilled
    student."""
    from training.grasp.train import GraspTrainConfig, train_grasp

    return train_grasp(load_config(GraspTrainConfig, CONFIG_DIR / "grasp_offline.yaml", [
        f"data.root={config.clutter_dir}", f"output_dir={Path(config.workdir) / 'grasp'}",
        f"student_init={student_dir}", f"optim.epochs={config.grasp_epochs}", f"seed={config.seed}"]), resume=True)


@dataclass
class BuildGraspConfig:
    """`vlkd build-grasp-model`: render the training scenes (a shipped collection config), train the shipped grasp
    recipe on them from the shipped teacher, and install the model dir where `vlkd serve` finds its default."""

    collect_config: str = field(default="clutter_train", metadata={"help": "collection config (sim/configs)"})
    train_config: str = field(default="grasp_default", metadata={"help": "training config (training/configs)"})
    data_dir: str = field(default="data/clutter_train", metadata={"help": "where the scenes go (reused if there)"})
    workdir: str = field(default="runs/grasp_default", metadata={"help": "training run dir"})
    out: str = field(default="", metadata={"help": "install the model dir here (default: the shipped model's place, "
                                                   "vlkd_ros/models/grasp_default)"})
    workers: int = field(default=2, metadata={"help": "render worker processes"})
    overrides: list[str] = field(default_factory=list, metadata={"help": "training config overrides"})


def build_grasp_model(config: BuildGraspConfig) -> Path:
    """Collect (or reuse) the scenes, train (resuming a run in `workdir`), install the model dir at `out`
    (replacing what was there only once the new one is complete); returns the installed dir."""
    import shutil

    from sim.collect_clutter import collect_clutter
    from sim.config import ClutterConfig
    from training.grasp.train import GraspTrainConfig, train_grasp
    from vlkd_ros.inference.model_paths import SHIPPED_MODEL_DIR

    collect_clutter(load_config(ClutterConfig, config.collect_config, [f"workers={config.workers}"]),
                    config.data_dir)
    model_dir = train_grasp(load_config(GraspTrainConfig, config.train_config, [
        f"data.root={config.data_dir}", f"output_dir={config.workdir}", *config.overrides]), resume=True)
    out = Path(config.out) if config.out else SHIPPED_MODEL_DIR
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("*.lock"))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


DEMO_FRAMES = 3


def grasp_query_example(grasp_dir: str | Path, clutter_dir: str | Path, frames: int = DEMO_FRAMES
                        ) -> dict[str, Any]:
    """Ask the grasp model about every object on `frames` held-out table frames (X_ood first, then X_id; no
    training step read them) and one absent object each: answers, truth and each frame's accuracy."""
    from training.grasp.data import GraspDataConfig, load_clutter_data
    from vlkd_ros.inference import GraspFeasibility, episode_observation

    model = GraspFeasibility.from_checkpoint(grasp_dir)
    try:
        data = load_clutter_data(GraspDataConfig(root=str(clutter_dir), views=model.views))
        episodes = (data.x_ood + data.x_id)[:frames]
        if not episodes:
            raise ValueError(f"{clutter_dir} has no held-out frames (X_ood or X_id) to ask the grasp model about")
        out = []
        for episode in episodes:
            absent = next(n for n in data.ood_objects + data.id_objects if n not in episode.objects)
            names = sorted(episode.objects) + [absent]
            answers = model.query([episode_observation(episode, model.views)], names)[0]
            truth = {n: n in episode.objects and episode.objects[n].graspable for n in names}
            rows = [{"name": n, "ood": n in data.ood_objects, "truth": truth[n], **answers[n]} for n in names]
            out.append({"frame": str(episode.images["base_rgb"]), "answers": rows,
                        "accuracy": sum(r["graspable"] == r["truth"] for r in rows) / len(rows)})
    finally:
        model.close()
    return {"model_dir": str(grasp_dir), "threshold": model.threshold, "frames": out}


def shipped_grasp_model() -> Path | None:
    """The installed default grasp model dir, or None when this install has none."""
    from vlkd_ros.inference.model_paths import NoDefaultModelError, default_model_dir

    try:
        return default_model_dir()
    except NoDefaultModelError:
        return None


def plot_grasp_answers(queries: dict[str, dict[str, Any]], path: Path) -> Path:
    """One row of frames per model: each frame with every asked object's answer (green: right, red: wrong) and,
    for a dense model, a marker and a box where it sees the object."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from vlkd_formats.image_codec import read_rgb
    from vlkd_ros.inference.locations import frame_location

    cols = max(len(q["frames"]) for q in queries.values())
    fig, axes = plt.subplots(len(queries), cols, figsize=(4.2 * cols, 4.6 * len(queries)), squeeze=False)
    for row, (label, query) in enumerate(queries.items()):
        for col in range(cols):
            ax = axes[row][col]
            ax.axis("off")
            if col >= len(query["frames"]):
                continue
            frame = query["frames"][col]
            rgb = read_rgb(frame["frame"])
            h, w = rgb.shape[:2]
            ax.imshow(rgb)
            lines = []
            for a in frame["answers"]:
                ok = a["graspable"] == a["truth"]
                colour = "limegreen" if ok else "red"
                lines.append((f"{a['name']}{' (OOD)' if a['ood'] else ''}: {'yes' if a['graspable'] else 'no'} "
                              f"{a['score']:.2f} (truth {'yes' if a['truth'] else 'no'})", colour))
                where = frame_location(a.get("location"), w, h)
                if where is not None and a["graspable"]:
                    x, y = where.u, where.v
                    ax.plot(x, y, "o", ms=7, mfc="none", mec=colour, mew=2)
                    x0, y0, x1, y1 = where.box
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1))
                    ax.annotate(a["name"], (x, y), color=colour, fontsize=6, xytext=(3, 3),
                                textcoords="offset points")
            ax.set_title(f"{label}: frame {col + 1}, {100 * frame['accuracy']:.0f}% right", fontsize=8)
            for i, (text, colour) in enumerate(lines):
                ax.text(0.0, -0.04 - 0.055 * i, text, transform=ax.transAxes, fontsize=6, color=colour, va="top")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def distill_config_for(config: MiniWorldConfig, run_name: str, overrides: list[str] | None = None) -> DistillConfig:
    """The base distillation config pointed at the mini-world data and a run folder."""
    from training.distill import DistillConfig

    return load_config(DistillConfig, config.distill_config, [
        f"data.root={config.data_dir}", f"output_dir={Path(config.workdir) / run_name}",
        f"optim.epochs={config.epochs}", f"seed={config.seed}", *(overrides or [])])


def eval_config_for(config: MiniWorldConfig, seed: int) -> EvalConfig:
    """Evaluation settings for the mini-world runs."""
    from training.evaluate import EvalConfig

    evalc = EvalConfig(k_shot=config.k_shot, seed=seed)
    evalc.fewshot.steps = config.fewshot_steps
    return evalc


def run_demo(config: MiniWorldConfig) -> dict[str, Any]:
    """Collect, distil ResNet18 on Y_id, evaluate ID / 0-shot OOD / k-shot OOD; write and return a report."""
    from training.distill import distill
    from training.evaluate import evaluate

    t0 = time.perf_counter()
    data = collect_renders(config)
    dconf = distill_config_for(config, "distill")
    model_dir = distill(dconf, resume=True)
    result = evaluate(model_dir, eval_config_for(config, config.seed), dconf)
    scenes = collect_clutter_scenes(config)
    grasp_dir = train_grasp_from(config, model_dir)
    queries = {"this demo's grasp model": grasp_query_example(grasp_dir, scenes)}
    shipped = shipped_grasp_model()
    if shipped is not None:
        queries["shipped default model"] = grasp_query_example(shipped, scenes)
    picture = plot_grasp_answers(queries, Path(config.workdir) / "grasp_answers.png")
    report = {"data": str(data), "model_dir": str(model_dir), "eval_dir": str(Path(model_dir) / "eval"),
              "grasp_dir": str(grasp_dir), "grasp_queries": queries, "grasp_picture": str(picture),
              "seconds": round(time.perf_counter() - t0, 1), "result": result}
    atomic_write_json(Path(config.workdir) / "demo_report.json", report)
    return report


# The paper's Table 1 rows, as config diffs on top of the base (each row adds to the previous one).
TABLE1_ROWS: list[tuple[str, list[str]]] = [
    ("L_cls", ["losses=[{type: cls}]"]),
    ("+L_mse", ["losses=[{type: cls}, {type: mse}]"]),
    ("+L_im-cst", ["losses=[{type: cls}, {type: mse}, {type: im_cst}]"]),
    ("+L_vlprox", ["losses=[{type: cls}, {type: mse}, {type: im_cst}, {type: vlprox}]"]),
    ("+rich descriptions", ["losses=[{type: cls}, {type: mse}, {type: im_cst}, {type: vlprox}]",
                            "text.use_descriptions=true"]),
    ("+ComKD (IFAlign, EduAttention, KL refine)",
     ["losses=[{type: cls}, {type: mse}, {type: im_cst}, {type: vlprox}, {type: ifalign}, {type: kl_refine}]",
      "text.use_descriptions=true", "student.edu_attention=true"]),
]


@dataclass
class ReproduceConfig:
    """Rows x seeds of the Table-1 reproduction (`help` metadata: the `vlkd reproduce` flag's text)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "training/evaluation seeds"})
    rows: list[str] = field(default_factory=lambda: [name for name, _ in TABLE1_ROWS],
                            metadata={"help": "subset of Table-1 row names"})


def run_reproduce(config: MiniWorldConfig, repro: ReproduceConfig) -> dict[str, Any]:
    """Every row for every seed on the same data; mean and std per row; Markdown table + bar plot."""
    from training.distill import distill
    from training.evaluate import evaluate

    rows = dict(TABLE1_ROWS)
    unknown = [r for r in repro.rows if r not in rows]
    if unknown:
        raise ValueError(f"unknown Table-1 row(s) {unknown}; rows are {list(rows)}")
    collect_renders(config)
    results: dict[str, list[dict[str, float]]] = {}
    out = Path(config.workdir)
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for row in repro.rows:
        for seed in repro.seeds:
            run = copy.copy(config)
            run.seed = seed
            slug = row.replace(" ", "_").replace("+", "plus_").replace("(", "").replace(")", "").replace(",", "")
            dconf = distill_config_for(run, f"{slug}/seed{seed}", rows[row])
            dconf.data.root = config.data_dir  # same data for every seed; only training/eval seeds vary
            model_dir = distill(dconf, resume=True)
            res = evaluate(model_dir, eval_config_for(config, seed), dconf)
            results.setdefault(row, []).append(res["student"])
        runs = results[row]
        summary[row] = {k: (statistics.mean(v[k] for v in runs), statistics.pstdev(v[k] for v in runs))
                        for k in ("id", "ood_0shot", "ood_kshot")}
        # written after every row, so an interrupted reproduction still shows the finished rows
        atomic_write_json(out / "table1.json", {"seeds": repro.seeds, "runs": results, "summary": summary})
        atomic_write_text(out / "table1.md", table1_markdown(summary, config.k_shot, len(repro.seeds)))
        plot_table1(summary, out / "table1.png", config.k_shot)
    return summary


def table1_markdown(summary: dict[str, dict[str, tuple[float, float]]], k: int, n_seeds: int) -> str:
    """Markdown table: mean ± std (percent) over seeds."""
    lines = [f"| losses (mean ± std over {n_seeds} seeds) | ID | 0-shot OOD | {k}-shot OOD |", "|---|---|---|---|"]
    for row, cols in summary.items():
        cells = " | ".join(f"{100 * m:.1f} ± {100 * s:.1f}"
                           for m, s in (cols["id"], cols["ood_0shot"], cols["ood_kshot"]))
        lines.append(f"| {row} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_table1(summary: dict[str, dict[str, tuple[float, float]]], path: Path, k: int) -> Path:
    """Grouped bar plot of the three columns per row, with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(summary)
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, (col, name) in enumerate((("id", "ID"), ("ood_0shot", "0-shot OOD"), ("ood_kshot", f"{k}-shot OOD"))):
        ax.bar(x + (i - 1) * 0.27, [100 * summary[r][col][0] for r in rows], 0.27,
               yerr=[100 * summary[r][col][1] for r in rows], label=name, capsize=2)
    ax.set_xticks(x, rows, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def demo_summary(report: dict[str, Any]) -> str:
    """Short human-readable report of a demo run."""
    from training.evaluate import markdown_report

    grasp = ""
    for label, query in report["grasp_queries"].items():
        grasp += f"\nIs it graspable? {label} ({query['model_dir']}, threshold {query['threshold']:.2f})\n"
        for i, frame in enumerate(query["frames"]):
            rows = [f"| {a['name']}{' (OOD)' if a['ood'] else ''} | {a['score']:.2f} | "
                    f"{'yes' if a['graspable'] else 'no'} | {'yes' if a['truth'] else 'no'} |" for a in frame["answers"]]
            grasp += "\n".join([f"\nframe {i + 1}: {frame['frame']} ({100 * frame['accuracy']:.0f}% right)\n",
                                "| object | score | answer | truth |", "|---|---|---|---|", *rows]) + "\n"
    grasp += f"\nPicture of the answers: {report['grasp_picture']}"
    return (markdown_report(report["result"]) + grasp + f"\n\nData: {report['data']}\nModel dir: "
            f"{report['model_dir']} (checkpoints in {Path(report['model_dir']).parent / 'checkpoints'})\n"
            f"Plots and eval.json: {report['eval_dir']}\n"
            f"Grasp model dir: {report['grasp_dir']} (serve it: vlkd serve --model-dir {report['grasp_dir']})\n"
            f"Finished in {report['seconds']:.0f} s\n")
