"""One syntax names a dataset everywhere: study files, `--data` options, `check`.

    facesynthetics:PATH                 Microsoft FaceSynthetics folder
    pts:PATH                            iBUG/300W .pts files beside images, recursive
    ffhq:JSON_PATH[:IMAGE_DIR]          FFHQ metadata JSON and whichever image set you have
    builtin:synthetic | builtin:realistic   the built-in generator, no download

Any spec takes options after `?`, e.g. `builtin:synthetic?n=500&seed=3` or
`facesynthetics:/data/fs?pupils=true`. Readers register themselves with
`@register_reader(scheme)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from urllib.parse import parse_qsl

from raylm.data.record import DataError, FaceSet

Opener = Callable[..., FaceSet]
_READERS: dict[str, tuple[Opener, str]] = {}


def register_reader(scheme: str, usage: str) -> Callable[[Opener], Opener]:
    """Register `opener(location, **options) -> FaceSet` for specs `scheme:location?options`."""

    def decorate(opener: Opener) -> Opener:
        _READERS[scheme] = (opener, usage)
        return opener

    return decorate


def known_forms() -> str:
    """The spec forms of every registered reader, one per line."""
    _register_builtin_readers()
    return "\n".join(f"  {usage}" for _, usage in sorted(_READERS.values(), key=lambda r: r[1]))


def open_dataset(spec: str) -> FaceSet:
    """Open the dataset named by `spec`; a malformed spec raises DataError listing the forms."""
    _register_builtin_readers()
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in _READERS or not rest:
        raise DataError(f"unknown dataset spec {spec!r}; the known forms are:\n{known_forms()}")
    location, _, query = rest.partition("?")
    opener, usage = _READERS[scheme]
    options = dict(parse_qsl(query, keep_blank_values=True))
    return opener(location, **_convert_options(opener, options, spec, usage))


def _convert_options(opener: Opener, options: dict[str, str], spec: str, usage: str) -> dict:
    """Turn `?key=value` strings into the types the opener's signature declares."""
    parameters = inspect.signature(opener).parameters
    allowed = list(parameters)[1:]  # the first parameter takes the location
    converted = {}
    for key, text in options.items():
        if key not in allowed:
            raise DataError(
                f"dataset spec {spec!r}: unknown option {key!r}; "
                f"{usage.split()[0]} takes {', '.join(allowed) or 'no options'}"
            )
        kind = type(parameters[key].default)
        try:
            converted[key] = _parse_bool(text) if kind is bool else kind(text)
        except ValueError:
            raise DataError(f"dataset spec {spec!r}: option {key}={text!r} is not a {kind.__name__}") from None
    return converted


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", ""):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(text)


def _register_builtin_readers() -> None:
    # Imported here, not at module top, so the readers can import this module's decorator.
    from raylm.data import builtin, facesynthetics, ffhq, pts  # noqa: F401
