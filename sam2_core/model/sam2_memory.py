"""Memory conditioning of SAM 2.1: which conditioning and recent frames form the memory bank
of a frame, their memories and object pointers as tokens, and the memory attention that fuses
them with the current frame's features.

Shapes as in :mod:`sam2_core.model.sam2_base`.
"""

from __future__ import annotations

import torch

from sam2_core.model.nn.position_encoding import get_1d_sine_pe
from sam2_core.model.sam2_types import FrameOutput, OutputDict, SAM2Fields, _seq_to_map


def select_closest_cond_frames(
    frame_idx: int, cond_frame_outputs: dict[int, FrameOutput], max_cond_frame_num: int
) -> tuple[dict[int, FrameOutput], dict[int, FrameOutput]]:
    """Pick at most ``max_cond_frame_num`` conditioning frames for ``frame_idx``.

    Keeps the closest frame before and the closest at/after ``frame_idx``, then the remaining
    ones by temporal distance. ``-1`` keeps all. Returns ``(selected, unselected)``.
    """
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or >= 2")
    selected: dict[int, FrameOutput] = {}
    before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_frame_outputs[before]
    after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_frame_outputs[after]
    remaining = max_cond_frame_num - len(selected)
    rest = sorted(
        (t for t in cond_frame_outputs if t not in selected), key=lambda t: abs(t - frame_idx)
    )
    for t in rest[:remaining]:
        selected[t] = cond_frame_outputs[t]
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


class MemoryConditioningMixin(SAM2Fields):
    """Memory bank gathering and memory attention of
    :class:`~sam2_core.model.sam2_base.SAM2Base`."""

    def _prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[torch.Tensor],
        current_vision_pos_embeds: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool = False,
    ) -> torch.Tensor:
        """Fuse the current frame's stride-16 features ``[HW, B, C]`` with the memory bank.

        Initial conditioning frames get ``no_mem_embed`` instead. Returns ``[B, C, H, W]``.
        """
        b = current_vision_feats[-1].size(1)
        hw = feat_sizes[-1]
        if self.num_maskmem == 0:  # single-image SAM
            return _seq_to_map(current_vision_feats[-1], hw)

        if is_init_cond_frame:
            if self.directly_add_no_mem_embed:
                return _seq_to_map(current_vision_feats[-1] + self.no_mem_embed, hw)
            memory = self.no_mem_embed.expand(1, b, self.mem_dim)
            memory_pos = self.no_mem_pos_enc.expand(1, b, self.mem_dim)
            num_obj_ptr_tokens = 0
        else:
            memory, memory_pos, num_obj_ptr_tokens = self._gather_memory(
                frame_idx=frame_idx,
                batch_size=b,
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
                dtype=current_vision_feats[-1].dtype,
                device=current_vision_feats[-1].device,
            )
        pix_feat_with_mem = self.memory_attention(
            curr=current_vision_feats[-1],
            curr_pos=current_vision_pos_embeds[-1],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )
        return _seq_to_map(pix_feat_with_mem, hw)

    def _memory_frames(
        self,
        frame_idx: int,
        selected_cond: dict[int, FrameOutput],
        unselected_cond: dict[int, FrameOutput],
        output_dict: OutputDict,
        track_in_reverse: bool,
    ) -> list[tuple[int, FrameOutput | None]]:
        """``(t_pos, output)`` of memory frames: cond frames at t_pos 0, then the previous
        ``num_maskmem - 1`` frames (the most recent at t_pos ``num_maskmem - 1``)."""
        out: list[tuple[int, FrameOutput | None]] = [(0, o) for o in selected_cond.values()]
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos  # how many frames before the current one
            if t_rel == 1:
                # The immediately preceding frame is always used, whatever the stride.
                prev = frame_idx + 1 if track_in_reverse else frame_idx - 1
            elif not track_in_reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            o = output_dict["non_cond_frame_outputs"].get(prev)
            if o is None:
                o = unselected_cond.get(prev)
            out.append((t_pos, o))
        return out

    def _gather_memory(
        self,
        *,
        frame_idx: int,
        batch_size: int,
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Memory tokens ``[M, B, Cm]``, their position encodings and the object-pointer count."""
        cond_outputs = output_dict["cond_frame_outputs"]
        if len(cond_outputs) == 0:
            raise ValueError("tracking a non-initial frame needs at least one conditioning frame")
        selected, unselected = select_closest_cond_frames(
            frame_idx, cond_outputs, self.max_cond_frames_in_attn
        )
        mems: list[torch.Tensor] = []
        mem_pos: list[torch.Tensor] = []
        for t_pos, prev in self._memory_frames(
            frame_idx, selected, unselected, output_dict, track_in_reverse
        ):
            if prev is None:
                continue
            # Stored memories may be bf16 and/or on the CPU (the predictor stores them so).
            feats = prev["maskmem_features"].to(device=device, non_blocking=True)
            mems.append(feats.flatten(2).permute(2, 0, 1).to(dtype))
            pos = prev["maskmem_pos_enc"][-1].to(device=device).flatten(2).permute(2, 0, 1)
            mem_pos.append(pos + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])

        num_obj_ptr_tokens = 0
        if self.use_obj_ptrs_in_encoder:
            ptrs = self._gather_obj_ptrs(
                frame_idx=frame_idx,
                batch_size=batch_size,
                selected_cond=selected,
                unselected_cond=unselected,
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
                device=device,
            )
            if ptrs is not None:
                mems.append(ptrs[0].to(dtype))
                mem_pos.append(ptrs[1])
                num_obj_ptr_tokens = ptrs[0].shape[0]
        return torch.cat(mems, dim=0), torch.cat(mem_pos, dim=0), num_obj_ptr_tokens

    def _gather_obj_ptrs(
        self,
        *,
        frame_idx: int,
        batch_size: int,
        selected_cond: dict[int, FrameOutput],
        unselected_cond: dict[int, FrameOutput],
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Object-pointer tokens ``[P * C/Cm, B, Cm]`` with temporal PEs, or None."""
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {
                t: o
                for t, o in selected_cond.items()
                if (t >= frame_idx if track_in_reverse else t <= frame_idx)
            }
        else:
            ptr_cond = selected_cond
        sign = -1 if track_in_reverse else 1
        pos_and_ptrs: list[tuple[int, torch.Tensor]] = []
        for t, o in ptr_cond.items():
            dist = (
                (frame_idx - t) * sign
                if self.use_signed_tpos_enc_to_obj_ptrs
                else abs(frame_idx - t)
            )
            pos_and_ptrs.append((dist, o["obj_ptr"]))
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            prev = output_dict["non_cond_frame_outputs"].get(t, unselected_cond.get(t))
            if prev is not None:
                pos_and_ptrs.append((t_diff, prev["obj_ptr"]))
        if not pos_and_ptrs:
            return None

        c, cm = self.hidden_dim, self.mem_dim
        obj_ptrs = torch.stack([p.to(device) for _, p in pos_and_ptrs], dim=0)  # [P, B, C]
        if self.add_tpos_enc_to_obj_ptrs:
            t_diff_max = max_ptrs - 1
            tpos_dim = c if self.proj_tpos_enc_in_obj_ptrs else cm
            rel = torch.tensor([d for d, _ in pos_and_ptrs], device=device)
            obj_pos = get_1d_sine_pe(rel / t_diff_max, dim=tpos_dim)
            obj_pos = self.obj_ptr_tpos_proj(obj_pos)
            obj_pos = obj_pos.unsqueeze(1).expand(-1, batch_size, cm)
        else:
            obj_pos = obj_ptrs.new_zeros(len(pos_and_ptrs), batch_size, cm)
        if cm < c:
            # Each C-wide pointer becomes C/Cm memory tokens of width Cm.
            obj_ptrs = obj_ptrs.reshape(-1, batch_size, c // cm, cm)
            obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(c // cm, dim=0)
        return obj_ptrs, obj_pos
