"""Grasp feasibility training: clutter data, losses, model, prompts, training, evaluation, few-shot, export, model dir."""
