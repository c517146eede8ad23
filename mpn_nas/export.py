"""Export a trained network to a file that runs without mpn_nas: ONNX (any ONNX runtime) or
``torch.export``'s ``.pt2`` (PyTorch only; the successor of TorchScript, whose tracer fails on
PyTorch 2.14)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .arch import Arch
from .complexity import sample_input
from .errors import UserError
from .files import atomic_write

EXPORT_FORMATS = ("onnx", "pt2")


def export_model(model: nn.Module, arch: Arch, fmt: str, path: Path) -> Path:
    """Write ``model`` (eval mode, dynamic batch size) to ``path``; input ``(B, C, H, W)`` named
    ``images``, output ``(B, num_classes)`` named ``logits``."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    model = model.eval().cpu()
    example = sample_input(arch, batch=2)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
        except ImportError:
            raise UserError("--export onnx needs the onnx package: pip install onnx onnxruntime") from None
        atomic_write(path, lambda tmp: torch.onnx.export(
            model, (example,), tmp, dynamo=False, input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}))
    else:
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        atomic_write(path, lambda tmp: torch.export.save(program, tmp))
    return path


def run_exported(path: Path, images: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file, run without mpn_nas (onnxruntime for ``.onnx``)."""
    if Path(path).suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    return torch.export.load(str(path)).module()(images)
