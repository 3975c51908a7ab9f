"""Model files: any supported PyTorch video classifier as one network contract.

Accepted formats, none of which unpickles arbitrary objects:

- ``torchscript``: ``torch.jit.save``. Scripted modules take no hooks, so ``forward`` returns
  ``(logits, embedding)``, or the card's ``embedding_method`` names a method of the module
  mapping the input to the embedding.
- ``export``: a ``torch.export`` program (``.pt2``, batch dimension dynamic). The card's
  ``embedding_layer`` names a module; the last graph node inside it (each node carries
  ``nn_module_stack``) becomes an extra output of the graph.
- ``state_dict``: weights of vidmon's R(2+1)D, in its own key layout or in torchvision's
  ``r2plus1d_18`` layout, loaded with ``torch.load(weights_only=True)``; the architecture is
  read from the tensors' shapes. ``embedding_layer`` may name a module (a forward hook).

Whatever the format, :func:`load_network` returns a module whose ``forward`` maps the card's
normalised input (N, 3, T, H, W) to ``(logits, embedding)``; an embedding with more than two
dimensions is averaged over everything after the channel axis. :func:`save_network` writes
it back in its own format, so a fine-tuned model stays what it was. Torch only.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn

from monitor.card import ModelCard
from training.model import (
    ModelConfig,
    R2Plus1D,
    config_from_state_dict,
    from_torchvision,
    is_torchvision_layout,
    module_name,
    prepare_for_device,
)

FORMATS = ("torchscript", "export", "state_dict")
MODEL_JSON = "model.json"
CARD_JSON = "card.json"
_FILES = {"torchscript": "model.ts", "export": "model.pt2", "state_dict": "state_dict.pt"}


class ModelFileError(ValueError):
    """A model file that cannot be loaded, or that does not fit its card."""


@dataclass
class LoadedNetwork:
    """A model in the vidmon contract, with its format."""

    network: nn.Module
    format: str

    @property
    def architecture(self) -> ModelConfig | None:
        """vidmon's R(2+1)D configuration, for a state_dict model."""
        inner = getattr(self.network, "module", None)
        return inner.config if isinstance(inner, R2Plus1D) else None


def move_network(network: nn.Module, device: torch.device) -> nn.Module:
    """``network`` on ``device``; an R(2+1)D inside also takes the layout cuDNN prefers."""
    network = network.to(device)
    inner = getattr(network, "module", None)
    if isinstance(inner, R2Plus1D):
        prepare_for_device(inner, device)
    return network


def _vector(embedding: torch.Tensor) -> torch.Tensor:
    embedding = embedding.float()
    if embedding.ndim > 2:
        embedding = embedding.flatten(2).mean(dim=-1)
    return embedding


def _pair(output: object) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(output, (tuple, list)) and len(output) == 2:
        return output[0], _vector(output[1])
    raise ModelFileError(
        "the model returns logits only; name where the embedding comes from in the card "
        "(embedding_layer, or embedding_method for TorchScript)")


class PairOutput(nn.Module):
    """A model whose forward already returns ``(logits, embedding)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _pair(self.module(x))


class HookedEmbedding(nn.Module):
    """Logits from forward, the embedding from a forward hook on a named submodule."""

    def __init__(self, module: nn.Module, layer: str) -> None:
        super().__init__()
        self.module = module
        try:
            target = module.get_submodule(layer)
        except AttributeError:
            raise ModelFileError(f"the model has no module named {layer!r} "
                                 "(card field embedding_layer)") from None
        self._captured: list[torch.Tensor] = []
        target.register_forward_hook(lambda _m, _i, out: self._captured.append(out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._captured.clear()
        output = self.module(x)
        logits = output[0] if isinstance(output, (tuple, list)) else output
        return logits, _vector(self._captured[-1])


class ScriptedMethod(nn.Module):
    """A TorchScript module: logits from forward, the embedding from a named method."""

    def __init__(self, module: torch.jit.ScriptModule, method: str) -> None:
        super().__init__()
        if not hasattr(module, method):
            raise ModelFileError(f"the TorchScript module has no method {method!r} "
                                 "(card field embedding_method); export it with "
                                 "@torch.jit.export")
        self.module = module
        self.method = method

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.module(x)
        logits = output[0] if isinstance(output, (tuple, list)) else output
        return logits, _vector(getattr(self.module, self.method)(x))


def batch_range(program: torch.export.ExportedProgram) -> tuple[int, int]:
    """The batch sizes an exported program accepts: its first input's dimension 0."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    size = node.meta["val"].shape[0]
    if isinstance(size, torch.SymInt):
        bounds = program.range_constraints[size.node.expr]
        upper = bounds.upper if bounds.upper.is_finite else 1 << 16
        return int(bounds.lower), int(upper)
    return int(size), int(size)


class ExportedWithEmbedding(nn.Module):
    """An exported program's module, with the embedding layer's output added to the graph.
    Batches outside the program's batch range are padded (repeating the last clip) or cut
    into chunks, so any batch the service forms fits."""

    def __init__(self, program: torch.export.ExportedProgram, layer: str | None) -> None:
        super().__init__()
        self.module = program.module()
        self.graph_module = self.module if layer is None else _with_output(self.module, layer)
        self.extra = layer is not None
        self.batch_range = batch_range(program)

    def train(self, mode: bool = True) -> "ExportedWithEmbedding":
        # An exported graph has its train/eval behaviour baked in (batch norm uses its running
        # statistics, dropout is off); gradients still flow, so it fine-tunes as it is.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.batch_range
        if len(x) > high:
            parts = [self.forward(chunk) for chunk in x.split(high)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        n = len(x)
        if n < low:
            x = torch.cat([x, x[-1:].expand(low - n, *x.shape[1:])])
        output = self.graph_module(x)
        if not self.extra:
            logits, embedding = _pair(output)
        else:
            *head, embedding = output
            logits, embedding = head[0], _vector(embedding)
        return logits[:n], embedding[:n]


def _module_path(entry: object) -> str:
    path = entry[0] if isinstance(entry, tuple) else str(entry)
    return path.replace("L['self'].", "").replace("L__self___", "")


def _with_output(module: fx.GraphModule, layer: str) -> fx.GraphModule:
    """A copy of the graph whose outputs are the original ones plus ``layer``'s output."""
    last = None
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if any(_module_path(v) == layer for v in stack.values()):
            last = node
    if last is None:
        raise ModelFileError(f"the exported program has no module named {layer!r} (card field "
                             "embedding_layer); names are the original module's attribute "
                             "paths, e.g. 'backbone.pool'")
    graph, env = fx.Graph(), {}
    for node in module.graph.nodes:
        if node.op == "output":
            outputs = node.args[0]
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            if len(outputs) != 1:
                raise ModelFileError("with embedding_layer the exported program must return "
                                     f"logits alone, not {len(outputs)} outputs")
            graph.output((env[outputs[0].name], env[last.name]))
        else:
            env[node.name] = graph.node_copy(node, lambda n: env[n.name])
    return fx.GraphModule(module, graph)  # shares the parameters, so fine-tuning reaches both


def detect_format(path: Path) -> str:
    """``export`` for .pt2, ``torchscript`` for a TorchScript archive, else ``state_dict``."""
    if path.suffix == ".pt2":
        return "export"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "state_dict"


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ModelFileError(f"{path.name} is not a TorchScript archive, a .pt2 program or a "
                             f"weights-only state_dict: {str(exc).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelFileError(f"{path.name} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _r2plus1d(state: dict[str, torch.Tensor], architecture: ModelConfig | None) -> R2Plus1D:
    try:
        if is_torchvision_layout(state):
            state = from_torchvision(state)
        config = architecture or config_from_state_dict(state)
        network = R2Plus1D(config)
        network.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"the state_dict does not fit vidmon's R(2+1)D: "
                             f"{str(exc).splitlines()[0]}") from None
    return network


def _wrap(module: nn.Module, card: ModelCard, fmt: str) -> nn.Module:
    if card.embedding_method:
        if fmt != "torchscript":
            raise ModelFileError("embedding_method is for TorchScript modules; for a "
                                 f"{fmt} model name a module with embedding_layer")
        return ScriptedMethod(module, card.embedding_method)  # type: ignore[arg-type]
    if card.embedding_layer:
        if fmt == "torchscript":
            raise ModelFileError(
                "TorchScript modules accept no forward hooks, so embedding_layer cannot be "
                "used: return (logits, embedding) from forward, or name a method with "
                "embedding_method")
        layer = card.embedding_layer
        return HookedEmbedding(module, module_name(layer) if isinstance(module, R2Plus1D)
                               else layer)
    return PairOutput(module)


def load_network(path: str | Path, card: ModelCard, fmt: str | None = None,
                 architecture: ModelConfig | None = None) -> LoadedNetwork:
    """Load a model file as a network in the vidmon contract (eval mode, on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}")
    fmt = fmt or detect_format(path)
    if fmt == "torchscript":
        module: nn.Module = torch.jit.load(str(path), map_location="cpu")
        network = _wrap(module, card, fmt)
    elif fmt == "export":
        if card.embedding_method:
            raise ModelFileError("an exported program has no methods; name the embedding's "
                                 "module with embedding_layer")
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelFileError(f"{path.name} is not a torch.export program: {exc}") from None
        network = ExportedWithEmbedding(program, card.embedding_layer)
    elif fmt == "state_dict":
        network = _wrap(_r2plus1d(_state_dict(path), architecture), card, fmt)
    else:
        raise ModelFileError(f"unknown model format {fmt!r}; one of {FORMATS}")
    network.eval()
    return LoadedNetwork(network, fmt)


@torch.no_grad()
def check_against_card(loaded: LoadedNetwork, card: ModelCard) -> int:
    """Run a batch of two blank clips; the logits must have one column per card label.
    Returns the embedding's size."""
    x = torch.zeros(2, 3, card.frames, card.height, card.width)
    try:
        logits, embedding = loaded.network(x)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's model raises
        hint = (" (export the program with a dynamic batch dimension)"
                if loaded.format == "export" else "")
        raise ModelFileError(f"the model failed on a (2, 3, {card.frames}, {card.height}, "
                             f"{card.width}) input from its card{hint}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
    if logits.ndim != 2 or logits.shape != (2, len(card.labels)):
        raise ModelFileError(f"the model returns logits of shape {tuple(logits.shape)} for 2 "
                             f"clips; the card lists {len(card.labels)} labels")
    if embedding.ndim != 2 or embedding.shape[0] != 2:
        raise ModelFileError(f"the embedding has shape {tuple(embedding.shape)}; expected "
                             "one vector per clip")
    return int(embedding.shape[1])


def _inner(loaded: LoadedNetwork) -> nn.Module:
    return loaded.network.module  # type: ignore[return-value]


def save_network(loaded: LoadedNetwork, card: ModelCard, folder: str | Path) -> Path:
    """Write the model in its own format with its card; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _FILES[loaded.format]
    meta: dict[str, object] = {"format": loaded.format, "file": target.name}
    if loaded.format == "torchscript":
        torch.jit.save(_inner(loaded), str(target))
    elif loaded.format == "export":
        low, high = loaded.network.batch_range  # type: ignore[union-attr]
        batch = torch.export.Dim("batch", min=low, max=high)
        example = torch.zeros(max(low, min(2, high)), 3, card.frames, card.height, card.width)
        program = torch.export.export(_inner(loaded), (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(target))
    else:
        module = _inner(loaded)
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, target)
        meta["architecture"] = module.config.to_dict()  # type: ignore[union-attr]
    (folder / MODEL_JSON).write_text(json.dumps(meta, indent=2))
    (folder / CARD_JSON).write_text(json.dumps(card.to_dict(), indent=2))
    return folder


def load_model_folder(folder: str | Path) -> tuple[ModelCard, LoadedNetwork]:
    """Read a folder written by :func:`save_network`."""
    folder = Path(folder)
    meta = json.loads((folder / MODEL_JSON).read_text())
    card = ModelCard.from_dict(json.loads((folder / CARD_JSON).read_text()))
    architecture = (ModelConfig.from_dict(meta["architecture"])
                    if meta.get("architecture") else None)
    return card, load_network(folder / meta["file"], card, meta["format"], architecture)


def vidmon_network(config: ModelConfig) -> LoadedNetwork:
    """A fresh vidmon R(2+1)D in the contract (for training from scratch)."""
    return LoadedNetwork(PairOutput(R2Plus1D(config)), "state_dict")


def copy_network(loaded: LoadedNetwork, card: ModelCard) -> LoadedNetwork:
    """An independent copy (saved and reloaded in its own format): the champion stays as it
    was for the gate while its copy is fine-tuned."""
    with tempfile.TemporaryDirectory() as tmp:
        save_network(loaded, card, tmp)
        return load_model_folder(tmp)[1]
