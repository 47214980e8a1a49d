"""The focal-length policy of every entry point: predict, stream, point clouds, Ray, the command line
and the Triton client take a camera's fx / fy by the same rules, written once here.

fy defaults to fx; fy without fx is refused; with neither, the image's EXIF 35 mm equivalent where the
caller can read one. The result says where the values came from, for the lines a command prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .errors import InputError
from .processing import check_focal

EXIF_SOURCE = "EXIF 35 mm equivalent"


class FocalLengths(NamedTuple):
    """A camera's focal lengths in pixels and where they came from (the names they were given as, e.g.
    "--fx/--fy", or EXIF_SOURCE)."""

    fx: float
    fy: float
    source: str


def resolve_focal_lengths(
    fx: object,
    fy: object = None,
    *,
    names: tuple[str, str] = ("fx", "fy"),
    exif: Callable[[], float | None] | None = None,
    image: object = "the image",
    optional: bool = False,
    check: bool = True,
) -> FocalLengths | None:
    """fx / fy (None: not given) by the policy of the module doc.

    names: what messages and `source` call fx and fy (e.g. "--fx", "fx[2]").
    exif: where the caller has an image file, a function giving its EXIF focal length in pixels (None
        when it has none), used when neither fx nor fy is given; `image` names the file in the error.
    optional: with neither given (and no exif), None instead of the InputError of a missing fx.
    check: False returns given values unchecked (a client whose server checks them and answers why).
    """
    fx_name, fy_name = names
    if fx is None:
        if fy is not None:
            raise InputError(
                f"{fy_name} was given without {fx_name}: pass {fx_name} too ({fy_name} defaults to {fx_name})"
            )
        if exif is not None:
            focal = exif()
            if focal is None:
                raise InputError(
                    f"{image} has no EXIF focal length: pass {fx_name} (and {fy_name}) in pixels"
                )
            return FocalLengths(focal, focal, EXIF_SOURCE)
        if optional:
            return None
    if check or fx is None:  # None: the error of a missing fx
        fx = check_focal(fx_name, fx)
    if check and fy is not None:
        fy = check_focal(fy_name, fy)
    return FocalLengths(fx, fx if fy is None else fy, f"{fx_name}/{fy_name}")
