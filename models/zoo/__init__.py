"""Zoo families; importing this package registers every entry (done once, by `models/__init__.py`)."""

from edgepipe.models.zoo import blazeface, dlib_resnet, nanodet, sface, yunet  # noqa: F401
