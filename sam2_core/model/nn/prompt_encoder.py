"""SAM prompt encoder: clicks, boxes and mask prompts -> sparse and dense embeddings.

Parameter names match the official ``sam_prompt_encoder.*`` state-dict entries.
"""

from __future__ import annotations

import torch
from torch import nn

from sam2_core.model.nn.common import LayerNorm2d
from sam2_core.model.nn.position_encoding import PositionEmbeddingRandom

#: Point labels understood by the encoder (official convention).
LABEL_PADDING = -1
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class PromptEncoder(nn.Module):
    """Encode prompts for the mask decoder.

    Args:
        embed_dim: width of every prompt embedding (= the SAM transformer width).
        image_embedding_size: ``(H, W)`` of the stride-16 image embedding.
        input_image_size: ``(H, W)`` of the model input in pixels (point coordinates refer to it).
        mask_in_chans: hidden channels of the mask-downscaling path.
        activation: activation class of the mask-downscaling path.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = (int(input_image_size[0]), int(input_image_size[1]))
        self.image_embedding_size = (int(image_embedding_size[0]), int(image_embedding_size[1]))
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # One learned vector per label 0..3 (negative, positive, box corners), one for padding.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        # Mask prompts come at 4x the embedding resolution and are reduced by two stride-2 convs.
        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def _label_weight(self, label: int) -> torch.Tensor:
        """Learned vector ``[1, C]`` of point label 0..3."""
        emb = self.point_embeddings[label]
        assert isinstance(emb, nn.Embedding)
        return emb.weight

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: ``[1, embed_dim, H, W]``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(
        self, points: torch.Tensor, labels: torch.Tensor, *, pad: bool
    ) -> torch.Tensor:
        """``points [B, N, 2]`` (x, y pixels), ``labels [B, N]`` -> ``[B, N (+1), C]``.

        With ``pad`` a padding point (label -1) is appended; SAM 2 always pads because boxes are
        passed as two labelled points.
        """
        points = points + 0.5  # pixel centres
        if pad:
            pad_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
            pad_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, pad_point.to(points.dtype)], dim=1)
            labels = torch.cat([labels, pad_label.to(labels.dtype)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels.unsqueeze(-1)
        # Padding points carry no position: only the learned "not a point" vector.
        emb = torch.where(
            labels == LABEL_PADDING, self.not_a_point_embed.weight.expand_as(emb), emb
        )
        for label in range(self.num_point_embeddings):
            emb = torch.where(labels == label, emb + self._label_weight(label), emb)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``boxes [B, 4]`` xyxy pixels -> two corner embeddings ``[B, 2, C]``."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner = torch.stack(
            [
                self._label_weight(LABEL_BOX_TOP_LEFT)[0],
                self._label_weight(LABEL_BOX_BOTTOM_RIGHT)[0],
            ]
        )
        return emb + corner

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``masks [B, 1, 4H, 4W]`` logits -> ``[B, C, H, W]``."""
        return self.mask_downscaling(masks)

    @staticmethod
    def _batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return int(points[0].shape[0])
        if boxes is not None:
            return int(boxes.shape[0])
        if masks is not None:
            return int(masks.shape[0])
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Args:
            points: ``(coords [B, N, 2], labels [B, N])`` or None.
            boxes: ``[B, 4]`` xyxy or None.
            masks: ``[B, 1, 4H, 4W]`` mask logits or None.

        Returns:
            sparse ``[B, N', C]`` and dense ``[B, C, H, W]`` embeddings.
        """
        bs = self._batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], 1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
