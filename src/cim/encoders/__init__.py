"""Text and image encoders behind one small interface, chosen by name from config.

>>> from cim.encoders import build_text_encoder, build_image_encoder
>>> text = build_text_encoder(cfg.encoders.text)      # registry key: cfg.encoders.text.name
>>> text.encode(["a red square"]).shape                # (1, text.dim), float32, L2-normalised

Registered builders (``TEXT_ENCODERS`` / ``IMAGE_ENCODERS``, :class:`cim.registry.Registry`): text
``sentence-transformers`` (:mod:`cim.encoders.text`); image ``efficientnet-lite`` and ``open_clip``
(:mod:`cim.encoders.image`); the modules are imported when a name is first looked up. Importing this
package loads no model library and downloads nothing.
"""
from cim.encoders.base import (IMAGE_ENCODERS, TEXT_ENCODERS, ImageEncoder, ImageReadError, TextEncoder,
                               WeightsNotFound, build_image_encoder, build_text_encoder, l2_normalize, load_image,
                               resolve_device)

__all__ = ["TEXT_ENCODERS", "IMAGE_ENCODERS", "TextEncoder", "ImageEncoder", "WeightsNotFound", "ImageReadError",
           "build_text_encoder", "build_image_encoder", "resolve_device", "l2_normalize", "load_image"]
