"""The standalone model file: state dict plus the architecture document, loaded without pickle code."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from .arch import Arch, ArchError
from .errors import UserError
from .files import atomic_write
from .models import build_model

CHECKPOINT_FORMAT = "mpn-nas/model"
CHECKPOINT_VERSION = 1


def save_model(path: Union[str, Path], arch: Arch, model: nn.Module) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": arch.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_model(path: Union[str, Path]) -> tuple[Arch, nn.Module]:
    """Rebuild the saved network; ``weights_only=True`` so nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or corrupt files
        raise UserError(f"{path} is not an mpn-nas model file ({type(err).__name__}); "
                        "pass the model.pt written by 'mpn-nas retrain'") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an mpn-nas model file; pass the model.pt written by 'mpn-nas retrain'")
    try:
        arch = Arch.from_dict(payload["arch"])
    except ArchError as err:
        raise UserError(f"{path} holds an invalid architecture: {err}") from None
    model = build_model(arch)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise UserError(f"{path}: weights do not match its architecture ({str(err).splitlines()[0]})") from None
    return arch, model.eval()
