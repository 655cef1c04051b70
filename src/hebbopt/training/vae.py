"""The paper's baseline: β-VAE pre-training of the same backbone (FastHebb §4.2).

The encoder is the backbone without its classifier (``forward_features`` → ``forward_head(pre_logits)``)
plus one Linear layer to the mean μ and log-variance log σ² of ``latents`` Gaussian variables; the
decoder mirrors it: Linear layers back to the last feature map, then, for every encoder layer of
``model.features`` in reverse, an upsampling to the size that layer saw and a same-padded
convolution back to its input channels (models without a ``features`` sequence get a plain
upsampling decoder). Trained end to end on every training image to minimise the negative β-VAE
bound (Higgins et al., 2017) per image:

    L = (‖x − x̂‖² + β · KL(N(μ, σ²) ‖ N(0, I))) / D,   KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)

(D: values per image; the division only rescales the gradient for SGD)
with the fine-tuning optimiser (SGD, momentum 0.9, Nesterov, lr constant then halved). Only the
backbone is kept (``backbone.safetensors``); the latent layer and the decoder are dropped.
"""

from __future__ import annotations

import pathlib

import torch
from accelerate import Accelerator
from torch import nn

from hebbopt.data import ImageSplits
from hebbopt.data.seeds import derive_seed
from hebbopt.training.config import Config
from hebbopt.training.loop import epochs
from hebbopt.training.models import build_model
from hebbopt.training.run_folder import Run, check_finite
from hebbopt.training.setup import load_splits, make_accelerator
from hebbopt.training.sgd import sgd_run
from hebbopt.training.tracking import Tracker
from hebbopt.weights import save_weights


class VAE(nn.Module):
    """A β-VAE around a timm ``backbone`` (classifier unused) for ``in_chans``×``img_size``² inputs.

    Encoder: ``backbone.forward_features``, ``forward_head(pre_logits=True)``, then one Linear
    layer to (μ, log σ²). Decoder: Linear layers back to the last feature map, then upsampling and
    3×3 convolutions mirroring the convolutions of ``backbone.features`` (see the module's
    description).

    Args:
        backbone: a timm model with ``forward_features`` and ``forward_head``; trained in place.
        in_chans: channels of the images.
        img_size: image height and width.
        latents: the number of Gaussian latent variables.

    Examples:
        >>> import timm, hebbopt
        >>> net = timm.create_model("hebb_alexnet_6l", in_chans=1, num_classes=10, img_size=32)
        >>> vae = VAE(net, in_chans=1, img_size=32, latents=8)
        >>> recon, mu, logvar = vae(torch.randn(2, 1, 32, 32))
        >>> tuple(recon.shape), tuple(mu.shape), tuple(logvar.shape)
        ((2, 1, 32, 32), (2, 8), (2, 8))
    """

    def __init__(self, backbone: nn.Module, in_chans: int, img_size: int, latents: int = 256) -> None:
        super().__init__()
        self.backbone = backbone
        probe = torch.zeros(2, in_chans, img_size, img_size)
        sizes: list[tuple[int, int, int]] = []
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            features = getattr(backbone, "features", None)
            mirror = isinstance(features, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in features)
            x = probe
            if mirror:
                for m in features:
                    if isinstance(m, nn.Conv2d):
                        sizes.append((m.in_channels, x.shape[-2], x.shape[-1]))
                    x = m(x)
            else:
                x = backbone.forward_features(probe)
            fmap = x.shape[1:]
            hidden = backbone.forward_head(x, pre_logits=True).shape[1]
        backbone.train(was_training)
        self.fmap = tuple(fmap)
        self.to_latent = nn.Linear(hidden, 2 * latents)
        flat = int(torch.tensor(fmap).prod())
        self.from_latent = nn.Sequential(
            nn.Linear(latents, hidden), nn.ReLU(), nn.Linear(hidden, flat), nn.ReLU()
        )  # fmt: skip
        layers: list[nn.Module] = []
        chans = fmap[0]
        if mirror:
            steps = list(reversed(sizes))
        else:  # double the size until the input size is reached
            steps, h = [], fmap[-1]
            while h < img_size:
                h = min(img_size, 2 * h)
                steps.append((max(in_chans, chans // 2), h, h))
            steps[-1:] = [(in_chans, img_size, img_size)]  # the last step: back to the image
        for i, (out, h, w) in enumerate(steps):
            layers += [nn.Upsample(size=(h, w), mode="nearest"), nn.Conv2d(chans, out, 3, padding=1)]
            if i < len(steps) - 1:
                layers += [nn.ReLU(), nn.BatchNorm2d(out)]
            chans = out
        self.decoder = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The approximate posterior q(z | x) = N(μ, σ²).

        Args:
            x: images, ``B×C×H×W``.

        Returns:
            ``(μ, log σ²)``, each ``B×latents``; log σ² is clamped to [−20, 20].
        """
        h = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction x̂ of latent codes ``z``.

        Args:
            z: latent codes, ``B×latents``.

        Returns:
            x̂, ``B×in_chans×img_size×img_size`` (no output non-linearity: it matches the
            normalised images).
        """
        return self.decoder(self.from_latent(z).view(len(z), *self.fmap))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample z = μ + σ ⊙ ε with ε ~ N(0, I) (the reparameterisation), decode.

        Args:
            x: images, ``B×C×H×W``.

        Returns:
            ``(x̂, μ, log σ²)``, as :func:`vae_loss` takes them.
        """
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z), mu, logvar


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float):
    """The negative β-VAE bound per image, scaled by 1/D, averaged over the batch.

        L = (‖x − x̂‖² + β · KL(N(μ, σ²) ‖ N(0, I))) / D,   KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)

    for D values per image (dividing by D keeps plain SGD at the paper's lr stable; the optimum is
    unchanged). Computed in float32 whatever the inputs' precision.

    Args:
        x: the images, ``B×C×H×W``.
        recon: their reconstructions x̂, the same shape.
        mu: the posterior means μ, ``B×latents``.
        logvar: the posterior log-variances log σ², ``B×latents``.
        beta: β, the weight of the KL term.

    Returns:
        L, a 0-d tensor.

    Examples:
        >>> x, zeros = torch.zeros(2, 3, 4, 4), torch.zeros(2, 8)
        >>> vae_loss(x, x + 1, zeros, zeros, beta=0.5).item()  # ‖x − x̂‖² = D = 48, KL = 0
        1.0
    """
    rec = (recon.float() - x.float()).pow(2).flatten(1).sum(1)
    kl = -0.5 * (1 + logvar.float() - mu.float().pow(2) - logvar.float().exp()).sum(1)
    return (rec + beta * kl).mean() / x[0].numel()


def pretrain_vae(
    cfg: Config,
    *,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    splits: ImageSplits | None = None,
) -> pathlib.Path:
    """β-VAE pre-training (``cfg.vae``) of ``cfg.model``; returns ``backbone.safetensors`` in ``cfg.run.dir``.

    Checkpoints every epoch (atomically) and resumes exactly, as
    :func:`~hebbopt.training.pretrain.pretrain`; writes the same files but ``filters.png``.

    Args:
        cfg: the configuration (``data``, ``model``, ``vae``, ``run``; the learning-rate schedule of
            ``finetune``).
        resume: continue the run in ``cfg.run.dir`` from its last checkpoint; a finished run
            returns its backbone at once.
        accelerator: the accelerator to use (the sweep shares one); default: a new one
            (:func:`~hebbopt.training.setup.make_accelerator`).
        splits: the dataset, already loaded (the sweep loads it once); default:
            :func:`~hebbopt.training.setup.load_splits`.

    Returns:
        The ``backbone.safetensors`` path: the backbone's weights only (no latent layer, no decoder).

    Raises:
        ConfigError: the run folder holds another run (without ``resume``) or a different config,
            or the model cannot be built.
        FloatingPointError: the loss is not finite (the run is stopped, not finished).
    """
    accelerator = accelerator or make_accelerator(cfg)
    run = Run(cfg, accelerator, resume=resume, kind="pretrain")
    backbone_file = run.dir / "backbone.safetensors"
    if run.finished():
        return backbone_file
    splits = splits or load_splits(cfg, accelerator)
    v = cfg.vae
    backbone = build_model(cfg, splits, seed=cfg.run.seed)
    vae = VAE(backbone, splits.in_chans, splits.img_size, v.latents)
    if cfg.model.channels_last:
        vae = vae.to(memory_format=torch.channels_last)
    run.start()
    tracker = Tracker(cfg, accelerator)
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)  # its filters, logged
    vae.to(accelerator.device)
    model, opt, sched, plain, state = sgd_run(
        vae, cfg, accelerator, run, resume=resume, lr=v.lr, momentum=v.momentum, nesterov=v.momentum > 0
    )
    first_epoch, history = (state["epoch"], state["history"]) if state is not None else (0, [])
    everything = torch.arange(len(splits.train))
    for epoch in epochs(cfg, run, accelerator, splits.train, everything, v.batch_size, "vae/order",
                        first=first_epoch, count=v.epochs, desc="vae"):  # fmt: skip
        e = epoch.index
        # sampling noise: one named stream per epoch, so a resumed run draws the same
        torch.manual_seed(derive_seed(cfg.run.seed, f"vae/noise/epoch{e}"))
        model.train()
        total, seen = torch.zeros((), device=accelerator.device), 0
        for step, (x, _) in epoch:
            with accelerator.autocast():
                recon, mu, logvar = model(x)
            loss = vae_loss(x, recon, mu, logvar, v.beta)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total, seen = total + loss.detach() * len(x), seen + len(x)  # no sync per step
            if tracker.due(step):
                tracker.log({"train/loss": loss.detach(), "train/lr": opt.param_groups[0]["lr"]}, step)
        mean_loss = total.item() / max(1, seen)
        check_finite(mean_loss, run, f"vae epoch {e + 1}")
        sched.step()
        entry = epoch.record(loss=mean_loss)
        history.append(entry)
        tracker.log({"epoch/loss": mean_loss, "epoch/seconds": entry["seconds"]}, epoch.end)
        tracker.filters(first, epoch.end)
        run.log(f"vae epoch {e + 1}/{v.epochs}: loss {mean_loss:.2f}, {entry['seconds']:.1f} s")
        run.save({"model": plain.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "epoch": e + 1, "history": history})  # fmt: skip
    if run.main:
        save_weights(plain.backbone, backbone_file)
    run.finish(
        {"done": True, "method": "vae", "history": history, "seconds": sum(h["seconds"] for h in history)},
        f"vae: backbone written to {backbone_file}",
    )
    tracker.close()
    accelerator.free_memory()
    return backbone_file
