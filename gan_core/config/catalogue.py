"""The family catalogue: every GAN family and task kind ganops knows, in one torch-free table that config
validation, the search space, the registry, gan_core.models and evaluation read.

    info = family_info("stylegan2")       # FamilyInfo: its module, task kind, what it supports, its own settings
    info.task                             # "generation" (z [+ label] → image) | "translation" (image A → image B)
    info.supports.losses                  # None = every train.loss; cyclegan: ("lsgan", "nonsaturating", "hinge")
    TASKS[info.task].package              # "generator": the package it trains, its spec file and its CLI command
    family_names()                        # ["mlp", "dcgan", "stylegan2", "cyclegan"]
    gan_core.models.family("stylegan2")   # the networks and training step behind an entry (imports torch)

Adding a family is one module in gan_core/models/ (its networks and training step) and one entry in FAMILIES.
Settings only it reads are its own sections here (model_options, train_options): gan_core.config.schema builds
ModelConfig and TrainConfig from the shared settings and every family's sections, so params.yaml and overrides
name them as always (`model.mapping_layers=2`, `train.cycle_weight=5`) and a new family never edits the shared
classes. A key belongs to one family or to the shared settings, never to two.

`supports` says what a family accepts. What a whole config shows (labels, n_critic) is refused when the config
loads (gan_core.config.schema); the rest (a loss, a resolution, spectral norm) when the family builds its networks,
with the family's own message. tests/test_families.py checks that each family accepts exactly what it declares.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from gan_core.config.section import Section
from gan_core.errors import UserError

# ----------------------------------------------------------------------------- task kinds
GENERATION = "generation"
TRANSLATION = "translation"


@dataclass(frozen=True)
class TaskKind:
    """What a family of this kind trains. Each stage keeps one table keyed by task kind (gan_core.models'
    shared network arguments, gan_core.training.tasks, gan_core.packaging.PACKAGES, gan_core.evaluation.evaluate's
    EVALUATORS, gan_core.serving.mlflow_models): a new kind adds one entry here and one module per stage."""

    name: str
    package: str
    """The package it trains: `generator` is gan_core.load_generator's, written as generator.json + weights."""
    command: str
    """The `ganops` command that uses such a package (`ganops generate`)."""
    does: str
    """What its families do, for messages: "translates images"."""
    load_example: str
    """How Python code (after `import gan_core`) loads a registered model of this kind; `{uri}`: its models:/ URI."""
    command_example: str
    """The `ganops` command that uses it, with typical arguments; `{uri}` as above."""

    @property
    def spec_file(self) -> str:
        """The JSON file that makes a directory a package of this kind."""
        return f"{self.package}.json"


TASKS: dict[str, TaskKind] = {
    GENERATION: TaskKind(
        GENERATION, package="generator", command="generate", does="draws images from noise",
        load_example="G = gan_core.load_generator('{uri}', device='auto')",
        command_example="ganops generate --model {uri} -n 64 --out outputs/grid.png"),
    TRANSLATION: TaskKind(
        TRANSLATION, package="translator", command="translate", does="translates images",
        load_example="G_AB = gan_core.load_translator('{uri}', direction='a2b')",
        command_example="ganops translate --model {uri} --input my.png --out outputs/translated/"),
}


# ----------------------------------------------------------------------------- what a family supports
@dataclass(frozen=True)
class Supports:
    """The shared settings a family accepts (the defaults: all of them)."""

    conditional: bool = True
    """model.conditional=true: class labels for G and D."""
    cond_modes: tuple[str, ...] = ("projection", "concat")
    """model.cond_mode values its conditional D takes."""
    spectral_norm: bool = True
    """model.spectral_norm=true."""
    n_critic: bool = True
    """train.n_critic above 1 (several D updates per G update)."""
    losses: tuple[str, ...] | None = None
    """train.loss values it trains with; None = every loss of gan_core.models.losses."""
    resolutions: tuple[int, ...] | None = None
    """data.resolution values it builds; None = any side of at least min_resolution divisible by resolution_step."""
    min_resolution: int = 8
    resolution_step: int = 1

    def resolution(self, side: int) -> bool:
        """True when the family builds networks for `side`×`side` images."""
        if self.resolutions is not None:
            return side in self.resolutions
        return side >= self.min_resolution and side % self.resolution_step == 0


# ----------------------------------------------------------------------------- each family's own settings
class StyleGAN2Model(Section):
    """model.* keys only stylegan2 reads."""

    mapping_layers: int = Field(4, ge=1, le=16)
    """StyleGAN2: depth of the mapping network z → w (the paper uses 8; 2–4 suffice at 32 px)."""


class StyleGAN2Train(Section):
    """train.* keys only stylegan2's step reads."""

    style_mixing: float = Field(0.9, ge=0, le=1)
    """stylegan2: probability that a batch mixes two latents' styles at a random layer."""
    pl_weight: float = Field(0.0, ge=0)
    """stylegan2: path-length regularisation weight (paper: 2); 0 = off. Applied every pl_every steps."""
    pl_every: int = Field(4, ge=1)


class CycleGANModel(Section):
    """model.* keys only cyclegan reads."""

    res_blocks: int = Field(6, ge=1, le=32)
    """CycleGAN: residual blocks in each generator (the paper: 6 at 128 px, 9 at 256 px). g_width and d_width
    are the generators' and PatchGANs' first feature maps (the paper: 64)."""


class CycleGANTrain(Section):
    """train.* keys only cyclegan's step reads."""

    cycle_weight: float = Field(10.0, ge=0)
    """cyclegan: weight λ of the cycle-consistency L1 loss."""
    identity_weight: float = Field(0.5, ge=0)
    """cyclegan: weight of the identity L1 loss, relative to cycle_weight (the paper: 0.5); 0 = off."""
    pool_size: int = Field(50, ge=0, le=10000)
    """cyclegan: generated images kept in the history pool D is shown (0 = only the newest)."""
    semantic_weight: float = Field(1.0, ge=0)
    """cyclegan: weight of the semantic-consistency term (after CyCADA, Hoffman et al. 2018): each domain's frozen
    judge, a classifier the `classifier` step trains, must give every translation into its domain the class of
    the source image. Needs both domains labelled with the same classes; 0 = off (the paper's CycleGAN). On the
    digits ↔ MNIST demo it took content from 0.65/0.47 to above 0.9 both ways, with a better fid. The judges'
    identity joins the training identity."""


# ----------------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class FamilyInfo:
    """One family: where its code is, what it trains, what it accepts, which settings are its own."""

    name: str
    """model.arch."""
    module: str
    """Dotted path of its module: Generator, Discriminator, TrainingStep and optionally generator_options /
    discriminator_options (gan_core.models.family imports it; only modules named in this table are imported)."""
    task: str
    supports: Supports = Supports()
    model_options: type[Section] | None = None
    train_options: type[Section] | None = None


FAMILIES: dict[str, FamilyInfo] = {info.name: info for info in (
    FamilyInfo("mlp", "gan_core.models.mlp", GENERATION),
    FamilyInfo("dcgan", "gan_core.models.dcgan", GENERATION,
               Supports(resolutions=(16, 28, 32, 64, 128))),  # a 4×4 or 7×7 seed and at least two doublings
    FamilyInfo("stylegan2", "gan_core.models.stylegan2", GENERATION,
               Supports(cond_modes=("projection",), spectral_norm=False, resolutions=(16, 32, 64, 128, 256)),
               model_options=StyleGAN2Model, train_options=StyleGAN2Train),
    FamilyInfo("cyclegan", "gan_core.models.cyclegan", TRANSLATION,
               Supports(conditional=False, spectral_norm=False, n_critic=False,
                        losses=("lsgan", "nonsaturating", "hinge"), min_resolution=16, resolution_step=4),
               model_options=CycleGANModel, train_options=CycleGANTrain),
)}
"""model.arch → its entry, in the order they are listed to users."""
SHIPPED = tuple(FAMILIES)
"""The families ganops ships (FAMILIES may also hold a test's, added by register)."""


def family_names() -> list[str]:
    return list(FAMILIES)


def family_info(arch: str) -> FamilyInfo:
    """The catalogue entry of `arch`; UserError naming the known families for anything else."""
    if arch not in FAMILIES:
        raise UserError(f"unknown architecture {arch!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[arch]


def model_sections() -> list[type[Section]]:
    """Every family's model.* section, in catalogue order (gan_core.config.schema.ModelConfig is built from them)."""
    return [info.model_options for info in FAMILIES.values() if info.model_options is not None]


def train_sections() -> list[type[Section]]:
    """Every family's train.* section, in catalogue order."""
    return [info.train_options for info in FAMILIES.values() if info.train_options is not None]


def register(info: FamilyInfo) -> None:
    """Add a family at run time (a test's, never shipped). It cannot bring settings of its own: ModelConfig and
    TrainConfig were built when gan_core.config was imported, so such a family belongs in FAMILIES."""
    if info.name in FAMILIES:
        raise ValueError(f"family {info.name!r} is in the catalogue already")
    if info.task not in TASKS:
        raise ValueError(f"family {info.name!r}: unknown task kind {info.task!r}; expected one of {sorted(TASKS)}")
    if info.model_options is not None or info.train_options is not None:
        raise ValueError(f"family {info.name!r} declares settings of its own: add it to FAMILIES instead")
    FAMILIES[info.name] = info


def unregister(name: str) -> None:
    """Remove a family added by register."""
    if name in SHIPPED:
        raise ValueError(f"family {name!r} ships with ganops and cannot be removed")
    FAMILIES.pop(name, None)
