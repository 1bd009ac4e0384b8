"""Logit distillation on top of Ultralytics' DistillationModel (which imitates neck features).

Loss terms per scale, from a frozen teacher:
- kd_cls: BCE between the student's and the teacher's temperature-softened class sigmoids;
- kd_box: KL divergence between the teacher's and the student's DFL box distributions, weighted by
  the teacher's confidence so background anchors do not dominate;
- kd_feat: Ultralytics' score-weighted L2 imitation of the neck outputs through 1x1 adapters (optional).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from npuyolo.ultra import DistillationModel

KD_TERMS = ("kd_cls", "kd_box", "kd_feat")


class KDDistillationModel(DistillationModel):
    def __init__(self, teacher_model, student_model, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0,
                 temperature: float = 2.0):
        super().__init__(teacher_model=teacher_model, student_model=student_model)
        self.alpha, self.beta, self.gamma, self.temperature = alpha, beta, gamma, temperature

    def kd_terms(self, student_head: dict, teacher_head: dict) -> dict[str, torch.Tensor]:
        """Class and box distillation terms between two raw head outputs (boxes [B, 4*R, A], scores [B, nc, A])."""
        t = self.temperature
        s_cls, t_cls = student_head["scores"], teacher_head["scores"].detach()
        kd_cls = F.binary_cross_entropy_with_logits(s_cls / t, torch.sigmoid(t_cls / t)) * t * t
        b, _, a = s_cls.shape
        reg = student_head["boxes"].shape[1] // 4
        s_box = student_head["boxes"].view(b, 4, reg, a) / t
        t_box = teacher_head["boxes"].detach().view(b, 4, reg, a) / t
        kl = F.kl_div(F.log_softmax(s_box, dim=2), F.log_softmax(t_box, dim=2), log_target=True, reduction="none").sum(2)
        weight = torch.sigmoid(t_cls).max(dim=1).values  # [B, A]: teacher confidence per anchor
        kd_box = (kl.mean(1) * weight).sum() / (weight.sum() + 1e-9) * t * t
        return {"kd_cls": kd_cls, "kd_box": kd_box}

    def loss(self, batch, preds=None):
        device = batch["img"].device
        if not self.training:  # validation while training: detection loss only, KD items reported as 0
            if preds is None:
                preds = self.student_model(batch["img"])
            regular_loss, loss_items = self.student_model.loss(batch, preds)
            for k in KD_TERMS:
                loss_items[k] = torch.zeros((), device=device)
            return torch.cat([regular_loss, torch.zeros(1, device=device)]), loss_items
        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            self.teacher_model(batch["img"])
        preds = self.student_model(batch["img"])
        regular_loss, loss_items = self.student_model.loss(batch, preds)
        n = len(self.feats_idx) - 1
        teacher_head = self.decouple_outputs(self._teacher_feats[n], branch="one2many")
        student_head = self.decouple_outputs(preds, branch="one2many")
        terms = self.kd_terms(student_head, teacher_head)
        feat = torch.zeros((), device=device)
        if self.gamma:
            scores = teacher_head["scores"]
            parts = torch.split(scores, [self._teacher_feats[i].shape[-2] * self._teacher_feats[i].shape[-1] for i in range(n)], dim=-1)
            weights = tuple(p.sigmoid().max(dim=1, keepdim=True).values for p in parts)
            for i in range(n):
                feat = feat + self.loss_sl2(self.projector[i](self.decouple_outputs(self._student_feats[i])),
                                            self.decouple_outputs(self._teacher_feats[i]), feat_idx=i, teacher_scores=weights)
        terms["kd_feat"] = feat
        total = self.alpha * terms["kd_cls"] + self.beta * terms["kd_box"] + self.gamma * terms["kd_feat"]
        for k in KD_TERMS:
            loss_items[k] = terms[k].detach()
        return torch.cat([regular_loss, (total * batch["img"].shape[0]).view(1)]), loss_items
