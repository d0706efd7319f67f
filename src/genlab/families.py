"""Every model family in one registry: the generic tests (every datamodule, exact resume, DDP, bf16)
and the overhead benchmark run each family listed here. Adding a family adds one line."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """A model family: ``conf/model/<name>.yaml`` and what the generic checks need to know about it."""

    name: str
    small: tuple[str, ...]  # overrides of the smallest networks that still learn (tests)
    train_metric: str  # a training scalar every run logs
    val_metric: str  # a validation metric every run logs
    modality: str = "image"  # matches the model class's declared modality
    data: tuple[str, ...] = ()  # the quickest data of the modality (default: digits)
    bench: tuple[str, ...] = ()  # the overhead benchmark's model (default: conf/model/<name>.yaml as is)
    steps_per_batch: int = 1  # optimizer steps per training batch (Lightning's global_step)
    conditional: bool = False  # class-conditional on labelled data (data.labels=true fills model.num_classes)


_UNET = ("model.net.channel_mults=[1,2]", "model.net.num_res_blocks=1", "model.net.attention_resolutions=[8]")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "gan",
            ("model.generator.width=8", "model.discriminator.width=8"),
            "train/g_loss",
            "val/d_x",
            steps_per_batch=2,  # a D and a G step (n_critic=1)
            conditional=True,
        ),
        Family(
            "vae",
            ("model.encoder.width=8", "model.decoder.width=8", "model.latent_dim=8"),
            "train/nelbo",
            "val/nelbo",
            conditional=True,
        ),
        Family(
            "diffusion",
            ("model.net.width=16", *_UNET, "model.sample_steps=5", "model.warmup_steps=10"),
            "train/loss",
            "val/loss",
            bench=("data.resolution=16", "data.batch_size=32", "model.net.width=32", *_UNET),
            conditional=True,
        ),
        Family(
            "gpt",
            ("model.net.n_layer=2", "model.net.n_head=2", "model.net.n_embd=32", "data.block_size=32"),
            "train/loss",
            "val/loss",
            modality="text",
            data=("data=text_docs",),
            bench=("experiment=gpt_shakespeare_char_cpu",),
        ),
        Family(
            "flow",
            ("model.net.hidden=32", "model.net.num_layers=2"),
            "train/bpd",
            "val/bpd",
        ),
    )
}
IMAGE_FAMILIES = [name for name, family in FAMILIES.items() if family.modality == "image"]
CONDITIONAL_FAMILIES = [name for name, family in FAMILIES.items() if family.conditional]
