"""Text and image encoders behind one small interface, chosen by name from config.

>>> from cim.encoders import build_text_encoder, build_image_encoder
>>> text = build_text_encoder(cfg.encoders.text)      # registry key: cfg.encoders.text.name
>>> text.encode(["a red square"]).shape                # (1, text.dim), float32, L2-normalised

Registered builders: text ``sentence-transformers``; image ``efficientnet-lite`` and ``open_clip``.
Importing this package loads no model library and downloads nothing.
"""
from cim.encoders.base import (ImageEncoder, ImageReadError, TextEncoder, WeightsNotFound, build_image_encoder,
                               build_text_encoder, image_encoder_names, l2_normalize, load_image,
                               register_image_encoder, register_text_encoder, resolve_device, text_encoder_names)
from cim.encoders import image as _image  # noqa: F401  (registers efficientnet-lite, open_clip)
from cim.encoders import text as _text  # noqa: F401  (registers sentence-transformers)

__all__ = ["TextEncoder", "ImageEncoder", "WeightsNotFound", "ImageReadError", "build_text_encoder",
           "build_image_encoder", "register_text_encoder", "register_image_encoder", "text_encoder_names",
           "image_encoder_names", "resolve_device", "l2_normalize", "load_image"]
