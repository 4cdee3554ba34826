"""Orbax checkpoints of a training run, each one standing alone.

    OUT/checkpoints/<step>/
        params/      the weights (Orbax PyTree), loadable without the optimizer state
        opt_state/   AdamW moments and counters (Orbax PyTree)
        trainer/     JSON: step, rows of the data stream consumed, seed, config
        model/       config.json, tokenizer.json, tokenizer_config.json (chat template)

Saves are asynchronous and go through Orbax's `CheckpointManager`, which keeps
the newest `keep` and only ever shows a step directory once it is complete (it
writes to a temporary name and renames). A step that fails to restore (a
corrupt file, a deleted item) is set aside as `<step>.corrupt` with a one-line
warning, and the previous step is tried.

    ckpt = RunCheckpoints(out / "checkpoints", keep=3)
    ckpt.save(step, state, trainer_record, model_files)
    restored = ckpt.restore_latest(abstract_state)   # None when there is none
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from flax import nnx

from ditto_jax.lora import LORA_FILE
from ditto_jax.model import CausalLM, abstract_model
from ditto_jax.train.run_dir import CONFIG_FILE, MODEL, OPT_STATE, PARAMS, TRAINER, complete_steps
from ditto_jax.weights.hf import read_hf_config
from ditto_native import DittoError


# ---- the `model` item: HF config.json + tokenizer files, written by the primary process ------


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """What a checkpoint needs beside its weights to load as a model."""

    hf_config: dict[str, Any]
    bundle: Any  # TokenizerBundle
    lora: dict[str, Any] | None = None  # LoRA runs: lora.json, the spec and the base reference

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.hf_config, indent=2) + "\n", encoding="utf-8")
        self.bundle.save(folder)
        if self.lora is not None:
            (folder / LORA_FILE).write_text(json.dumps(self.lora, indent=2) + "\n", encoding="utf-8")


class ModelFilesHandler(ocp.CheckpointHandler):
    """Writes `ModelFiles` as plain files into the item's directory (synchronously: they are small)."""

    def save(self, directory: epath.Path, *args, **kwargs) -> None:
        save_args = kwargs.get("args", args[0] if args else None)
        if jax.process_index() == 0:
            save_args.files.write(Path(str(directory)))

    def restore(self, directory: epath.Path, *args, **kwargs) -> Path:
        return Path(str(directory))

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(ModelFilesHandler, for_save=True)
@dataclasses.dataclass
class ModelFilesSave(ocp.args.CheckpointArgs):
    files: ModelFiles


@ocp.args.register_with_handler(ModelFilesHandler, for_restore=True)
@dataclasses.dataclass
class ModelFilesRestore(ocp.args.CheckpointArgs):
    pass


# ---- the run's checkpoints ---------------------------------------------------------------------


class RunCheckpoints:
    def __init__(self, directory: Path, *, keep: int):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self._manager: ocp.CheckpointManager | None = None

    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=True, create=True)
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def steps(self) -> list[int]:
        return complete_steps(self.directory)

    def save(self, step: int, state: dict, trainer: dict, files: ModelFiles) -> None:
        """Start an asynchronous save of `state` ({"params", "opt_state", ...}) at `step`."""
        args = ocp.args.Composite(**{
            PARAMS: ocp.args.StandardSave(state["params"]),
            OPT_STATE: ocp.args.StandardSave(state["opt_state"]),
            TRAINER: ocp.args.JsonSave(trainer),
            MODEL: ModelFilesSave(files),
        })
        self.manager.save(step, args=args, force=True)

    def wait(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def restore_latest(self, abstract_state: dict) -> tuple[int, dict, dict] | None:
        """(step, state, trainer record) of the newest readable checkpoint, or None.

        `abstract_state` gives shapes, dtypes and the shardings to restore onto,
        which may belong to another mesh than the one that saved.
        """
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**{
                    PARAMS: ocp.args.StandardRestore(abstract_state["params"]),
                    OPT_STATE: ocp.args.StandardRestore(abstract_state["opt_state"]),
                    TRAINER: ocp.args.JsonRestore(),
                }))
            except Exception as exc:  # Orbax/TensorStore raise many types for unreadable data
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                older = [s for s in self.steps() if s < step]
                then = f"trying checkpoint {older[-1]}" if older else "starting from the model"
                print(f"warning: checkpoint {step} is unreadable ({reason}); set aside as {step}.corrupt, {then}", file=sys.stderr, flush=True)
                self._set_aside(step)
                continue
            state = {PARAMS: restored[PARAMS], OPT_STATE: restored[OPT_STATE]}
            return step, state, dict(restored[TRAINER])
        return None

    def _set_aside(self, step: int) -> None:
        self.close()
        multihost_utils.sync_global_devices(f"ditto-set-aside-{step}")
        if jax.process_index() == 0:
            src = self.directory / str(step)
            dst = self.directory / f"{step}.corrupt"
            n = 1
            while dst.exists():
                n += 1
                dst = self.directory / f"{step}.corrupt{n}"
            src.rename(dst)
        multihost_utils.sync_global_devices(f"ditto-set-aside-{step}-done")


def load_checkpoint_model(step_dir: Path, *, dtype=jnp.float32) -> CausalLM:
    """The model of one checkpoint step: its config.json and weights, cast to `dtype`."""
    step_dir = Path(step_dir)
    _, cfg = read_hf_config(step_dir / MODEL)
    graphdef, abstract = nnx.split(abstract_model(cfg, dtype=dtype, param_dtype=dtype))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), nnx.to_pure_dict(abstract))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(step_dir.absolute() / PARAMS, target)
    except Exception as exc:  # Orbax/TensorStore raise many types for unreadable data
        raise DittoError(f"{step_dir}: unreadable checkpoint weights ({' '.join(str(exc).split())[:200]})") from None
    return nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(dtype), params))
