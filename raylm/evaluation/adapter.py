"""Label adapter: a small learned map from a model's 68 points to a target dataset's labelling convention.

FaceSynthetics labels the jaw "x-ray": the 3D jaw line projected through the face,
hidden side included. 300W annotators put the jaw on the visible silhouette, and
place a few other points (brows, nose) slightly differently too. A model trained on
synthetic faces reproduces the synthetic convention, so part of its error on real
faces is a consistent disagreement about where a point belongs, not a failure to
find the face. The FaceSynthetics authors close that gap with a label translation
learned on a few real labelled faces; this is one.

The model, and why it cannot overfit 50 faces:

- Each predicted shape is expressed in a face-normalised frame: the similarity
  (position, size, in-plane rotation) that best maps it onto a mean shape (the
  `template`, a Procrustes mean of the fitting faces' predictions, centred, RMS
  radius 1). The frame comes from the prediction alone, so the adapter needs no
  ground truth to be applied, and it is the same map in the network's normalised
  crop coordinates and in image pixels (they differ by a similarity).
- In that frame the correction is a per-point offset plus a linear term in the
  first `modes` principal components of the normalised predictions (pose and
  expression: yaw moves the far-side jaw onto the silhouette, an open mouth moves
  the lips): `target ~ x + offset + sum_k z_k slope_k`, with z_k the k-th component's
  score divided by its spread on the fitting faces.
- Parameters: 136 offsets and 136 slopes per mode (680 at the default 4 modes),
  against 136 numbers per fitting face (6,800 for 50). Each offset is the mean of
  50 residuals; each slope a one-predictor regression over 50 faces (the scores
  are uncorrelated), shrunk by ridge to N / (N + ridge) of its least-squares
  value, so `ridge` counts pseudo-faces that pull the slopes towards "no pose
  dependence". A general linear map of the 136 coordinates (18,632 parameters)
  would reproduce 50 faces exactly and transfer to nothing.
- Limits: the correction is linear in the modes. The silhouette shift grows with
  |yaw| on the turned-away side only; the offset captures its mean and the yaw slope
  its antisymmetric part, not the kink at frontal. `modes=0` is offsets alone.

The adapter also absorbs the model's own systematic bias on the target faces, so it
belongs to one checkpoint: it is saved beside it (`adapter.json`) with the SHA-256
of its `checkpoint.pt` and the ids of the faces it was fitted on, and loading it for
another checkpoint is refused. `python -m raylm.evaluate --adapter` refuses to score
faces it was fitted on.

Fitting it on a dataset is the `python -m raylm.adapter fit` command (raylm.adapter);
`load_trained(..., adapter=FILE)` (raylm.evaluation.trained) wraps a model in one, and
`python -m raylm.export --adapter` folds it into the exported graph (both through `LabelMap`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from raylm.errors import RaylmError
from raylm.train.checkpoint import checkpoint_file

ADAPTER_FILE = "adapter.json"
FORMAT = "raylm-adapter/1"
NO_SPREAD = 1e-9  # a mode's spread at or below this, in units of the face's RMS radius, is rounding noise
ARRAYS = ("template", "centre", "modes", "spreads", "offset", "slopes")  # the fitted map, in the face frame


class AdapterError(RaylmError):
    """An adapter that cannot be fitted, found or used as asked; the message says what to do."""


@dataclass(frozen=True)
class Adapter:
    """A fitted label map (see the module docstring); arrays are float64 in the face-normalised frame.

    `apply` takes points in any units related to the frame by a similarity (pixels,
    normalised crop coordinates). The fields after `ridge` say what it was fitted on.
    """

    template: np.ndarray  # (68, 2) the mean shape the frame aligns to: centred, RMS radius 1
    centre: np.ndarray  # (68, 2) mean of the fitting faces' normalised predictions
    modes: np.ndarray  # (k, 68, 2) unit principal directions of those predictions
    spreads: np.ndarray  # (k,) standard deviation of the fitting faces' scores on each mode
    offset: np.ndarray  # (68, 2) the correction of a face at `centre`
    slopes: np.ndarray  # (k, 68, 2) the correction per standard deviation along each mode
    ridge: float
    spec: str = ""  # the dataset spec the fitting faces came from
    seed: int = 0  # the seed that drew them
    ids: tuple[str, ...] = ()  # their source ids
    checkpoint: str = ""  # SHA-256 of the checkpoint.pt it was fitted for
    report: dict = field(default_factory=dict)  # NME before/after on the fitting and held-out faces

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Shapes (..., points, 2) in the target convention, float64, in the units they came in.

        A degenerate shape (all points equal) or a NaN one comes back NaN, a failure to the metrics.
        Runs `LabelMap`, the one implementation of the map, in float64 on the CPU.
        """
        points = np.asarray(points, np.float64)
        shapes = torch.from_numpy(points.reshape(-1, len(self.offset), 2))  # as many points as it was fitted on
        with torch.no_grad():
            return LabelMap(self)(shapes).numpy().reshape(points.shape)

    def overlap(self, ids: tuple[str, ...] | list[str]) -> int:
        """How many of `ids` are faces this adapter was fitted on (same source ids)."""
        fitted = set(self.ids)
        return sum(source_id in fitted for source_id in ids)

    def save(self, path: str | Path) -> Path:
        """Write JSON: one top-level field a line, provenance first, the fitting face ids last."""
        record = {"format": FORMAT, "spec": self.spec, "seed": self.seed, "checkpoint": self.checkpoint}
        record.update(ridge=self.ridge, report=self.report)
        record.update({name: getattr(self, name).tolist() for name in ARRAYS}, ids=list(self.ids))
        lines = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in record.items())
        Path(path).write_text("{\n" + lines + "\n}\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        record = json.loads(Path(path).read_text())
        if record.get("format") != FORMAT:
            raise AdapterError(f"{path} is not a raylm adapter ({FORMAT}); fit one with `python -m raylm.adapter fit`")
        k = len(record["spreads"])
        return cls(
            template=np.array(record["template"], np.float64),
            centre=np.array(record["centre"], np.float64),
            modes=np.array(record["modes"], np.float64).reshape(k, len(record["offset"]), 2),
            spreads=np.array(record["spreads"], np.float64),
            offset=np.array(record["offset"], np.float64),
            slopes=np.array(record["slopes"], np.float64).reshape(k, len(record["offset"]), 2),
            ridge=float(record["ridge"]),
            spec=record["spec"],
            seed=int(record["seed"]),
            ids=tuple(record["ids"]),
            checkpoint=record["checkpoint"],
            report=record["report"],
        )


def _complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


def _real(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


def _unit(z: np.ndarray) -> np.ndarray:
    """A complex shape centred on its centroid and scaled to RMS radius 1."""
    centred = z - z.mean()
    return centred / np.sqrt(np.mean(np.abs(centred) ** 2))


def face_frame(shapes: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per shape, the similarity p -> a (p - c) that maps it onto the centred `template` by least squares.

    Points are complex numbers x + iy, so `a` (N,) is scale and rotation, `c` (N,) the
    shape's centroid. No reflection: a mirrored face is not the same face.
    """
    z = _complex(np.asarray(shapes, np.float64))
    centre = z.mean(axis=-1)
    centred = z - centre[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (np.conj(centred) * _complex(template)).sum(axis=-1) / (np.abs(centred) ** 2).sum(axis=-1)
    return a, centre


def to_frame(points: np.ndarray, a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return _real(a[:, None] * (_complex(points) - centre[:, None]))


def procrustes_mean(shapes: np.ndarray, iterations: int = 10) -> np.ndarray:
    """The mean shape (68, 2) of `shapes` up to similarity: centred, RMS radius 1, oriented like the first."""
    z = _complex(np.asarray(shapes, np.float64))
    template = _real(_unit(z[0]))
    for _ in range(iterations):
        a, centre = face_frame(shapes, template)
        template = _real(_unit((a[:, None] * (z - centre[:, None])).mean(axis=0)))
    return template


def fit_adapter(
    predicted: np.ndarray, target: np.ndarray, modes: int = 4, ridge: float = 10.0, template: np.ndarray | None = None
) -> Adapter:
    """The adapter mapping `predicted` (N, points, 2) towards `target` (same units), fitted in the face frame.

    `template` fixes the frame (it is centred and scaled to RMS radius 1); by default
    it is the predictions' Procrustes mean. Both the prediction and its target are
    moved by the prediction's similarity, so the residual is what the labels disagree
    on, in units of the face's RMS radius.
    """
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    n = len(predicted)
    if predicted.shape != target.shape or predicted.ndim != 3 or predicted.shape[2] != 2:
        raise AdapterError(f"need (N, points, 2) predictions and targets; got {predicted.shape} and {target.shape}")
    points = predicted.shape[1]
    if not 0 <= modes < n or ridge < 0:
        raise AdapterError(f"need 0 <= modes < faces ({n}) and ridge >= 0; got modes {modes}, ridge {ridge}")
    template = procrustes_mean(predicted) if template is None else _real(_unit(_complex(np.asarray(template))))
    a, centre = face_frame(predicted, template)
    x = to_frame(predicted, a, centre).reshape(n, -1)
    residual = to_frame(target, a, centre).reshape(n, -1) - x
    mean = x.mean(axis=0)
    basis = np.linalg.svd(x - mean, full_matrices=False)[2][:modes]
    scores = (x - mean) @ basis.T
    spreads = scores.std(axis=0)
    # A mode with no spread (identical faces) scores rounding noise (~1e-16 of the face's RMS radius, 1 in this
    # frame): its scores count as 0, so it gets slope 0, and its scale stays 1 (dividing by that noise would
    # blow up any other face's score).
    spread = spreads > NO_SPREAD
    spreads = np.where(spread, spreads, 1.0)
    z = np.where(spread, scores / spreads, 0.0)  # zero mean over the fitting faces: the offset is the mean residual
    offset = residual.mean(axis=0)
    # lstsq rather than solve: with ridge 0, a mode without spread has a zero column and gets slope 0.
    slopes = np.linalg.lstsq(z.T @ z + ridge * np.eye(modes), z.T @ (residual - offset), rcond=None)[0]
    return Adapter(
        template=template,
        centre=mean.reshape(points, 2),
        modes=basis.reshape(modes, points, 2),
        spreads=spreads,
        offset=offset.reshape(points, 2),
        slopes=slopes.reshape(modes, points, 2),
        ridge=float(ridge),
    )


class LabelMap(nn.Module):
    """An adapter's map as a torch module: (B, points, 2) shapes -> (B, points, 2) in the target convention.

    The one implementation of applying an adapter: `Adapter.apply` runs it on numpy shapes,
    AdaptedModel after the network, and raylm.export folds it into the exported graph. The
    complex arithmetic of `face_frame` and `to_frame`, and of their inverse, is written on real pairs
    (exporters have no complex tensors). It computes in float64 on its buffers' device (the CPU
    unless moved; onnxruntime runs it in float64 too) and returns its input's dtype and device.
    """

    def __init__(self, adapter: Adapter):
        super().__init__()
        k, width = len(adapter.modes), adapter.offset.size  # width: 2 x the number of points
        arrays = {
            "template": adapter.template,
            "centre": adapter.centre.reshape(width),
            "modes": adapter.modes.reshape(k, width),  # explicit width: with no modes, -1 cannot be inferred
            "spreads": adapter.spreads,
            "offset": adapter.offset.reshape(width),
            "slopes": adapter.slopes.reshape(k, width),
        }
        for name, array in arrays.items():
            self.register_buffer(name, torch.as_tensor(np.asarray(array), dtype=torch.float64))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        shapes = points.to(self.template)
        centre = shapes.mean(dim=1, keepdim=True)
        x, y = (shapes - centre).unbind(-1)
        tx, ty = self.template.unbind(-1)
        # a = sum(conj(p - c) t) / sum(|p - c|^2): the similarity onto the template (face_frame).
        norm = (x * x + y * y).sum(dim=1, keepdim=True)
        a_re = (x * tx + y * ty).sum(dim=1, keepdim=True) / norm
        a_im = (x * ty - y * tx).sum(dim=1, keepdim=True) / norm
        normalised = torch.stack([a_re * x - a_im * y, a_re * y + a_im * x], dim=-1).reshape(shapes.shape[0], -1)
        scores = (normalised - self.centre) @ self.modes.T / self.spreads
        u, v = (normalised + self.offset + scores @ self.slopes).reshape(shapes.shape).unbind(-1)
        size = a_re * a_re + a_im * a_im  # |a|^2: q / a = q conj(a) / |a|^2, back from the frame
        back = torch.stack([(u * a_re + v * a_im) / size, (v * a_re - u * a_im) / size], dim=-1)
        return (back + centre).to(points)


class AdaptedModel(nn.Module):
    """A landmark model whose (B, 2 x points) output goes through an adapter: for evaluation and inference.

    The map (`label_map`) stays float64 on the CPU where it was built, whatever device the
    network runs on (autocast leaves float64 alone); the output is float32 on the network's device.
    """

    def __init__(self, model: nn.Module, adapter: Adapter):
        super().__init__()
        self.model = model
        self.adapter = adapter
        self.label_map = LabelMap(adapter)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images).float()
        return self.label_map(output.reshape(output.shape[0], -1, 2)).reshape(output.shape)


def adapter_path(checkpoint_path: str | Path, file: str | Path | None = None) -> Path:
    """`file`, or by default `adapter.json` in the checkpoint's directory."""
    return Path(file) if file else checkpoint_file(checkpoint_path).parent / ADAPTER_FILE


def checkpoint_digest(checkpoint_path: str | Path) -> str:
    with checkpoint_file(checkpoint_path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_adapter(file: str | Path, checkpoint_path: str | Path) -> Adapter:
    """The adapter in `file`, refused unless it was fitted for this checkpoint (same checkpoint.pt bytes)."""
    if not Path(file).is_file():
        raise AdapterError(
            f"{file}: no adapter here; fit one with `python -m raylm.adapter fit {checkpoint_path} --data SPEC`"
        )
    adapter = Adapter.load(file)
    if adapter.checkpoint != checkpoint_digest(checkpoint_path):
        raise AdapterError(
            f"{file} was fitted for another checkpoint.pt than {checkpoint_file(checkpoint_path)} (it changed since, "
            "or the adapter was copied); fit it again for this checkpoint"
        )
    return adapter
