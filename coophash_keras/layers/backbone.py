"""A pretrained image model as the shared base f0: a keras.applications model or a keras-hub image
backbone, behind the same interface as ConvBaseNetwork (normalised images in [-1, 1] -> a feature
vector of `feature_dim`), so every registered model can use one (layers/bases.py chooses).

Inside the layer, in this order: images back to pixels in [0, 255]; grey images repeated to 3
channels (ImageNet weights expect RGB); the backbone's own preprocessing (keras.applications: its
module's `preprocess_input`, e.g. caffe-style BGR mean subtraction for ResNet50, a no-op for the
models that preprocess inside, MobileNetV3 and EfficientNet; keras-hub: the preset's image
converter's scale and offset); the backbone, always in inference mode; a global average of its
feature map (or of its tokens); a Dense to `feature_dim` with leaky ReLU; dropout. So a SavedModel
still takes raw uint8 pixels, normalised exactly as for the conv base.

BatchNorm inside the backbone always runs on its moving statistics (Keras' fine-tuning advice),
also while it is fine-tuned: batch statistics would let CoopHash's energy and DSH-GAN's adversary
tell a synthetic batch from a real one by its statistics alone, and the synthetic images would
shift the ImageNet statistics.

Serialisation: `get_config` holds the backbone's architecture (its serialised Keras config), never
its weights or where they came from, so `from_config` (export, `load_model`) rebuilds it without a
download and the weights come from the .keras file. `weights` is read only when a model is built
to train ('imagenet', a weights file path, or None).
"""

import importlib
import warnings

import keras
from keras import layers, ops


def _keras_application(name, image_shape, weights):
    """keras.applications `name` without its top at (H, W, 3), with `weights` ('imagenet', a file, None)."""
    builder = getattr(keras.applications, name, None)
    if builder is None:
        raise ValueError(f"keras.applications has no model {name!r}")
    if weights not in (None, "imagenet") and name.startswith("EfficientNetB"):
        warnings.warn(
            f"keras.applications builds {name} with a weights file without the input rescaling it adds for "
            "weights='imagenet' (tensorflow/tensorflow#49930): for the ImageNet file, copy it into "
            "~/.keras/models/ under its own name and pass --backbone-weights imagenet instead",
            stacklevel=3,
        )
    try:
        return builder(include_top=False, weights=weights, input_shape=(*image_shape[:2], 3))
    except Exception as exc:
        if weights in (None, "imagenet"):
            raise
        raise ValueError(
            f"could not load {name} weights from {weights}: {exc} (use the model's *_notop.h5 file, the one "
            "keras.applications downloads with include_top=False)"
        ) from None


def _hub_backbone(preset, weights):
    """(backbone, pixel scale, pixel offset) of a keras-hub preset (name or local folder)."""
    try:
        import keras_hub
    except ImportError:
        raise ValueError("backbone 'hub:...' needs keras-hub: pip install keras-hub") from None
    backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=weights == "imagenet")
    if weights not in (None, "imagenet"):
        backbone.load_weights(weights)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
        scale, offset = converter.scale, converter.offset
    except (ValueError, FileNotFoundError):
        warnings.warn(f"keras-hub preset {preset} has no image converter: the backbone gets pixels / 255", stacklevel=3)
        scale, offset = None, None
    return backbone, _listed(1.0 / 255.0 if scale is None else scale), _listed(0.0 if offset is None else offset)


def _listed(value):
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


@keras.saving.register_keras_serializable(package="coophash")
class BackboneBaseNetwork(layers.Layer):
    """f0(x) through a pretrained backbone (see the module docstring).

    backbone: a keras.applications name (config.KERAS_APPLICATIONS) or 'hub:PRESET'.
    weights: 'imagenet', a weights file path or None; ignored when `backbone_config` is given.
    backbone_config: the backbone's serialised architecture (from `get_config`; rebuilds it as saved)."""

    def __init__(
        self,
        image_shape,
        backbone,
        feature_dim=256,
        dropout=0.0,
        weights=None,
        backbone_config=None,
        pixel_scale=None,
        pixel_offset=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        if self.image_shape[-1] not in (1, 3):
            raise ValueError(f"a backbone takes 1 or 3 channels, got image_shape {self.image_shape}")
        self.backbone_name = str(backbone)
        self.feature_dim = int(feature_dim)
        self.dropout_rate = float(dropout)
        weights = None if weights in (None, "none") else weights
        self.is_hub = self.backbone_name.startswith("hub:")
        if backbone_config is not None:
            if self.is_hub:
                import keras_hub  # noqa: F401  (registers the keras-hub classes the config names)
            self.backbone = keras.saving.deserialize_keras_object(backbone_config)
        elif self.is_hub:
            self.backbone, pixel_scale, pixel_offset = _hub_backbone(self.backbone_name[4:], weights)
        else:
            self.backbone = _keras_application(self.backbone_name, self.image_shape, weights)
        self.pixel_scale, self.pixel_offset = pixel_scale, pixel_offset
        self._check_input_size()
        self.features = layers.Dense(self.feature_dim, name="features")
        self.dropout = layers.Dropout(self.dropout_rate) if self.dropout_rate else None

    def _check_input_size(self):
        expected = tuple(self.backbone.input_shape[1:3])
        if all(e is not None for e in expected) and expected != self.image_shape[:2]:
            raise ValueError(
                f"backbone {self.backbone_name} takes {expected[0]}x{expected[1]} images, the model "
                f"{self.image_shape[0]}x{self.image_shape[1]}: pass --image-size {expected[0]},{expected[1]}"
            )

    @property
    def backbone_variables(self):
        """The pretrained part's trainable variables (what the freeze / fine-tune schedule scales)."""
        return list(self.backbone.trainable_variables)

    @property
    def backbone_dim(self):
        return int(self.backbone.output_shape[-1])

    def build(self, input_shape=None):
        self.features.build((None, self.backbone_dim))
        self.built = True

    def preprocess(self, x):
        """Normalised images [-1, 1] -> what the backbone expects (3-channel, its own scaling)."""
        pixels = (ops.cast(x, "float32") + 1.0) * 127.5
        if self.image_shape[-1] == 1:
            pixels = ops.repeat(pixels, 3, axis=-1)
        if self.is_hub:
            return pixels * ops.convert_to_tensor(self.pixel_scale) + ops.convert_to_tensor(self.pixel_offset)
        module = importlib.import_module(getattr(keras.applications, self.backbone_name).__module__)
        return module.preprocess_input(pixels)

    @property
    def map_dim(self):
        return self.backbone_dim

    def feature_map(self, x):
        """The backbone's pooled output: f0 before its dense feature layer."""
        h = self.backbone(self.preprocess(x), training=False)
        return ops.mean(h, axis=tuple(range(1, len(h.shape) - 1)))  # feature map or tokens -> [B, C]

    def call(self, x, training=False):
        h = ops.leaky_relu(self.features(self.feature_map(x)), 0.2)
        if self.dropout is not None:
            h = self.dropout(h, training=training)
        return h

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            backbone=self.backbone_name,
            feature_dim=self.feature_dim,
            dropout=self.dropout_rate,
            backbone_config=keras.saving.serialize_keras_object(self.backbone),
            pixel_scale=self.pixel_scale,
            pixel_offset=self.pixel_offset,
        )
        return config
