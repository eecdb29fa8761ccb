"""SAM 2 mask decoder: output tokens + prompts through a two-way transformer -> masks, IoUs,
object scores. Names match the official ``sam_mask_decoder.*`` state-dict entries.
"""

from __future__ import annotations

import torch
from torch import nn

from sam2_core.model.nn.common import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """Predict ``num_multimask_outputs + 1`` masks from an image embedding and prompts.

    Token order fed to the transformer: ``[obj_score_token?, iou_token, mask_tokens..., prompts]``.
    Mask 0 is the single-mask output, masks 1.. the multimask outputs.

    Args:
        transformer_dim: width ``d``.
        transformer: a :class:`~sam2_core.model.nn.transformer.TwoWayTransformer`.
        num_multimask_outputs: masks returned in multimask mode (3).
        activation: activation of the upscaling path.
        iou_head_depth, iou_head_hidden_dim: IoU-prediction MLP.
        use_high_res_features: add the stride-4/8 backbone features (``conv_s0``/``conv_s1``
            project them to ``d/8`` and ``d/4``) during upscaling.
        iou_prediction_use_sigmoid: sigmoid on the IoU predictions.
        dynamic_multimask_via_stability: in eval single-mask mode, fall back to the best
            multimask output when mask 0 is unstable.
        dynamic_multimask_stability_delta, dynamic_multimask_stability_thresh: its parameters.
        pred_obj_scores: predict an object-presence logit from an extra token.
        pred_obj_scores_mlp: 3-layer MLP (instead of a Linear) for the object score.
        use_multimask_token_for_obj_ptr: in multimask mode return the multimask tokens (for the
            object pointer) instead of token 0.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        d = transformer_dim
        self.transformer_dim = d
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1

        self.iou_token = nn.Embedding(1, d)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, d)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, d)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        # 4x upsampling of the stride-16 embedding: d -> d/4 (stride 8) -> d/8 (stride 4).
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            activation(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(d, d // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(d, d // 4, kernel_size=1, stride=1)
            # their inputs (FPN levels 0/1) are channels_last: same as the neck's lateral convs
            for conv in (self.conv_s0, self.conv_s1):
                conv.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(d, d, d // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            d,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head: nn.Module = (
                MLP(d, d, 1, 3) if pred_obj_scores_mlp else nn.Linear(d, 1)
            )

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh
        #: Opt-in capture for training objectives (IUQ, sam2_core.train.iuq): when a dict,
        #: predict_masks stores "hyper_in" [B, num_mask_tokens, d/8] (per-token queries) and
        #: "upscaled_embedding" [B, d/8, 4H, 4W] of its latest call, with their autograd graph.
        #: None (the default) stores nothing. Not a buffer: never in the state dict.
        self.capture: dict[str, torch.Tensor] | None = None

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks.

        Args:
            image_embeddings: ``[B, d, H, W]`` (``[1, d, H, W]`` with ``repeat_image``).
            image_pe: ``[1, d, H, W]``.
            sparse_prompt_embeddings: ``[B, N, d]``.
            dense_prompt_embeddings: ``[B, d, H, W]``.
            multimask_output: return the 3 multimask outputs instead of mask 0.
            repeat_image: repeat the image embedding once per prompt set.
            high_res_features: ``[feat_s0 [B, d/8, 4H, 4W], feat_s1 [B, d/4, 2H, 2W]]``.

        Returns:
            masks ``[B, M, 4H, 4W]`` logits, iou_pred ``[B, M]``, tokens for the object
            pointer ``[B, M or 1, d]``, object_score_logits ``[B, 1]``.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            # Token 0 is trained for the single-mask output, also when the dynamic fallback
            # picked a multimask output.
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def _output_tokens(self) -> tuple[torch.Tensor, int]:
        """Learned output tokens ``[T, d]`` and the index of the IoU token."""
        parts = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            return torch.cat([self.obj_score_token.weight, *parts], dim=0), 1
        return torch.cat(parts, dim=0), 0

    def _upscale(
        self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """``[B, d, H, W]`` -> ``[B, d/8, 4H, 4W]``, adding the high-res skips if enabled."""
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        if high_res_features is None:
            raise ValueError("use_high_res_features=True needs high_res_features")
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        up = act1(ln1(dc1(src) + feat_s1))
        return act2(dc2(up) + feat_s0)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks ``[B, 4, 4H, 4W]``, IoUs ``[B, 4]``, mask tokens
        ``[B, 4, d]`` and object-score logits ``[B, 1]`` (before any selection)."""
        output_tokens, s = self._output_tokens()
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, b, dim=0)
        else:
            if image_embeddings.shape[0] != b:
                raise ValueError(
                    f"image batch {image_embeddings.shape[0]} != prompt batch {b} "
                    "(use repeat_image=True)"
                )
            src = image_embeddings
        src = src + dense_prompt_embeddings
        if image_pe.shape[0] != 1:
            raise ValueError("image_pe must have batch size 1")
        pos_src = torch.repeat_interleave(image_pe, b, dim=0)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w).contiguous()
        upscaled = self._upscale(src, high_res_features)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # [B, num_mask_tokens, d/8]
        bu, cu, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
        if self.capture is not None:
            self.capture["hyper_in"] = hyper_in
            self.capture["upscaled_embedding"] = upscaled

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            # Without a score head the object is always present (logit +10).
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _get_stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta: ``[B, M, H, W] -> [B, M]``."""
        mask_logits = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        area_i = torch.sum(mask_logits > delta, dim=-1).float()
        area_u = torch.sum(mask_logits > -delta, dim=-1).float()
        return torch.where(area_u > 0, area_i / area_u, 1.0)

    def _dynamic_multimask_via_stability(
        self, all_mask_logits: torch.Tensor, all_iou_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep mask 0 where it is stable, else the multimask output with the best IoU."""
        multimask_logits = all_mask_logits[:, 1:]
        multimask_iou = all_iou_scores[:, 1:]
        best = torch.argmax(multimask_iou, dim=-1)
        batch = torch.arange(multimask_iou.shape[0], device=all_iou_scores.device)
        best_logits = multimask_logits[batch, best].unsqueeze(1)
        best_iou = multimask_iou[batch, best].unsqueeze(1)

        single_logits = all_mask_logits[:, 0:1]
        single_iou = all_iou_scores[:, 0:1]
        is_stable = self._get_stability_scores(single_logits) >= (
            self.dynamic_multimask_stability_thresh
        )
        logits_out = torch.where(
            is_stable[..., None, None].expand_as(single_logits), single_logits, best_logits
        )
        iou_out = torch.where(is_stable.expand_as(single_iou), single_iou, best_iou)
        return logits_out, iou_out
