"""The head and timm interface shared by networks whose classifier sees the whole last map.

:class:`FlatHeadNet` is what :class:`~hebbopt.models.alexnet.HebbAlexNet` and
:class:`~hebbopt.models.vgg.HebbVGG` have in common: ``features`` (an ``nn.Sequential`` of hidden
layers, each ending at an index of ``feature_ends``), ``pre_logits`` on the flattened last map,
an optional l2 scaling of its output, dropout and a Linear classifier. No global pooling: the
head sees every position of the last map, as the FastHebb papers' networks do.
"""

from __future__ import annotations

import torch
from torch import nn

from hebbopt.models.features import take_indices
from hebbopt.models.softhebb import scale_l2


class FlatHeadNet(nn.Module):
    """Base of the networks whose head sees the flattened last map (subclasses build the layers).

    A subclass's ``__init__`` sets ``features`` (nn.Sequential), ``feature_ends`` (the index in
    ``features`` where each hidden layer ends), ``feature_info`` (timm's), ``pre_logits``,
    ``head_hidden_size`` (the width ``pre_logits`` gives), ``head_norm`` (``none`` / ``l2``),
    ``head_drop`` and ``classifier`` (from ``self._classifier(num_classes)``), and ``num_classes``.
    """

    features: nn.Sequential
    feature_ends: list[int]
    feature_info: list[dict]
    pre_logits: nn.Module
    head_hidden_size: int
    head_norm: str
    head_drop: nn.Module
    classifier: nn.Module
    num_classes: int

    def _keep_head_options(
        self, block: str, blocks: tuple[str, ...], num_classes: int, drop_rate: float, head_norm: str
    ) -> None:
        """Check ``block`` (one of ``blocks``) and ``head_norm``, and keep the head's options."""
        if block not in blocks:
            raise ValueError(f"block must be one of {', '.join(map(repr, blocks))}, got {block!r}")
        if head_norm not in ("none", "l2"):
            raise ValueError(f"head_norm must be 'none' or 'l2', got {head_norm!r}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.head_norm = head_norm

    def _end_layer(
        self, modules: list[nn.Module], out: int, reduction: int, size: int, img_size: int
    ) -> None:
        """A hidden layer ends at the last of ``modules``: check its map, record it in ``feature_info``."""
        if size < 1:
            raise ValueError(f"img_size={img_size} is too small for these layers (a map shrinks to {size})")
        self.feature_info.append(
            {"num_chs": out, "reduction": reduction, "module": f"features.{len(modules) - 1}"}
        )

    def _keep_features(self, modules: list[nn.Module], chans: int, size: int) -> None:
        """``features`` from ``modules``, where each hidden layer ends, and the last map's shape."""
        self.features = nn.Sequential(*modules)
        self.feature_ends = [int(f["module"].split(".")[1]) for f in self.feature_info]
        self.num_features = chans
        self.map_size = size

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final Linear layer (what Hebbian optimizers leave out).

        Returns:
            ``self.classifier`` (``nn.Identity`` when ``num_classes=0``).
        """
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` outputs (0: none). There is no global pooling.

        Args:
            num_classes: outputs of the new classifier (0: ``nn.Identity``).
            global_pool: must be empty (accepted for timm compatibility).

        Raises:
            ValueError: ``global_pool`` is given.
        """
        if global_pool:
            raise ValueError(f"{type(self).__name__} has no global pooling (its head sees the whole map)")
        self.num_classes = num_classes
        self.classifier = self._classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional map, B×C×s×s.

        Args:
            x: images, B×in_chans×img_size×img_size.

        Returns:
            the output of the last conv block (after its BatchNorm).
        """
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Hidden Linear layer, then (unless ``pre_logits``) dropout and the classifier.

        Args:
            x: the output of :meth:`forward_features`.
            pre_logits: return the hidden features (B×fc_dim, scaled with ``head_norm="l2"``)
                instead of the logits.

        Returns:
            B×num_classes logits, or B×fc_dim hidden features.
        """
        x = self.pre_logits(x)
        if self.head_norm == "l2":
            x = scale_l2(x)
        return x if pre_logits else self.classifier(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The output of each hidden conv layer (after its BatchNorm), as timm models give them.

        Args:
            x: images.
            indices: the last n layers if an int, these layers if a list, all if None.
            norm: ignored (there is no final norm layer; accepted for timm compatibility).
            stop_early: stop after the last requested layer.
            output_fmt: must be ``"NCHW"``.
            intermediates_only: return only the intermediates.

        Returns:
            the intermediates, or ``(last feature map, intermediates)``.

        Raises:
            ValueError: ``output_fmt`` is not ``"NCHW"``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW'")
        take, max_index = take_indices(len(self.feature_ends), indices)
        end = self.feature_ends[max_index] if stop_early else len(self.features) - 1
        intermediates = []
        for i, layer in enumerate(self.features[: end + 1]):
            x = layer(x)
            if i in self.feature_ends and self.feature_ends.index(i) in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the layers after the last requested intermediate (and the head if asked).

        Args:
            indices: as in :meth:`forward_intermediates`.
            prune_norm: ignored (there is no final norm layer).
            prune_head: also remove the hidden Linear layer and the classifier.

        Returns:
            the indices of the kept intermediates.
        """
        take, max_index = take_indices(len(self.feature_ends), indices)
        self.features = self.features[: self.feature_ends[max_index] + 1]
        if prune_head or max_index < len(self.feature_ends) - 1:
            self.pre_logits = nn.Identity()
            self.reset_classifier(0)
        return take
