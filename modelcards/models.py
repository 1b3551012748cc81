"""Model cards: the base-model catalog ("model square") and the fine-tuned models trained from it."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


class Modality(models.TextChoices):
    TEXT = "text", _("Text generation")
    IMAGE_GENERATION = "image_generation", _("Image generation")
    IMAGE_UNDERSTANDING = "image_understanding", _("Image understanding")


class WeightsSource(models.TextChoices):
    LOCAL_DIR = "local_dir", _("Local folder")
    HF_CACHE = "hf_cache", _("Hugging Face repo id in the local cache")
    GGUF_PACKAGE = "gguf_package", _("GGUF file shipped by a Python package")


class Availability(models.TextChoices):
    EVERYONE = "everyone", _("All users")
    ANNUAL_PRIVATE = "annual_private", _("Annual private-deployment plan users")


class Method(models.TextChoices):
    SFT = "sft", "SFT"
    DPO = "dpo", "DPO"


class TrainingType(models.TextChoices):
    LORA = "lora", "LoRA"
    FULL = "full", _("Full-parameter")


class BaseModelQuerySet(models.QuerySet["BaseModel"]):
    def usable_by(self, user) -> BaseModelQuerySet:
        """The catalog entries ``user`` may see, try and fine-tune (``BaseModel.is_usable_by``, for one)."""
        qs = self.filter(is_active=True)
        if not getattr(user, "is_staff", False):
            qs = qs.filter(availability=Availability.EVERYONE)
        return qs

    def with_weights(self) -> BaseModelQuerySet:
        """Those whose weights are on this server (a look at the disk, made here)."""
        return self.filter(pk__in=[model.pk for model in self if model.weights_present])


class BaseModel(models.Model):
    """A base model in the catalog ("model square"), managed by operators."""

    code = models.SlugField(_("model code"), max_length=64, unique=True)
    display_name = models.CharField(_("display name"), max_length=100)
    family = models.CharField(_("family"), max_length=50)
    description = models.TextField(_("description"), blank=True)
    modality = models.CharField(_("modality"), max_length=32, choices=Modality.choices, default=Modality.TEXT)
    architecture = models.CharField(
        _("architecture"),
        max_length=64,
        blank=True,
        help_text=_(
            "The transformers model type (config.json's model_type), used until the weights are here to read it from."
        ),
    )
    parameters = models.BigIntegerField(
        _("parameters"), null=True, blank=True, help_text=_("Total parameter count, for the memory estimate.")
    )
    methods = models.JSONField(_("methods"), default=list, help_text=_('e.g. ["sft", "dpo"]'))
    training_types = models.JSONField(_("training types"), default=list, help_text=_('e.g. ["lora", "full"]'))
    public_pool = models.BooleanField(_("LoRA results may use the public pool"), default=False)
    availability = models.CharField(
        _("who may use it"), max_length=32, choices=Availability.choices, default=Availability.EVERYONE
    )
    context_length = models.PositiveIntegerField(_("context length"), default=2048)
    training_price = models.DecimalField(
        _("training price per 1,000 tokens"), max_digits=10, decimal_places=4, default=0
    )
    inference_price = models.DecimalField(
        _("inference price per 1,000 tokens"), max_digits=10, decimal_places=4, default=0
    )
    weights_source = models.CharField(
        _("weights come from"), max_length=32, choices=WeightsSource.choices, default=WeightsSource.LOCAL_DIR
    )
    weights_location = models.CharField(
        _("weights location"),
        max_length=500,
        blank=True,
        help_text=_(
            "A folder path; a Hugging Face repo id (org/name); or package:file.gguf for a GGUF "
            "file inside an installed Python package."
        ),
    )
    public_name = models.CharField(
        _("public name"),
        max_length=200,
        blank=True,
        help_text=_(
            "Where others find these weights (a Hugging Face repo id). Downloaded adapters name it as their "
            "base model, so peft loads them anywhere."
        ),
    )
    is_default = models.BooleanField(_("embedded default"), default=False)
    is_active = models.BooleanField(_("listed"), default=True)
    sort_order = models.PositiveIntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BaseModelQuerySet.as_manager()

    class Meta:
        ordering = ["sort_order", "code"]
        verbose_name = _("base model")
        verbose_name_plural = _("base models")

    def __str__(self) -> str:
        return self.code

    def is_usable_by(self, user) -> bool:
        """Whether ``user`` may see, try and fine-tune this entry: the rule of ``BaseModel.objects.usable_by``, for
        a row already read (the gateway reads a model by its code once, then asks)."""
        return self.is_active and (getattr(user, "is_staff", False) or self.availability == Availability.EVERYONE)

    @property
    def description_text(self) -> str:
        """The description in the reader's language: a seeded one is in the catalog, an operator's shows as written."""
        return gettext(self.description) if self.description else ""

    @property
    def converted_dir(self) -> Path:
        """Where a GGUF model is saved once as safetensors, to load quickly afterwards."""
        return Path(settings.MODELS_DIR) / self.code

    def weights_status(self) -> tuple[bool, str]:
        """Whether the weights are on this server, and where (or why not)."""
        location = self.weights_location.strip()
        if not location:
            return False, str(_("No weights configured on this server."))
        if self.weights_source == WeightsSource.LOCAL_DIR:
            path = Path(location)
            if (path / "config.json").exists():
                return True, str(path)
            # The reason reaches every user: it names no server path (staff see the folder on the card).
            return False, str(_("The folder configured for its weights has no model in it."))
        if self.weights_source == WeightsSource.HF_CACHE:
            snapshot = self._hf_snapshot()
            if snapshot is not None:
                return True, str(snapshot)
            return False, str(_("%(repo)s is not in the local Hugging Face cache.") % {"repo": location})
        # GGUF shipped by a package: "package:file.gguf"
        package, _sep, filename = location.partition(":")
        if (self.converted_dir / "config.json").exists():
            return True, str(self.converted_dir)
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                if (Path(folder) / filename).exists():
                    return True, str(Path(folder) / filename)
        return False, str(
            _("Package %(package)s with %(file)s is not installed.") % {"package": package, "file": filename}
        )

    def _hf_snapshot(self) -> Path | None:
        # Hugging Face's own variables, read as huggingface_hub reads them (not the console's configuration).
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
        repo_dir = hub.expanduser() / ("models--" + self.weights_location.strip().replace("/", "--"))
        return next((p.parent for p in sorted(repo_dir.glob("snapshots/*/config.json"))), None)

    @property
    def weights_present(self) -> bool:
        return self.weights_status()[0]

    def config_json(self) -> Path | None:
        """The weights' config.json when it is on this server (GGUF files have none until converted)."""
        if not self.weights_location.strip():
            return None
        path: Path | None
        if self.weights_source == WeightsSource.LOCAL_DIR:
            path = Path(self.weights_location.strip()) / "config.json"
        elif self.weights_source == WeightsSource.HF_CACHE:
            snapshot = self._hf_snapshot()
            path = snapshot / "config.json" if snapshot else None
        else:
            path = self.converted_dir / "config.json"
        return path if path is not None and path.exists() else None

    def capabilities(self):
        """What this server can do with the model, and why not where it cannot (see ``capabilities.py``)."""
        cached = getattr(self, "_capabilities", None)
        if cached is None:
            from .capabilities import capabilities_of

            cached = self._capabilities = capabilities_of(self)
        return cached

    def refresh_from_db(self, *args, **kwargs):
        self.__dict__.pop("_capabilities", None)
        return super().refresh_from_db(*args, **kwargs)


class FineTunedModelQuerySet(models.QuerySet):
    def live(self) -> FineTunedModelQuerySet:
        """Cards not deleted: these codes can be called."""
        return self.filter(deleted_at__isnull=True)

    def owned_by(self, user) -> FineTunedModelQuerySet:
        return self.filter(owner=user)

    def results(self) -> FineTunedModelQuerySet:
        """Tasks' results, without the checkpoint models listed on their cards."""
        return self.filter(checkpoint_of__isnull=True)


class FineTunedModel(models.Model):
    """The model card of a finished fine-tuning task: what was trained, how, and where its files are."""

    code = models.CharField(_("model code"), max_length=128, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fine_tuned_models")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="fine_tunes")
    method = models.CharField(_("method"), max_length=8, choices=Method.choices)
    training_type = models.CharField(_("training type"), max_length=8, choices=TrainingType.choices)
    hyperparameters = models.JSONField(_("hyperparameters"), default=dict)
    metrics = models.JSONField(_("final metrics"), default=dict)
    trained_tokens = models.BigIntegerField(_("trained tokens"), default=0)
    cost = models.DecimalField(_("cost"), max_digits=14, decimal_places=4, default=0)
    path = models.CharField(_("files"), max_length=500)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    deleted_at = models.DateTimeField(_("deleted"), null=True, blank=True)
    # A checkpoint model (code ``<result code>:ckpt-step-<N>``): the weights a task saved at an epoch's end,
    # callable, deployable and downloadable like its result, and listed on the result's card.
    checkpoint_of = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="checkpoints",
        verbose_name=_("checkpoint of"),
    )
    epoch = models.PositiveIntegerField(_("epoch"), null=True, blank=True)
    step = models.PositiveIntegerField(_("step"), null=True, blank=True)
    # On a result: the checkpoint whose weights it serves since the owner promoted it (None: the final weights).
    promoted_from = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("promoted from"),
    )
    final_path = models.CharField(
        _("final weights"),
        max_length=500,
        blank=True,
        help_text=_("The task's final weights while a checkpoint is promoted in their place."),
    )

    objects = FineTunedModelQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("fine-tuned model")
        verbose_name_plural = _("fine-tuned models")

    def __str__(self) -> str:
        return self.code

    @property
    def is_lora(self) -> bool:
        return self.training_type == TrainingType.LORA

    @property
    def is_checkpoint(self) -> bool:
        return self.checkpoint_of_id is not None

    @property
    def serving_name(self) -> str:
        """What model servers know its weights by: its code, with a tag of the weights' folder while a promoted
        checkpoint's replace the final ones (a new name: no instance answers with weights it loaded before)."""
        if self.final_path:
            return f"{self.code}@{hashlib.sha1(self.path.encode()).hexdigest()[:10]}"  # noqa: S324 - a name
        return self.code

    @property
    def result(self) -> FineTunedModel:
        """The task's result: this card, or the one this checkpoint belongs to."""
        return self.checkpoint_of or self

    @property
    def modality(self) -> str:
        return self.base_model.modality
