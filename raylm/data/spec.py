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
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

from raylm.data.record import DataError, FaceSet
from raylm.fs import is_uri

Opener = Callable[..., FaceSet]
_READERS: dict[str, tuple[Opener, str]] = {}
_PATHS: set[str] = set()  # schemes whose location is one or more `:`-separated paths or URIs


def register_reader(scheme: str, usage: str, paths: bool = True) -> Callable[[Opener], Opener]:
    """Register `opener(location, **options) -> FaceSet` for specs `scheme:location?options`.

    With `paths`, the location is file paths or URIs (`:`-separated when several), which
    `absolute_spec` can anchor to a folder.
    """

    def decorate(opener: Opener) -> Opener:
        _READERS[scheme] = (opener, usage)
        if paths:
            _PATHS.add(scheme)
        return opener

    return decorate


def absolute_spec(spec: str, base: Path) -> str:
    """`spec` with its relative local paths made absolute under `base`; URIs, `~` paths and other specs unchanged.

    Trials run in their own folders (and on other machines), so a study anchors a
    relative path such as `pts:../data/300W` to where it was started.
    """
    _register_builtin_readers()
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in _PATHS:
        return spec
    location, mark, query = rest.partition("?")
    parts = re.split(r":(?!//)", location)
    anchored = [part if is_uri(part) or part.startswith("~") or not part else str(base / part) for part in parts]
    return f"{scheme}:{':'.join(anchored)}{mark}{query}"


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
