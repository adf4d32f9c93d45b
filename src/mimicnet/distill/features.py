"""Mimic learning on feature vectors (SPEC S5, Ba & Caruana's TIMIT recipe): the teacher labels the
transfer rows directly (no transfer-set files: the rows are few and fixed), then `train.fit` trains on them."""
from __future__ import annotations

import torch

from ..core.errors import ConfigError
from ..data.features import FeatureData
from ..models.inference import predict_logits, preprocess, resolve_device
from ..train.batches import epoch_generator
from ..train.config import TrainConfig
from ..train.loop import fit
from ..train.losses import make_loss
from ..train.run import RunInfo
from .ensemble import teacher_content_id
from .student import Teachers


def mimic_features(cfg: TrainConfig, teacher, data: FeatureData, run_dir, log=print, index=None,
                   info: RunInfo = RunInfo(), teachers: Teachers | None = None) -> dict:
    """Train a student on ``teacher``'s logits over x_transfer (or x_train when the file has none) with
    ``cfg.optim.loss`` (l2-logits, l2-probs, kl, softmax-mse), through ``train.fit``. Returns fit's results, which
    include the test-set mimic metrics (mse, agreement with the teacher) and the teacher's accuracy."""
    if not cfg.mimics:
        raise ConfigError("mimic_features trains on a teacher's outputs: choose a mimic loss, not 'ce'")
    if cfg.data.augment:
        raise ConfigError("image augmentation does not apply to feature data: set augment=False")
    device = resolve_device(cfg.execution.device)
    x = data.x_transfer if data.x_transfer is not None else data.train.x
    y = torch.full((len(x),), -1, dtype=torch.long) if data.x_transfer is not None else data.train.y
    if cfg.distill.hard_weight > 0 and data.x_transfer is not None:
        raise ConfigError("hard_weight needs labels, but x_transfer is unlabeled")
    t = (teachers or Teachers()).teacher(teacher, device, data=data)
    z = predict_logits(t.model, x, 1.0, device)  # ensemble members apply their own input scales
    xd, zd, yd = x.to(device), z.to(device), y.to(device)
    norm = None
    if cfg.distill.normalize_logits:  # Ba & Caruana: regress each logit standardised over the transfer rows
        norm = (zd.mean(0), zd.std(0, unbiased=False).clamp_min(1e-6))
        zd = (zd - norm[0]) / norm[1]

    def batches(epoch: int):
        perm = torch.randperm(len(xd), generator=epoch_generator(cfg.seed, epoch)).to(device)
        for i in range(0, len(xd), cfg.optim.batch_size):
            idx = perm[i:i + cfg.optim.batch_size]
            yield preprocess(xd[idx], cfg.data.input_scale), (zd[idx], yd[idx])
    batches.steps_per_epoch = -(-len(xd) // cfg.optim.batch_size)

    t.meta = {"teacher": str(teacher), "teacher_rows": len(x),
              "teacher_source": "x_transfer" if data.x_transfer is not None else "x_train"}
    # fit() scores the student against this teacher on the test set (mimic error, agreement) and records
    # it in results.json and the index row, as for image students
    return fit(cfg, run_dir, data, batches=batches, loss_fn=make_loss(cfg), teacher=t, info=info, index=index,
               log=log, logit_norm=norm, sources={"teacher": teacher_content_id(teacher)})
